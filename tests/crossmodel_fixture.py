"""Synthetic internals results with known per-prompt vectors, for the cross-model tests.

``synthetic_internals(name, coupling, ...)`` draws per-prompt pooled vectors whose set means have
(close to) the requested cosine at every layer, assigns the prompts to blocks exactly as the
extraction does (``assign_blocks`` of the prompt ids), and stores the per-block sums the extraction
stores (``BlockStats``) plus the point statistics computed from the vectors in float64 numpy.  The
vectors are returned too, so a test can recompute any statistic (or its block resample) from them.
"""
from __future__ import annotations

import math

import h5py
import numpy as np

from cape_hpc.internals.blocks import assign_blocks
from cape_hpc.internals.results import (BlockStats, Bottleneck, HeadRow, HeadSummary, InternalsResult, LayerRow,
                                        store_name)
from cape_hpc.io.store import write_tree
from cape_hpc.schema import Provenance


def _cos(a, b):
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def _vectors(rng, n, mean, noise):
    return mean[None, :] + noise * rng.standard_normal((n, mean.size))


def _pair_means(rng, D, c):
    """Two unit vectors with cosine c."""
    u = rng.standard_normal(D)
    u /= np.linalg.norm(u)
    v = rng.standard_normal(D)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    return u, c * u + math.sqrt(max(0.0, 1 - c * c)) * v


def synthetic_internals(name: str, coupling, *, n_r: int = 12, n_t: int = 12, D: int = 8, H: int = 2, hd: int = 4,
                        head_coupling=None, final_coupling: float | None = None, n_blocks: int = 6,
                        block_seed: int = 0, noise: float = 0.05, seed: int = 0, prompt_sha: str = "sha-prompts",
                        set_r: str = "reasoning", set_t: str = "truthfulness", blocks: bool = True,
                        pooling: str = "last"):
    """(InternalsResult, vectors): ``coupling`` [L] target layer couplings; ``head_coupling`` [L, H]."""
    rng = np.random.default_rng(seed)
    coupling = np.atleast_1d(np.asarray(coupling, dtype=float))
    L = coupling.size
    N = n_r + n_t
    ids = [f"p{i}" for i in range(N)]
    g = assign_blocks(ids, n_blocks, block_seed)
    side = np.array([0] * n_r + [1] * n_t)
    X = np.empty((L, N, D))
    for l in range(L):
        a, b = _pair_means(rng, D, coupling[l])
        X[l, :n_r] = _vectors(rng, n_r, a, noise)
        X[l, n_r:] = _vectors(rng, n_t, b, noise)
    hc_target = np.full((L, H), 0.5) if head_coupling is None else np.asarray(head_coupling, float)
    Hv = np.empty((L, N, H * hd))
    for l in range(L):
        for h in range(H):
            a, b = _pair_means(rng, hd, hc_target[l, h])
            Hv[l, :n_r, h * hd:(h + 1) * hd] = _vectors(rng, n_r, a, noise)
            Hv[l, n_r:, h * hd:(h + 1) * hd] = _vectors(rng, n_t, b, noise)
    fc = coupling[-1] if final_coupling is None else final_coupling
    a, b = _pair_means(rng, D, fc)
    F = np.concatenate([_vectors(rng, n_r, a, noise), _vectors(rng, n_t, b, noise)])

    def sums(V):  # [N, W] -> [2, G, W]
        out = np.zeros((2, n_blocks, V.shape[-1]))
        np.add.at(out, (side, g), V)
        return out

    unit = X / np.linalg.norm(X, axis=-1, keepdims=True)
    counts = np.zeros((2, n_blocks), dtype=np.int64)
    np.add.at(counts, (side, g), 1)
    cosr = np.einsum("lid,ljd->lij", unit[:, :n_r], unit[:, n_r:])          # [L, n_r, n_t]
    below = np.zeros((L, n_blocks, n_blocks), dtype=np.int64)
    for l in range(L):
        for i in range(n_r):
            for j in range(n_t):
                if cosr[l, i, j] < -0.5:
                    below[l, g[i], g[n_r + j]] += 1
    layers = []
    for l in range(L):
        mr, mt = X[l, :n_r].mean(0), X[l, n_r:].mean(0)
        frac = float((cosr[l] < -0.5).mean())
        S = np.concatenate([X[l, :n_r], X[l, n_r:]])
        C = np.cov(S, rowvar=False, ddof=1)
        ev = np.linalg.eigvalsh(C)
        layers.append(LayerRow(layer=l, coupling=_cos(mr, mt), pairwise_mean=float(cosr[l].mean()),
                               competing_fraction=frac, competes=frac > 0.5,
                               d_rep=float(ev.sum() ** 2 / (ev ** 2).sum())))
    hcs = np.empty((L, H))
    for l in range(L):
        for h in range(H):
            s = slice(h * hd, (h + 1) * hd)
            hcs[l, h] = _cos(Hv[l, :n_r, s].mean(0), Hv[l, n_r:, s].mean(0))
    heads = [HeadRow(layer=l, head=h, coupling=float(hcs[l, h])) for l in range(L) for h in range(H)]
    bs = BlockStats(n_blocks=n_blocks, seed=block_seed, n_nonempty=int((counts.sum(0) > 0).sum()))
    if blocks:
        bs = BlockStats(n_blocks=n_blocks, seed=block_seed, n_nonempty=int((counts.sum(0) > 0).sum()), counts=counts,
                        layer_sums=np.stack([sums(X[l]) for l in range(L)]),
                        layer_unit_sums=np.stack([sums(unit[l]) for l in range(L)]),
                        pair_counts=counts.copy(), pairs_below=below,
                        head_sums=np.stack([sums(Hv[l]) for l in range(L)]), final_sums=sums(F))
    res = InternalsResult(
        model=name, source=f"synthetic:{name}", revision="none", dtype="float64", backend="numpy", pooling=pooling,
        taps=["residual", "heads", "final"], set_r=set_r, set_t=set_t, n_prompts=N, n_r=n_r, n_t=n_t, n_truncated=0,
        prompt_set_sha256=prompt_sha, n_layers=L, n_heads=H, head_dim=hd, d_model=D, layers=layers, heads=heads,
        head_summary=HeadSummary.of(hcs),
        bottleneck=Bottleneck(measured=True, hidden=_cos(F[:n_r].mean(0), F[n_r:].mean(0)), logits=math.nan),
        provenance=Provenance("tests.crossmodel_fixture", {}), blocks=bs)
    return res, {"X": X, "H": Hv, "F": F, "blocks": g, "side": side}


def write_internals(path, results, sweep_rows: list[dict] | None = None) -> str:
    """Write results under /internals/<model> (and an optional /sweep index of rows) to ``path``."""
    with h5py.File(path, "a") as f:
        for res in results:
            write_tree(f.require_group(f"internals/{store_name(res.model)}"), res.to_tree())
        if sweep_rows is not None:
            write_tree(f.require_group("sweep"), {"models": sweep_rows})
    return str(path)
