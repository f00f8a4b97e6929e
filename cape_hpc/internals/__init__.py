"""Streaming extraction of model internals (docs/METHODS.md §3): per-layer / per-head couplings, the
projection bottleneck, d_rep.  Imported lazily: ``cape_hpc.internals.results`` and ``.options`` need
no torch."""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "TAPS": "results", "InternalsResult": "results", "LayerRow": "results", "HeadRow": "results",
    "HeadSummary": "results", "Bottleneck": "results", "PcaRow": "results", "store_name": "results",
    "ExtractOptions": "options",
    "extract_internals": "extract", "extract_internals_pooled": "extract", "PooledStates": "extract",
    "Prompt": "prompts", "PromptSet": "prompts", "load_prompts": "prompts",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
