"""cape_kernels API: dispatch rules, argument checks, torch.library/torch.compile, CUDA sources."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

import cape_kernels as ck
from cape_kernels import backends as bk
from cape_kernels.testing import f64, np_cos, rand


def test_public_names_import():
    from cape_kernels import (PairwiseStats, available_backends, pairwise_cosine_stats,  # noqa: F401
                              pooled_tap, set_mean_cosine, steer_inject_)
    names = available_backends()
    assert "torch" in names and set(names) <= set(bk.BACKENDS)
    assert "torch" in available_backends("cpu")


def test_reference_float64_matches_numpy():
    R = rand((2, 11, 13), torch.float64, "cpu", 1)
    T = rand((2, 17, 13), torch.float64, "cpu", 2)
    got = ck.set_mean_cosine(R, T, backend="torch")
    want = [np_cos(f64(R[b]).mean(0), f64(T[b]).mean(0)) for b in range(2)]
    np.testing.assert_allclose(f64(got), want, rtol=0, atol=1e-14)


def test_explicit_missing_backend_raises(monkeypatch):
    x = torch.randn(2, 3, 4)
    with pytest.raises(bk.BackendUnavailable, match="cupy"):
        ck.set_mean_cosine(x, x, backend="cupy")  # CPU tensors
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(bk.BackendUnavailable, match="TRITON_INTERPRET"):
        ck.set_mean_cosine(x, x, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        ck.set_mean_cosine(x, x, backend="cuda")
    monkeypatch.setattr(bk, "_installed", lambda name: f"{name} is not importable (test)")
    with pytest.raises(bk.BackendUnavailable, match="numba is not importable"):
        ck.set_mean_cosine(x, x, backend="numba")


def test_auto_choice_falls_back_and_logs_once(monkeypatch, caplog):
    real = bk._installed
    monkeypatch.setattr(bk, "_installed", lambda name: "numba missing (test)" if name == "numba" else real(name))
    monkeypatch.setattr(bk, "_logged", set())
    x = torch.randn(2, 3, 4)
    with caplog.at_level(logging.INFO, logger="cape_kernels"):
        ck.set_mean_cosine(x, x)
        ck.set_mean_cosine(x, x)
        st = ck.pairwise_cosine_stats(x, x)
    msgs = [r.getMessage() for r in caplog.records if "numba missing" in r.getMessage()]
    assert len(msgs) == 1 and "using torch" in msgs[0]
    assert st.backend == "torch"
    assert bk.resolve(None, "cpu") == "torch"


def test_auto_choice_prefers_numba_on_cpu():
    if "numba" not in ck.available_backends("cpu"):
        pytest.skip("numba not installed")
    x = torch.randn(2, 3, 4)
    assert ck.pairwise_cosine_stats(x, x).backend == "numba"


def test_argument_checks():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="agree in B and D"):
        ck.set_mean_cosine(x, torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="float16, bfloat16"):
        ck.set_mean_cosine(x.long(), x)
    with pytest.raises(ValueError, match="mode must be"):
        ck.pooled_tap(x, None, "max")
    with pytest.raises(ValueError, match="mask"):
        ck.pooled_tap(x, torch.ones(2, 4))
    h = torch.randn(5, 4)
    with pytest.raises(ValueError, match="v must be"):
        ck.steer_inject_(h, torch.randn(3), 1.0)
    with pytest.raises(ValueError, match="scale must be"):
        ck.steer_inject_(h, torch.randn(4), 1.0, scale="norm")
    with pytest.raises(ValueError, match="alpha must be"):
        ck.steer_inject_(h, torch.randn(4), torch.ones(3))
    with pytest.raises(ValueError, match="contiguous"):
        ck.steer_inject_(torch.randn(4, 5).t(), torch.randn(4), 1.0)


def test_two_dimensional_sets_give_scalars():
    R, T = torch.randn(6, 5), torch.randn(7, 5)
    c = ck.set_mean_cosine(R, T, backend="torch")
    assert c.shape == () and torch.allclose(c, ck.set_mean_cosine(R[None], T[None], backend="torch")[0])
    st = ck.pairwise_cosine_stats(R, T, return_full=True, backend="torch")
    assert st.mean.shape == () and st.full.shape == (6, 7)


def test_ops_registered_with_torch_library():
    for name in ("pooled_tap", "set_mean_cosine", "pairwise_cosine_stats", "steer_inject_"):
        assert hasattr(torch.ops.cape, name)
    h = torch.randn(3, 4)
    torch.library.opcheck(torch.ops.cape.set_mean_cosine.default, (torch.randn(2, 3, 4), torch.randn(2, 5, 4), "torch"))
    torch.library.opcheck(torch.ops.cape.steer_inject_.default,
                          (h, torch.randn(4), torch.ones(3), True, None, "torch"))


def test_torch_compile_with_ops():
    """Inside torch.compile (fullgraph, inductor on CPU): no graph break, same numbers as eager."""
    R = torch.randn(3, 9, 16)
    T = torch.randn(3, 11, 16)

    def f(R, T, h, v):
        c = ck.set_mean_cosine(R * 2.0, T, backend="torch")
        p = ck.steer_inject_(h, v, 0.5, scale="absolute", backend="torch")
        return c + 1.0, p, h

    h1, h2 = torch.randn(5, 16), None
    h2 = h1.clone()
    v = torch.randn(16)
    fc = torch.compile(f, fullgraph=True)
    c1, p1, o1 = f(R, T, h1, v)
    c2, p2, o2 = fc(R, T, h2, v)
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(h1, h2)  # the in-place mutation survives compilation


# ------------------------------------------------------------------ CUDA C sources compile
def _compiler_ok(method):
    from cape_kernels.cupy_backend import compile_ptx

    try:
        compile_ptx('extern "C" __global__ void k(float* x) { x[0] = 1.0f; }', "k.cu", method=method)
        return True
    except RuntimeError:
        return False


EXPECTED_KERNELS = {
    "pooled_tap": ["pooled_tap_f32", "pooled_tap_f16", "pooled_tap_bf16"],
    "set_mean_cosine": ["set_partial_f32", "set_partial_f16", "set_partial_bf16", "set_finish",
                        "set_reduce", "set_final"],
    "pairwise": ["unit_rows_f32", "unit_rows_f16", "unit_rows_bf16", "pair_tile"],
    "steer": ["steer_f32", "steer_f16", "steer_bf16", "steer_f16_vf32", "steer_bf16_vf32",
              "steer_warp_f32", "steer_warp_f16", "steer_warp_bf16", "steer_warp_f16_vf32", "steer_warp_bf16_vf32"],
}


@pytest.mark.parametrize("method", ["nvrtc", "nvcc"])
def test_cuda_sources_compile(method):
    """Every .cu source compiles to PTX (a syntax or type error fails here) with each compiler."""
    pytest.importorskip("cupy")
    from cape_kernels.cupy_backend import compile_ptx, sources

    if not _compiler_ok(method):
        pytest.skip(f"{method} not available here")
    for op, src in sources().items():
        ptx = compile_ptx(src, f"{op}.cu", method=method)
        entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
        assert set(EXPECTED_KERNELS[op]) <= entries, (op, entries)


def test_cuda_sources_checked_by_some_compiler():
    """CI must have at least one CUDA compiler, else the compile check above checks nothing."""
    pytest.importorskip("cupy")
    assert _compiler_ok("nvrtc") or _compiler_ok("nvcc")


def test_cuda_compile_errors_are_reported():
    pytest.importorskip("cupy")
    from cape_kernels.cupy_backend import compile_ptx

    if not (_compiler_ok("nvrtc") or _compiler_ok("nvcc")):
        pytest.skip("no CUDA compiler")
    with pytest.raises(RuntimeError, match="undefined_name|identifier"):
        compile_ptx('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }', "bad.cu")


def test_eager_fast_path_matches_the_dispatcher(monkeypatch):
    """Plain eager calls skip torch.library's dispatcher; the numbers equal torch.ops.cape.*, and a
    call under a dispatch mode (fake tensors) or with autograd goes through the registered op."""
    from cape_kernels import ops

    R, T = torch.randn(3, 9, 16), torch.randn(3, 11, 16)
    for be in ("torch", "numba"):
        assert torch.equal(ck.set_mean_cosine(R, T, backend=be), torch.ops.cape.set_mean_cosine(R, T, be))
        h, m = torch.randn(4, 5, 16), torch.rand(4, 5) > 0.3
        assert torch.equal(ck.pooled_tap(h, m, "mean", backend=be), torch.ops.cape.pooled_tap(h, m, "mean", be))
    assert ops._direct(R, T) and not ops._direct(R.requires_grad_(), T)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fr, ft = torch.empty(3, 9, 16), torch.empty(3, 11, 16)
        assert not ops._direct(fr, ft)
        out = ck.set_mean_cosine(fr, ft, backend="numba")  # the fake implementation: shape only
        assert out.shape == (3,)
    calls = []
    monkeypatch.setattr(ops, "_set_mean_cosine_op", lambda *a: calls.append(a) or torch.zeros(3))
    ck.set_mean_cosine(R, T, backend="torch")
    assert len(calls) == 1  # requires_grad: through the registered op


def test_streaming_eager_fast_path_matches_the_dispatcher(monkeypatch):
    """The streaming ops take the same fast path: equal numbers and sums to torch.ops.cape.*, and
    fake tensors go through the registered op (its fake implementation)."""
    from cape_kernels import streaming

    g = torch.Generator().manual_seed(2)
    h, m = torch.randn(5, 7, 12, generator=g), torch.rand(5, 7, generator=g) > 0.3
    slot = torch.tensor([0, 2, 1, 2, -1])
    A, B = torch.randn(6, 12, generator=g), torch.randn(9, 12, generator=g)
    ga, gb = torch.tensor([0, 1, 1, 2, 0, 2]), torch.tensor([2, 2, 0, 1, 0, 1, 1, 0, 2])
    for be in ("torch", "numba"):
        got, want = [torch.zeros(3, 12, dtype=torch.float64) for _ in range(2)], \
            [torch.zeros(3, 12, dtype=torch.float64) for _ in range(2)]
        p1 = ck.pool_accumulate_(h, m, "mean", slot, got[0], got[1], backend=be)
        p2 = torch.ops.cape.pool_accumulate_(h, m, "mean", slot, want[0], want[1], be)
        assert torch.equal(p1, p2) and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.equal(ck.count_pairs_below(A, B, 0.1, a_groups=ga, b_groups=gb, n_groups=3, backend=be),
                           torch.ops.cape.count_pairs_below(A, B, 0.1, ga, gb, 3, be))
    calls = []
    monkeypatch.setattr(streaming, "_count_op", lambda *a: calls.append(a) or torch.zeros(1, 1, dtype=torch.int64))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        ck.count_pairs_below(torch.empty(4, 8), torch.empty(3, 8), -0.5, backend="numba")
    assert len(calls) == 1
