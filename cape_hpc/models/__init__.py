"""Model loading (HF id, local dir, GGUF, embedded aliases, tiny random models), architecture adapters
and left-padded batching.  Imported lazily: ``cape_hpc.models.options`` needs no torch."""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "ARCHITECTURES": "adapters", "SUPPORTED_ARCHITECTURES": "adapters", "Adapter": "adapters", "get_spec": "adapters",
    "EMBEDDED": "loading", "LoadedModel": "loading", "cache_dir": "loading", "load_model": "loading",
    "TINY_ARCHS": "tiny", "build_tiny": "tiny", "byte_tokenizer": "tiny",
    "ModelOptions": "options", "PlacementOptions": "options", "DTYPES": "options",
    "StopForward": "batching", "tokenize": "batching", "left_pad": "batching", "forward_kwargs": "batching",
    "pad_id": "batching", "plan_batches": "batching",
    "Trace": "tracing", "Batch": "tracing", "make_batch": "tracing", "point_names": "tracing",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
