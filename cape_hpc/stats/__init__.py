"""cape_hpc.stats: generic statistics, as scipy's resampling module -- confidence intervals (Wilson,
percentile, BCa), the bootstrap engine (plain or stratified, on cape_kernels' counter-based
resampling) with its summary and interval notes, and permutation p-values; docs/METHODS.md §2.4.
Imported lazily: ``cape_hpc.stats.options`` (``BootstrapOptions``) needs no scipy and no numba."""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "BootstrapResult": "bootstrap", "bootstrap": "bootstrap",
    "bca_interval": "intervals", "bca_parameters": "intervals", "percentile_interval": "intervals",
    "percentile_intervals": "intervals", "wilson_interval": "intervals",
    "BootstrapOptions": "options",
    "all_permutations": "permutation", "permutation_pvalue": "permutation",
    "BatchStatistic": "statistics", "ParticipationRatioStatistic": "statistics",
    "min_valid": "summary", "note_extrapolation": "summary", "summarize": "summary",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
