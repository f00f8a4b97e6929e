"""cape_kernels: coupling, steering and resampling kernels with one API and several backends.

Imported lazily: ``import cape_kernels`` is cheap, and each name loads its module on first use.
Backends: ``torch`` (plain torch, any device), ``numba`` (CPU), ``triton`` and ``cupy`` (CUDA).
This package imports nothing from ``cape_hpc``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # resampling (numba, CPU)
    "resample_indices": "cape_kernels.resample",
    "participation_ratio_batch": "cape_kernels.resample",
    "quadratic_nc_batch": "cape_kernels.resample",
    "participation_ratio_boot": "cape_kernels.resample",
    "quadratic_nc_boot": "cape_kernels.resample",
    "participation_ratio": "cape_kernels.resample",
    "quadratic_fit": "cape_kernels.resample",
    "gamma_rule": "cape_kernels.resample",
    "gamma_nc_batch": "cape_kernels.resample",
    "gamma_nc_boot": "cape_kernels.resample",
    "nc_intervals": "cape_kernels.resample",
    "gamma_line": "cape_kernels.resample",
    # coupling and steering ops
    "pooled_tap": "cape_kernels.ops",
    "set_mean_cosine": "cape_kernels.ops",
    "pairwise_cosine_stats": "cape_kernels.ops",
    "PairwiseStats": "cape_kernels.ops",
    "steer_inject_": "cape_kernels.ops",
    # streaming accumulators (forward hooks)
    "pool_accumulate_": "cape_kernels.streaming",
    "count_pairs_below": "cape_kernels.streaming",
    "available_backends": "cape_kernels.backends",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'cape_kernels' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
