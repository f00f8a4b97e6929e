"""Cross-model internals analysis (docs/METHODS.md §3.10): the table of per-model internals from merged
sweep files and ``cape internals`` outputs, per-family ladders of internal coupling against log10 N
(internal gamma, N_c by the three estimators, the fixed point, the slope) with a two-level bootstrap
over prompt blocks and models, the competing-head count across models, internal vs benchmark phase,
generation comparisons, and the internal claims of the audit.  Torch-free."""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "CrossModelResult": "results", "ModelRow": "results", "FamilyLadder": "results",
    "CrossModelOptions": "options",
    "read_inputs": "table", "ModelInput": "table",
    "cross_model_analysis": "families", "from_files": "families",
    "evaluate_internal_claim": "claims", "InternalClaimValue": "claims", "NotComputable": "claims",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
