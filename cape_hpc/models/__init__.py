"""Model loading (HF id, local dir, GGUF, embedded aliases, tiny random models) and architecture adapters."""
from cape_hpc.models.adapters import ARCHITECTURES, SUPPORTED_ARCHITECTURES, Adapter, get_spec
from cape_hpc.models.loading import EMBEDDED, LoadedModel, cache_dir, load_model
from cape_hpc.models.tiny import TINY_ARCHS, build_tiny, byte_tokenizer

__all__ = ["ARCHITECTURES", "SUPPORTED_ARCHITECTURES", "Adapter", "get_spec", "EMBEDDED", "LoadedModel",
           "cache_dir", "load_model", "TINY_ARCHS", "build_tiny", "byte_tokenizer"]
