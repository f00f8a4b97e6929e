"""cape_hpc.stats: generic statistics, as scipy's resampling module -- confidence intervals (Wilson,
percentile, BCa), the bootstrap engine (plain or stratified, on cape_kernels' counter-based
resampling) with its summary and interval notes, and permutation p-values; docs/METHODS.md §2.4."""
from cape_hpc.stats.bootstrap import BootstrapResult, bootstrap  # noqa: F401
from cape_hpc.stats.intervals import (  # noqa: F401
    bca_interval,
    bca_parameters,
    percentile_interval,
    wilson_interval,
)
from cape_hpc.stats.options import BootstrapOptions  # noqa: F401
from cape_hpc.stats.permutation import all_permutations, permutation_pvalue  # noqa: F401
from cape_hpc.stats.statistics import BatchStatistic, ParticipationRatioStatistic  # noqa: F401
from cape_hpc.stats.summary import min_valid, note_extrapolation, summarize  # noqa: F401

__all__ = ["BatchStatistic", "BootstrapResult", "ParticipationRatioStatistic", "bootstrap", "min_valid",
           "summarize", "note_extrapolation", "bca_interval", "bca_parameters", "percentile_interval",
           "wilson_interval", "BootstrapOptions", "permutation_pvalue", "all_permutations"]
