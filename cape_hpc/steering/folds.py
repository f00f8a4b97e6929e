"""Seeded k-fold assignment of items (docs/METHODS.md §4.4), stratified by domain.  Torch-free."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cape_hpc.errors import OptionError

__all__ = ["assign_folds", "train_mask"]


def assign_folds(domains: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold of each item, [n] int64 in 0..k-1: within each domain (sorted by name) the items are put
    in a seeded random order and dealt to the folds in turn, continuing where the previous domain
    stopped, so fold sizes differ by at most one and every domain is spread over the folds."""
    n = len(domains)
    if k < 2:
        raise OptionError(f"--folds {k}: needs at least 2 folds")
    if n < k:
        raise OptionError(f"--folds {k}: only {n} items (each fold needs at least one item)")
    rng = np.random.default_rng(seed)
    folds = np.full(n, -1, dtype=np.int64)
    start = 0
    for d in sorted(set(domains)):
        ix = np.array([i for i, x in enumerate(domains) if x == d], dtype=np.int64)
        ix = ix[rng.permutation(len(ix))]
        folds[ix] = (start + np.arange(len(ix))) % k
        start = (start + len(ix)) % k
    return folds


def train_mask(folds: np.ndarray, f: int) -> np.ndarray:
    """Items the direction of fold ``f`` is calibrated on (every fold but f)."""
    return np.asarray(folds) != f
