"""The statistics of the extraction (cape_hpc.internals.statistics) as pure functions of the block
statistics, without a model: per-prompt vectors drawn here, their block sums built by hand, and every
statistic compared with a float64 numpy computation on the stacked vectors themselves (and the
block-bootstrap intervals with a recomputation from the drawn blocks' stacked vectors)."""
import numpy as np
import pytest
import torch

from cape_hpc.internals.blocks import block_weights
from cape_hpc.internals.results import BlockStats
from cape_hpc.internals.statistics import (bottleneck, d_rep_per_layer, empty_head_rows, empty_layer_rows, head_rows,
                                           layer_rows)
from cape_hpc.stats.intervals import percentile_interval

L, G, D, H = 3, 4, 6, 2
N_R, N_T = 11, 9


def _unit(X):
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _cos(a, b):
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    shift = rng.normal(size=(L, 1, D))
    R = rng.normal(size=(L, N_R, D)) + shift            # pooled residual vectors per layer
    T = rng.normal(size=(L, N_T, D)) - 0.5 * shift
    bR, bT = rng.integers(0, G, N_R), rng.integers(0, G, N_T)
    bR[:G], bT[:G] = np.arange(G), np.arange(G)           # every block has prompts of both sets
    counts = np.stack([np.bincount(bR, minlength=G), np.bincount(bT, minlength=G)]).astype(np.int64)

    def by_block(X, b):                                  # [..., n, d] -> [..., G, d]
        return np.stack([X[..., b == g, :].sum(-2) for g in range(G)], axis=-2)

    cos = np.einsum("lpd,lqd->lpq", _unit(R), _unit(T))
    below = np.stack([[[np.sum(cos[l][np.ix_(bR == g, bT == h)] < -0.5) for h in range(G)] for g in range(G)]
                      for l in range(L)]).astype(np.int64)
    HR = rng.normal(size=(L, N_R, H * 4))
    HT = rng.normal(size=(L, N_T, H * 4)) + 0.3
    FR, FT = rng.normal(size=(N_R, D)) + 1.0, rng.normal(size=(N_T, D))
    blocks = BlockStats(n_blocks=G, seed=3, n_nonempty=G, counts=counts,
                        layer_sums=np.stack([by_block(R, bR), by_block(T, bT)], axis=1),
                        layer_unit_sums=np.stack([by_block(_unit(R), bR), by_block(_unit(T), bT)], axis=1),
                        pair_counts=counts.copy(), pairs_below=below,
                        head_sums=np.stack([by_block(HR, bR), by_block(HT, bT)], axis=1),
                        final_sums=np.stack([by_block(FR, bR), by_block(FT, bT)]), n_resamples=40, level=0.9)
    return dict(R=R, T=T, bR=bR, bT=bT, HR=HR, HT=HT, FR=FR, FT=FT, blocks=blocks)


def test_layer_statistics_equal_the_stacked_vectors(data):
    R, T, blocks = data["R"], data["T"], data["blocks"]
    X = np.concatenate([R, T], axis=1)                   # [L, N, D]
    m1, m2 = X.sum(1), np.einsum("lnd,lne->lde", X, X)   # moments with shift 0
    d_rep, d_se = d_rep_per_layer(m1, m2, N_R + N_T, "exact")
    rows = layer_rows(blocks, d_rep, d_se, np.zeros(L))
    for l, row in enumerate(rows):
        assert row.coupling == pytest.approx(_cos(R[l].mean(0), T[l].mean(0)), abs=1e-12)
        cos = _unit(R[l]) @ _unit(T[l]).T
        assert row.pairwise_mean == pytest.approx(cos.mean(), abs=1e-12)
        assert row.competing_fraction == pytest.approx((cos < -0.5).mean(), abs=1e-12)
        lam = np.linalg.eigvalsh(np.cov(X[l], rowvar=False))
        assert row.d_rep == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-10)
        assert row.d_rep_se == 0.0 and row.competing_fraction_se == 0.0


def test_layer_intervals_equal_a_recomputation_from_the_drawn_blocks(data):
    """Resample r draws blocks with weights W[r]; the coupling of the stacked vectors of the drawn
    blocks (a block drawn twice enters twice), then the percentile interval of those values."""
    R, T, bR, bT, blocks = data["R"], data["T"], data["bR"], data["bT"], data["blocks"]
    rows = layer_rows(blocks, np.full(L, np.nan), np.full(L, np.nan), np.zeros(L))
    W = block_weights(G, blocks.n_resamples, blocks.seed)
    for l, row in enumerate(rows):
        vals = []
        for w in W:
            r = np.concatenate([np.repeat(R[l][bR == g], int(w[g]), axis=0) for g in range(G)])
            t = np.concatenate([np.repeat(T[l][bT == g], int(w[g]), axis=0) for g in range(G)])
            if len(r) and len(t):
                vals.append(_cos(r.mean(0), t.mean(0)))
        want = percentile_interval(np.array(vals), 0.9)
        assert row.ci_n_valid == len(vals)
        assert row.coupling_ci.low == pytest.approx(want.low, abs=1e-12)
        assert row.coupling_ci.high == pytest.approx(want.high, abs=1e-12)


def test_head_couplings_and_bottleneck_equal_the_stacked_vectors(data):
    blocks = data["blocks"]
    heads, summary = head_rows(blocks, H)
    got = np.array([h.coupling for h in heads]).reshape(L, H)
    for l in range(L):
        for h in range(H):
            sl = slice(4 * h, 4 * h + 4)
            assert got[l, h] == pytest.approx(_cos(data["HR"][l][:, sl].mean(0), data["HT"][l][:, sl].mean(0)),
                                              abs=1e-12)
    assert summary.net == pytest.approx(got.mean(), abs=1e-12) and summary.n_heads_total == L * H
    F = np.concatenate([data["FR"], data["FT"]])
    Fc = F - F.mean(0)
    U = np.random.default_rng(1).normal(size=(D, 10))
    neck = bottleneck(blocks, Fc.T @ Fc, lambda m: m @ U, note="n")
    m_r, m_t = data["FR"].mean(0), data["FT"].mean(0)
    assert neck.measured and neck.note == "n"
    assert neck.hidden == pytest.approx(_cos(m_r, m_t), abs=1e-12)
    assert neck.logits == pytest.approx(_cos(m_r @ U, m_t @ U), abs=1e-12)
    lam, V = np.linalg.eigh(Fc.T @ Fc)
    V = V[:, ::-1]
    for row in neck.pca:                                  # rank D here (N - 1 > D)
        P = V[:, :row.k] @ V[:, :row.k].T
        assert row.coupling == pytest.approx(np.clip(_cos(P @ m_r, P @ m_t), -1, 1), abs=1e-9)
    assert [r.k for r in neck.pca] == list(range(1, D + 1))
    assert np.isnan(bottleneck(blocks, Fc.T @ Fc).logits)


def test_without_resamples_or_taps():
    assert all(np.isnan(r.coupling) and not r.competes for r in empty_layer_rows(2))
    heads, summary = empty_head_rows(2, 3)
    assert len(heads) == 6 and np.isnan(summary.net)
    X = torch.randn(2, 1, 4, dtype=torch.float64).numpy()
    d, se = d_rep_per_layer(X.sum(1), np.einsum("lnd,lne->lde", X, X), 1, "exact")
    assert np.isnan(d).all() and np.isnan(se).all()       # one prompt: no d_rep
