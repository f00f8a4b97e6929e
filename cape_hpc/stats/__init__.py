"""cape_hpc.stats: the bootstrap engine (percentile, BCa, stratified) on cape_kernels' resampling."""
from cape_hpc.stats.bootstrap import (  # noqa: F401
    BatchStatistic,
    BootstrapResult,
    ParticipationRatioStatistic,
    QuadraticNcStatistic,
    bootstrap,
)
