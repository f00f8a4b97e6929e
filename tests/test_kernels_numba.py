"""The numba backend's work decomposition: results against float64 numpy on the shapes that take
each path (row blocks for few long sets, feature chunks for few long rows), bit-identical across
thread counts and between the parallel kernels and their serial twins (used for small calls)."""
from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

import cape_kernels as ck
from cape_kernels import numba_backend as nbk
from cape_kernels.testing import atol, f64, np_cos, np_pool, rand


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield lambda n: numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(before)


def test_decomposition_depends_on_the_shape_only():
    assert nbk._row_blocks(1024, 64) == 1 and nbk._row_blocks(32, 64) == 1
    assert nbk._row_blocks(1, 8192) == 32 and nbk._row_blocks(2, 1000) == 16
    assert nbk._d_chunks(64, 4096) == 1 and nbk._d_chunks(1, 1024) == 4 and nbk._d_chunks(2, 100) == 1


@pytest.mark.parametrize("B,P,Q,D", [(1, 1000, 777, 65), (3, 130, 5, 129), (40, 9, 11, 3)])
def test_set_mean_cosine_paths(threads, B, P, Q, D):
    R = rand((B, P, D), torch.float32, "cpu", seed=P) + 0.01
    T = rand((B, Q, D), torch.float32, "cpu", seed=Q) + 0.02
    want = np.array([np_cos(f64(R[b]).mean(0), f64(T[b]).mean(0)) for b in range(B)])
    got = []
    for n in (1, 2):
        threads(n)
        got.append(ck.set_mean_cosine(R, T, backend="numba"))
    np.testing.assert_allclose(f64(got[0]), want, rtol=0, atol=atol(torch.float32, max(P, Q) * D))
    assert torch.equal(got[0], got[1])  # the thread count changes nothing
    r, t = R.numpy(), T.numpy()
    nblk = nbk._row_blocks(B, max(P, Q))
    parts = [np.empty((B, 2, nblk, D)) for _ in range(2)]
    nbk._set_rows(r, t, nblk, parts[0])
    nbk._set_rows_serial(r, t, nblk, parts[1])
    assert np.array_equal(parts[0], parts[1])
    np.testing.assert_allclose(parts[0][:, 0].sum(1), f64(R).sum(1), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("N,S,D", [(2, 300, 1100), (9, 7, 5), (64, 16, 257)])
def test_pooled_mean_paths(threads, N, S, D):
    h = rand((N, S, D), torch.float32, "cpu", seed=S)
    m = torch.rand(N, S, generator=torch.Generator().manual_seed(D)) < 0.7
    m[0] = False  # no token: zeros
    want = np_pool(f64(h), m.numpy(), "mean")
    got = []
    for n in (1, 2):
        threads(n)
        got.append(ck.pooled_tap(h, m, "mean", backend="numba"))
    np.testing.assert_allclose(f64(got[0]), want, rtol=0, atol=3 * atol(torch.float32, S) * np.abs(want).max())
    assert torch.equal(got[0], got[1]) and torch.all(got[0][0] == 0)
    nchunk = nbk._d_chunks(N, D)
    outs = [np.empty((N, D), np.float32) for _ in range(2)]
    nbk._pool_mean(h.numpy(), m.numpy(), nchunk, 3, outs[0])      # 3 lanes: runs of unequal length
    nbk._pool_mean_serial(h.numpy(), m.numpy(), nchunk, 1, outs[1])
    assert np.array_equal(outs[0], outs[1])


def test_set_mean_cosine_mixed_dtypes_and_nan():
    R = rand((2, 50, 8), torch.float64, "cpu", seed=1)
    T = rand((2, 40, 8), torch.float16, "cpu", seed=2)
    want = np.array([np_cos(f64(R[b]).mean(0), f64(T[b]).mean(0)) for b in range(2)])
    got = ck.set_mean_cosine(R, T, backend="numba")
    assert got.dtype == torch.float64
    np.testing.assert_allclose(f64(got), want, rtol=0, atol=1e-12)
    R[1, 7, 3] = float("nan")
    got = ck.set_mean_cosine(R, T, backend="numba")
    assert np.isfinite(f64(got)[0]) and np.isnan(f64(got)[1])


@pytest.mark.parametrize("B,P,Q,D", [(70, 9, 11, 3), (64, 33, 20, 700)])
def test_set_mean_cosine_one_launch_equals_the_block_sums(B, P, Q, D):
    """Many sets (one block each) take the fused kernel: the same float64 sums as the row-block
    kernels with one block, the cosine in the same launch; serial and parallel twins agree."""
    assert nbk._row_blocks(B, max(P, Q)) == 1
    r = rand((B, P, D), torch.float32, "cpu", seed=B).numpy()
    t = rand((B, Q, D), torch.float32, "cpu", seed=D).numpy()
    part, blocks = np.empty((B, 2, 1, D)), np.empty(B)
    nbk._set_rows(r, t, 1, part)
    nbk._set_finish(part, blocks)
    fused = [np.empty(B) for _ in range(2)]
    nbk._set_cos(r, t, 3, fused[0])                                 # 3 lanes: runs of unequal length
    nbk._set_cos_serial(r, t, 1, fused[1])
    assert np.array_equal(fused[0], fused[1])
    np.testing.assert_allclose(fused[0], blocks, rtol=0, atol=1e-14)
    want = np.array([np_cos(r[b].astype(np.float64).sum(0), t[b].astype(np.float64).sum(0)) for b in range(B)])
    np.testing.assert_allclose(fused[0], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("T,D,per_row", [(3, 5, 0), (40, 300, 1)])
def test_steer_serial_twin_is_bit_identical(T, D, per_row):
    """Small steering calls (a decoding step's rows) run the serial twin: the same bits."""
    h = rand((T, D), torch.float32, "cpu", seed=T).numpy()
    v = rand((T if per_row else 1, D), torch.float32, "cpu", seed=D).numpy()
    alpha = np.linspace(-0.5, 0.5, T)
    outs = []
    for kern in (nbk._steer, nbk._steer_serial):
        hh, proj = h.copy(), np.empty(T)
        kern(hh, v, per_row, alpha, True, True, 0.3, proj)
        outs.append((hh, proj))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0], h)  # some rows were steered
