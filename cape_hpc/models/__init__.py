"""Model loading (HF id, local dir, GGUF, embedded aliases, tiny random models), architecture adapters
and left-padded batching.  Imported lazily: ``cape_hpc.models.options`` needs no torch."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ARCHITECTURES": "adapters", "SUPPORTED_ARCHITECTURES": "adapters", "Adapter": "adapters", "get_spec": "adapters",
    "EMBEDDED": "loading", "LoadedModel": "loading", "cache_dir": "loading", "load_model": "loading",
    "TINY_ARCHS": "tiny", "build_tiny": "tiny", "byte_tokenizer": "tiny",
    "ModelOptions": "options", "DTYPES": "options",
    "StopForward": "batching", "tokenize": "batching", "left_pad": "batching", "forward_kwargs": "batching",
    "pad_id": "batching",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'cape_hpc.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cape_hpc.models.{mod}"), name)
    globals()[name] = value
    return value
