"""Bootstrap options shared by every method that reports a bootstrap interval."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.options import Options, option

CI_METHODS = ("percentile", "bca")
DEFAULT_LEVELS = (0.95, 0.68)


@dataclass(frozen=True)
class BootstrapOptions(Options):
    """How models (or prompt blocks) are resampled and how the interval is formed (METHODS.md §2.4)."""

    n_resamples: int = option(10000, help="bootstrap resamples", minimum=1, aliases=("-n",))
    seed: int = option(0, help="seed of the counter-based resampling streams", minimum=0, maximum=2 ** 64 - 1)
    stratify: bool = option(True, help="resample within each family (stratified) rather than across all models")
    ci_method: str = option("percentile", help="interval method", choices=CI_METHODS)
    levels: tuple[float, ...] = option(DEFAULT_LEVELS, help="confidence levels of the reported intervals",
                                       minimum=0.0, exclusive_minimum=True, maximum=0.999999)
