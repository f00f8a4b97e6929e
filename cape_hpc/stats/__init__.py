"""cape_hpc.stats: confidence intervals (Wilson, percentile, BCa) and the bootstrap engine
(plain or stratified, on cape_kernels' counter-based resampling); docs/METHODS.md §2.4."""
from cape_hpc.stats.bootstrap import (  # noqa: F401
    BatchStatistic,
    BootstrapResult,
    GammaNcStatistic,
    ParticipationRatioStatistic,
    QuadraticNcStatistic,
    bootstrap,
    min_valid,
    summarize,
)
from cape_hpc.stats.intervals import (  # noqa: F401
    bca_interval,
    bca_parameters,
    percentile_interval,
    wilson_interval,
)
from cape_hpc.stats.options import BootstrapOptions  # noqa: F401

__all__ = ["BatchStatistic", "BootstrapResult", "GammaNcStatistic", "ParticipationRatioStatistic",
           "QuadraticNcStatistic", "bootstrap", "min_valid", "summarize", "bca_interval", "bca_parameters",
           "percentile_interval", "wilson_interval", "BootstrapOptions"]
