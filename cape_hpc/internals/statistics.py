"""Every statistic of ``extract_internals`` (docs/METHODS.md §3.4-§3.8) as a pure function of the
block statistics (:class:`~cape_hpc.internals.results.BlockStats`, on the host, float64) and the
second moments: no model, no device.  ``extract._Extraction`` moves its streaming state to the host
once and calls these; the tests call them on sums built by hand.

- :func:`layer_rows`: per layer, coupling cos(sum R, sum T), the pairwise mean, the fraction of
  pairs below the threshold, d_rep, each with its block-bootstrap interval (§3.8);
- :func:`d_rep_per_layer`: the participation ratio of each layer's scatter (exact or sketched);
- :func:`head_rows`: per (layer, head) couplings, their intervals and summary;
- :func:`bottleneck`: the final hidden state's coupling, the logits' and the PCA curve (§3.5).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from cape_hpc.internals.accumulators import covariance, sketch_participation_ratio
from cape_hpc.internals.blocks import BlockBootstrap, weighted_cosine
from cape_hpc.internals.results import BOTTLENECK_CAVEAT, BlockStats, Bottleneck, HeadRow, HeadSummary, LayerRow, PcaRow
from cape_hpc.schema import ConfidenceInterval

__all__ = ["block_bootstrap", "layer_rows", "d_rep_per_layer", "head_rows", "bottleneck", "pca_curve",
           "empty_layer_rows", "empty_head_rows"]


def block_bootstrap(blocks: BlockStats) -> BlockBootstrap:
    """The block bootstrap of ``blocks`` (its counts, resamples, seed and level)."""
    return BlockBootstrap(blocks.counts, int(blocks.n_resamples), int(blocks.seed), float(blocks.level))


def _intervals(boot: BlockBootstrap, samples: Callable[[], np.ndarray], k: int
               ) -> tuple[list[ConfidenceInterval], np.ndarray]:
    """Percentile intervals of k statistics from ``samples()`` [n_resamples, k] (not called without
    resamples: undefined intervals, 0 valid)."""
    if boot.n_resamples == 0:
        return [ConfidenceInterval.undefined(float(boot.level))] * k, np.zeros(k, dtype=np.int64)
    return boot.intervals(samples())


def d_rep_per_layer(m1: np.ndarray, m2: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """d_rep [L] and its standard error [L] from shifted moments m1 [L, k], m2 [L, k, k] of n pooled
    vectors (§3.6): the participation ratio of the scatter (``exact``; SE 0), or its sketch
    estimate with the jackknife SE (``sketch``).  NaN for n < 2."""
    import cape_kernels as ck

    L = m1.shape[0]
    d_rep, se = np.full(L, math.nan), np.full(L, math.nan)
    if n < 2:
        return d_rep, se
    for layer in range(L):       # one layer at a time: its [k, k] temporaries stay in cache
        C = covariance(torch.as_tensor(m1[layer]), torch.as_tensor(m2[layer]), n).numpy()
        if mode == "exact":
            d_rep[layer], se[layer] = ck.participation_ratio(C), 0.0
        else:
            d_rep[layer], se[layer] = sketch_participation_ratio(C)
    return d_rep, se


def layer_rows(blocks: BlockStats, d_rep: np.ndarray, d_rep_se: np.ndarray, pairs_se: np.ndarray) -> list[LayerRow]:
    """One :class:`LayerRow` per layer from ``blocks`` (``layer_sums``, ``layer_unit_sums`` [L, 2, G, D],
    ``pairs_below`` [L, G, G], ``pair_counts`` [2, G], ``counts`` [2, G]), d_rep and its SE [L],
    and the reservoir's SE of the fraction [L] (0 in exact mode)."""
    ls, us, below = blocks.layer_sums, blocks.layer_unit_sums, blocks.pairs_below
    L = ls.shape[0]
    n_r, n_t = int(blocks.counts[0].sum()), int(blocks.counts[1].sum())
    coupling = weighted_cosine(ls[:, 0].sum(1), ls[:, 1].sum(1))
    pmean = np.einsum("ld,ld->l", us[:, 0].sum(1), us[:, 1].sum(1)) / (n_r * n_t)
    npairs = float(blocks.pair_counts[0].sum() * blocks.pair_counts[1].sum())
    frac = below.reshape(L, -1).sum(1) / npairs
    boot = block_bootstrap(blocks)
    c_ci, c_n = _intervals(boot, lambda: boot.coupling(ls), L)
    p_ci = f_ci = c_ci
    if boot.n_resamples:
        p_ci, _ = _intervals(boot, lambda: boot.pairwise_mean(us), L)
        f_ci, _ = _intervals(boot, lambda: boot.fraction_below(below, blocks.pair_counts), L)
    return [LayerRow(layer=i, coupling=float(coupling[i]), pairwise_mean=float(pmean[i]),
                     competing_fraction=float(frac[i]), competes=bool(frac[i] > 0.5), d_rep=float(d_rep[i]),
                     coupling_ci=c_ci[i], pairwise_mean_ci=p_ci[i], competing_fraction_ci=f_ci[i],
                     ci_n_valid=int(c_n[i]), competing_fraction_se=float(pairs_se[i]), d_rep_se=float(d_rep_se[i]))
            for i in range(L)]


def empty_layer_rows(n_layers: int) -> list[LayerRow]:
    """The layer rows of an extraction without the residual tap (NaN statistics)."""
    nan = math.nan
    return [LayerRow(layer=i, coupling=nan, pairwise_mean=nan, competing_fraction=nan, competes=False, d_rep=nan)
            for i in range(n_layers)]


def head_rows(blocks: BlockStats, n_heads: int) -> tuple[list[HeadRow], HeadSummary]:
    """Per (layer, head): cos(sum R, sum T) of the head's slice of ``blocks.head_sums``
    [L, 2, G, H * head_dim], its interval, and the :class:`HeadSummary`."""
    hs = blocks.head_sums
    L, _, G, width = hs.shape
    H = int(n_heads)
    per = hs.reshape(L, 2, G, H, width // H)
    head_c = weighted_cosine(per[:, 0].sum(1), per[:, 1].sum(1))            # [L, H]
    stacked = per.transpose(0, 3, 1, 2, 4).reshape(L * H, 2, G, width // H)
    boot = block_bootstrap(blocks)
    h_ci, h_n = _intervals(boot, lambda: boot.coupling(stacked), L * H)
    heads = [HeadRow(layer=i, head=h, coupling=float(head_c[i, h]), coupling_ci=h_ci[i * H + h],
                     ci_n_valid=int(h_n[i * H + h])) for i in range(L) for h in range(H)]
    return heads, HeadSummary.of(head_c)


def empty_head_rows(n_layers: int, n_heads: int) -> tuple[list[HeadRow], HeadSummary]:
    """The head rows of an extraction without the heads tap (NaN couplings)."""
    return [HeadRow(layer=i, head=h, coupling=math.nan) for i in range(n_layers) for h in range(n_heads)], \
        HeadSummary()


def pca_curve(C: np.ndarray, n: int, m_r: np.ndarray, m_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos(P_k m_R, P_k m_T), k = 1 .. rank, with P_k the projection on the top-k eigenvectors of
    the centred scatter C [D, D] of n stacked vectors (rank <= n - 1; eigenvalues below 1e-12 of
    the largest are dropped).  docs/METHODS.md §3.5."""
    lam, V = np.linalg.eigh(C)
    lam, V = lam[::-1], V[:, ::-1]
    cap = max(0, min(int(n) - 1, C.shape[0]))
    keep = np.zeros(lam.shape, dtype=bool)
    if lam.size and lam[0] > 0:
        keep[:cap] = lam[:cap] > lam[0] * 1e-12
    V = V[:, keep]
    a, b = V.T @ m_r, V.T @ m_t
    num = np.cumsum(a * b)
    den = np.sqrt(np.cumsum(a * a) * np.cumsum(b * b))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.arange(1, V.shape[1] + 1), np.clip(cos, -1, 1)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(weighted_cosine(np.asarray(a, np.float64), np.asarray(b, np.float64)))


def bottleneck(blocks: BlockStats, scatter: np.ndarray, unembed: Callable[[np.ndarray], np.ndarray] | None = None,
               note: str = "") -> Bottleneck:
    """The projection bottleneck (§3.5) from ``blocks.final_sums`` [2, G, D] and the centred scatter
    [D, D] of the final states: cos of the two sets' mean final states, of their logits
    (``unembed``: [2, D] float64 -> [2, V]; None: not measured, NaN) and the PCA curve."""
    fs = blocks.final_sums
    n_r, n_t = int(blocks.counts[0].sum()), int(blocks.counts[1].sum())
    m_r, m_t = fs[0].sum(0) / n_r, fs[1].sum(0) / n_t
    logits = math.nan
    if unembed is not None:
        lg = unembed(np.stack([m_r, m_t]))
        logits = _cos(lg[0], lg[1])
    k, kc = pca_curve(scatter, n_r + n_t, m_r, m_t)
    return Bottleneck(measured=True, hidden=_cos(m_r, m_t), logits=logits,
                      pca=[PcaRow(int(a), float(b)) for a, b in zip(k, kc)], caveat=BOTTLENECK_CAVEAT, note=note)
