"""Prompt blocks and the block bootstrap over them (docs/METHODS.md §3.8).

Every prompt belongs to one of ``n_blocks`` blocks: ``int(sha256(f"{seed}:{id}")) mod n_blocks``
(:func:`assign_blocks`), so a prompt's block depends on its id only -- not on its position, the
batch size or the other prompts -- and the same prompt lands in the same block in every model of a
sweep.  The extraction keeps, per (set, block), the sums every statistic is made of
(:class:`cape_hpc.internals.results.BlockStats`).

A bootstrap resample draws ``n_blocks`` blocks with replacement (resample r = stream r of
``cape_kernels.resample_indices``, the counter-based streams of §2.4); block b drawn w_b times
enters every sum with weight w_b.  Each statistic is then recomputed from the weighted sums:

- layer / head / final coupling: cos(sum_b w_b S_R[b], sum_b w_b S_T[b]);
- pairwise mean: (sum_b w_b U_R[b]) . (sum_b w_b U_T[b]) / (P* Q*), P* = sum_b w_b n_R[b];
- fraction below: sum_{g,h} w_g w_h below[g, h] / ((sum_g w_g c_R[g]) (sum_h w_h c_T[h])).

The dot products of the weighted sums are quadratic forms of each statistic's [G, G] Gram matrices,
(sum_g w_g S_R[g]) . (sum_h w_h S_T[h]) = w^T (S_R S_T^T) w: the Grams are formed once and each
resample costs G^2 instead of G D (used when G <= D and the Grams fit ``GRAM_BYTES``; else the
weighted sums themselves, chunk by chunk).

This is exactly the statistic of the stacked per-prompt vectors of the drawn blocks (a block drawn
twice contributes its prompts twice, and pairs across its two copies), which the tests check.  A
resample without prompts of both sets is invalid (NaN, not counted in ``n_valid``).  Intervals are
``cape_hpc.stats.percentile_interval`` of the valid values.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cape_hpc.schema import ConfidenceInterval
from cape_hpc.stats.intervals import percentile_intervals

__all__ = ["assign_blocks", "block_weights", "BlockBootstrap", "weighted_cosine", "CHUNK", "GRAM_BYTES"]

CHUNK = 128   # resamples per evaluation (bounds the [chunk, ..., D] weighted sums)
GRAM_BYTES = 64 << 20   # the most bytes the [K, G, G] Gram matrices of one call may take


def assign_blocks(ids: Sequence[str], n_blocks: int, seed: int = 0) -> np.ndarray:
    """int64[N]: block of each prompt id, sha256(f"{seed}:{id}") mod n_blocks."""
    G = int(n_blocks)
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest(), "big") % G for i in ids],
                    dtype=np.int64)


def block_weights(n_blocks: int, count: int, seed: int, start: int = 0) -> np.ndarray:
    """float64[count, n_blocks]: how often each block is drawn in resamples start .. start+count-1."""
    from cape_kernels.resample import resample_indices

    idx = resample_indices(None, count, seed, n=n_blocks, start=start)
    W = np.zeros((count, n_blocks), dtype=np.float64)
    np.add.at(W, (np.repeat(np.arange(count), n_blocks), idx.ravel()), 1.0)
    return W


def _weigh(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_g W[c, g] x[k, g, d] -> [c, k, d], through one BLAS product (einsum would loop)."""
    K, G, D = x.shape
    return (W @ x.transpose(1, 0, 2).reshape(G, K * D)).reshape(W.shape[0], K, D)


def weighted_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos of the last axis, 0 where a norm is 0 (as the kernels), clamped to [-1, 1]."""
    return _cosine(np.einsum("...d,...d->...", a, b), np.einsum("...d,...d->...", a, a),
                   np.einsum("...d,...d->...", b, b))


def _cosine(dot: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """dot / sqrt(aa bb) from a dot product and two squared norms (a squared norm that rounding made
    negative counts as 0), 0 where a norm is 0, clamped to [-1, 1]."""
    den = np.sqrt(np.maximum(aa, 0.0) * np.maximum(bb, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(den > 0, dot / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(c, -1.0, 1.0)


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[K, G, D] x [K, G, D] -> [K, G, G]: a_k b_k^T."""
    return np.matmul(a, b.transpose(0, 2, 1))


def _quadratic(W: np.ndarray, M: np.ndarray) -> np.ndarray:
    """W [c, G], M [K, G, G] -> [c, K]: w_c^T M_k w_c (one BLAS product, as ``_weigh``)."""
    K, G, _ = M.shape
    WM = (W @ M.transpose(1, 0, 2).reshape(G, K * G)).reshape(W.shape[0], K, G)
    return np.einsum("ckh,ch->ck", WM, W)


@dataclass
class BlockBootstrap:
    """Resample weights for ``n_resamples`` resamples of ``n_blocks`` blocks (chunked), and the
    validity of each resample (both sets present).  ``counts`` [2, G] prompts per set and block."""

    counts: np.ndarray
    n_resamples: int
    seed: int
    level: float = 0.95

    @property
    def n_blocks(self) -> int:
        return int(self.counts.shape[1])

    def chunks(self):
        """Yields (W [c, G], P* [c], Q* [c], valid [c]) per chunk of resamples."""
        G = self.n_blocks
        for r0 in range(0, self.n_resamples, CHUNK):
            c = min(CHUNK, self.n_resamples - r0)
            W = block_weights(G, c, self.seed, r0)
            P, Q = W @ self.counts[0], W @ self.counts[1]
            yield W, P, Q, (P > 0) & (Q > 0)

    def intervals(self, samples: np.ndarray) -> tuple[list[ConfidenceInterval], np.ndarray]:
        """Percentile intervals of each column of samples [n_resamples, k] (NaN = invalid) and the
        number of valid values per column."""
        samples = np.asarray(samples, dtype=np.float64).reshape(self.n_resamples, -1)
        return percentile_intervals(samples, self.level), np.isfinite(samples).sum(0).astype(np.int64)

    # ------------------------------------------------------------ the statistics, per chunk
    def weighted_dots(self, sums: np.ndarray, norms: bool):
        """Per chunk of resamples: (P* [c], Q* [c], valid [c], dots) with ``dots`` the [c, K] dot
        products (w . S_R_k) . (w . S_T_k) of the weighted set sums of ``sums`` [K, 2, G, D], then
        (``norms``) their squared norms |w . S_R_k|^2 and |w . S_T_k|^2."""
        K, _, G, D = sums.shape
        a, b = sums[:, 0], sums[:, 1]
        pairs = [(a, b)] + ([(a, a), (b, b)] if norms else [])
        if G <= D and len(pairs) * K * G * G * 8 <= GRAM_BYTES:
            grams = [_gram(x, y) for x, y in pairs]
            for W, P, Q, valid in self.chunks():
                yield P, Q, valid, [_quadratic(W, M) for M in grams]
            return
        for W, P, Q, valid in self.chunks():
            wa, wb = _weigh(W, a), _weigh(W, b)
            weighted = ((wa, wb), (wa, wa), (wb, wb))[:len(pairs)]
            yield P, Q, valid, [np.einsum("ckd,ckd->ck", x, y) for x, y in weighted]

    def coupling(self, sums: np.ndarray) -> np.ndarray:
        """sums [K, 2, G, D] (K statistics) -> float64[n_resamples, K]: cos of the weighted set sums."""
        out = np.empty((self.n_resamples, sums.shape[0]))
        r0 = 0
        for _, _, valid, (dot, aa, bb) in self.weighted_dots(sums, norms=True):
            v = _cosine(dot, aa, bb)
            v[~valid] = np.nan
            out[r0:r0 + len(v)] = v
            r0 += len(v)
        return out

    def pairwise_mean(self, unit_sums: np.ndarray) -> np.ndarray:
        """unit_sums [K, 2, G, D] -> float64[n_resamples, K]."""
        out = np.empty((self.n_resamples, unit_sums.shape[0]))
        r0 = 0
        for P, Q, valid, (dot,) in self.weighted_dots(unit_sums, norms=False):
            with np.errstate(invalid="ignore", divide="ignore"):
                v = dot / (P * Q)[:, None]
            v[~valid] = np.nan
            out[r0:r0 + len(v)] = v
            r0 += len(v)
        return out

    def fraction_below(self, below: np.ndarray, pair_counts: np.ndarray) -> np.ndarray:
        """below [K, G, G] pair counts, pair_counts [2, G] rows that entered them -> [n_resamples, K]."""
        K = below.shape[0]
        out = np.empty((self.n_resamples, K))
        r0 = 0
        below = below.astype(np.float64)
        for W, _, _, valid in self.chunks():
            num = (np.matmul(W, below) * W).sum(-1).T          # sum_gh W_cg below_kgh W_ch
            den = (W @ pair_counts[0]) * (W @ pair_counts[1])
            with np.errstate(invalid="ignore", divide="ignore"):
                v = num / den[:, None]
            v[~(valid & (den > 0))] = np.nan
            out[r0:r0 + len(W)] = v
            r0 += len(W)
        return out
