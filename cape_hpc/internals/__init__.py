"""Streaming extraction of model internals (docs/METHODS.md §3): per-layer / per-head couplings, the
projection bottleneck, d_rep.  Imported lazily: ``cape_hpc.internals.results`` and ``.options`` need
no torch."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TAPS": "results", "InternalsResult": "results", "LayerRow": "results", "HeadRow": "results",
    "HeadSummary": "results", "Bottleneck": "results", "PcaRow": "results", "store_name": "results",
    "ExtractOptions": "options",
    "extract_internals": "extract", "extract_internals_pooled": "extract", "PooledStates": "extract",
    "Prompt": "prompts", "PromptSet": "prompts", "from_texts": "prompts", "load_prompts": "prompts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'cape_hpc.internals' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cape_hpc.internals.{mod}"), name)
    globals()[name] = value
    return value
