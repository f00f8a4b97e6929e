"""Reference implementations of the streaming ops (see ``cape_kernels.streaming`` for the
definitions): the ``torch`` backend (any device, tiled, no host synchronisation) and float64 numpy
oracles (``np_*``: plain loops over rows and pairs, obviously right, for the tests).
"""
from __future__ import annotations

import numpy as np
import torch

from cape_kernels.reference import pooled_tap, unit_rows

TILE = 256  # rows of A and of B per tile of cosines: at most TILE x TILE exist at once


# ------------------------------------------------------------------ torch backend
def pool_accumulate_(hidden, mask, mode, slot, sums, unit_sums):
    pooled = pooled_tap(hidden, mask, mode)  # [B, D] in acc dtype; "last" gathers B*D only
    if pooled.shape[0] == 0:
        return pooled
    G = sums.shape[0]
    valid = ((slot >= 0) & (slot < G))[:, None]
    idx = torch.where(valid[:, 0], slot, torch.zeros_like(slot))
    p = pooled.to(sums.dtype)
    zero = p.new_zeros(())
    sums.index_add_(0, idx, torch.where(valid, p, zero))  # where, not *: a NaN row with slot -1 adds 0
    if unit_sums is not None:
        unit_sums.index_add_(0, idx, torch.where(valid, unit_rows(p), zero))
    return pooled


def _compute_dtype(A, B):
    return torch.float64 if torch.float64 in (A.dtype, B.dtype) else torch.float32


def count_pairs_below(A, B, threshold, a_groups, b_groups, n_groups, tile: int = TILE):
    G = n_groups
    dev = A.device
    out = torch.zeros(G * G + 1, dtype=torch.int64, device=dev)  # the last cell takes invalid groups
    n, m = A.shape[0], B.shape[0]
    if n == 0 or m == 0:
        return out[: G * G].view(G, G).clone()
    cdt = _compute_dtype(A, B)
    grouped = a_groups is not None or b_groups is not None
    if grouped:
        ga = a_groups if a_groups is not None else torch.zeros(n, dtype=torch.int64, device=dev)
        gb = b_groups if b_groups is not None else torch.zeros(m, dtype=torch.int64, device=dev)
        ka = torch.where((ga >= 0) & (ga < G), ga * G, torch.full_like(ga, -1))
        kb = torch.where((gb >= 0) & (gb < G), gb, torch.full_like(gb, -1))
    for i0 in range(0, n, tile):
        An = unit_rows(A[i0:i0 + tile].to(cdt))
        for j0 in range(0, m, tile):
            Bn = unit_rows(B[j0:j0 + tile].to(cdt))
            below = (An @ Bn.T).clamp(-1.0, 1.0) < threshold  # NaN < t is False
            if grouped:
                a, b = ka[i0:i0 + tile, None], kb[None, j0:j0 + tile]
                key = torch.where((a >= 0) & (b >= 0), a + b, torch.full_like(a + b, G * G))
                out.scatter_add_(0, key.reshape(-1), below.reshape(-1).to(torch.int64))
            else:
                out[0] += below.sum()
    return out[: G * G].view(G, G).clone()


# ------------------------------------------------------------------ float64 numpy oracles
def np_pool(h: np.ndarray, mask, mode: str) -> np.ndarray:
    """pooled [B, D] float64, row by row (mask None: every position is a token)."""
    B, S, D = h.shape
    m = np.ones((B, S), bool) if mask is None else np.asarray(mask) != 0
    out = np.zeros((B, D))
    for b in range(B):
        idx = np.nonzero(m[b])[0]
        if len(idx):
            out[b] = h[b, idx[-1]] if mode == "last" else h[b, idx].astype(np.float64).mean(axis=0)
    return out


def np_pool_accumulate(h, mask, mode, slot, sums, unit_sums=None):
    """(pooled, sums + adds, unit_sums + adds) in float64; the inputs are not changed."""
    pooled = np_pool(np.asarray(h, np.float64), mask, mode)
    s = np.array(sums, np.float64, copy=True)
    u = None if unit_sums is None else np.array(unit_sums, np.float64, copy=True)
    for b in range(pooled.shape[0]):
        g = int(slot[b])
        if not 0 <= g < s.shape[0]:
            continue
        s[g] += pooled[b]
        if u is not None:
            nrm = np.sqrt(np.sum(pooled[b] ** 2))
            u[g] += pooled[b] / nrm if nrm > 0 else (pooled[b] * np.nan if np.isnan(nrm) else 0.0)
    return pooled, s, u


def np_cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """[n, m] float64 cosines (0 for a zero row, NaN for a row with a NaN)."""
    def unit(X):
        X = np.asarray(X, np.float64)
        nrm = np.sqrt(np.sum(X * X, axis=1, keepdims=True))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(nrm > 0, X / np.where(nrm > 0, nrm, 1.0), np.where(np.isnan(nrm), np.nan, 0.0))
    return np.clip(unit(A) @ unit(B).T, -1.0, 1.0)


def np_count_pairs_below(A, B, threshold, a_groups=None, b_groups=None, n_groups=1, cos=None):
    """counts [G, G] int64 by a loop over the pairs of a float64 cosine matrix."""
    C = np_cosines(A, B) if cos is None else cos
    n, m = C.shape
    ga = np.zeros(n, np.int64) if a_groups is None else np.asarray(a_groups)
    gb = np.zeros(m, np.int64) if b_groups is None else np.asarray(b_groups)
    out = np.zeros((n_groups, n_groups), np.int64)
    for i in range(n):
        for j in range(m):
            if 0 <= ga[i] < n_groups and 0 <= gb[j] < n_groups and C[i, j] < threshold:
                out[ga[i], gb[j]] += 1
    return out
