"""Every backend of the coupling and steering ops against float64 oracles (numpy, on the CPU).

Odd shapes (P, Q not multiples of any block size; D in 1, 7, 576, 4097), float32 plus
float16/bfloat16 (and float64 where the backend computes in it), tolerances from
``cape_kernels.testing`` (per-dtype resolution, growing with the reduction length).
On a CPU-only machine the Triton kernels run in the interpreter (TRITON_INTERPRET=1, set below
before they are first defined); the CUDA cases carry the ``gpu`` marker.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernel_backends import BACKENDS  # noqa: E402  (sets TRITON_INTERPRET first)

import cape_kernels as ck  # noqa: E402
from cape_kernels.testing import RES, atol, f64, np_cos, np_pairwise_cos, np_pool, rand  # noqa: E402


DIMS = [1, 7, 576, 4097]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _dtypes(backend):
    # float64 is computed in float64 by torch and numba only (GPU kernels compute it in fp32)
    return DTYPES + ([torch.float64] if backend in ("torch", "numba") else [])


def _gpu_half(backend, device, dtype):
    """True where the backend rounds normalised rows to fp16/bf16 (Triton tensor-core path)."""
    return backend == "triton" and device == "cuda" and dtype in (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------ pooled tap
@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("mode", ["last", "mean"])
def test_pooled_tap(backend, device, D, mode):
    N, S = 5, 6
    mask = torch.zeros(N, S, dtype=torch.long)
    mask[0, :3] = 1          # right padding
    mask[1, 2:] = 1          # left padding
    mask[3, :] = 1           # full
    mask[4, [1, 4]] = 1      # holes
    for dtype in _dtypes(backend):
        h = rand((N, S, D), dtype, device, seed=D)
        want = np_pool(f64(h), mask.numpy(), mode)
        got = ck.pooled_tap(h, mask.to(device), mode, backend=backend)
        assert got.shape == (N, D) and got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        tol = 0.0 if mode == "last" else 3 * atol(dtype, S) * np.abs(want).max()
        np.testing.assert_allclose(f64(got), want, rtol=0, atol=tol, err_msg=f"{dtype}")
        assert np.all(f64(got)[2] == 0.0)  # a row without tokens pools to zeros


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_pooled_tap_accumulates_running_sums(backend, device):
    D = 7
    acc = torch.zeros(D, dtype=torch.float64, device=device)
    rows = []
    for seed in range(3):
        h = rand((4, 5, D), torch.float32, device, seed)
        m = torch.ones(4, 5, device=device)
        m[:, 3 + seed % 2:] = 0
        rows.append(ck.pooled_tap(h, m, "mean", accumulate=acc, backend=backend))
    want = torch.cat(rows).double().sum(0)
    torch.testing.assert_close(acc, want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ set-mean cosine
@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("D", DIMS)
def test_set_mean_cosine(backend, device, D):
    B, P, Q = 3, 37, 53
    for dtype in _dtypes(backend):
        R = rand((B, P, D), dtype, device, seed=1)
        T = rand((B, Q, D), dtype, device, seed=2) + (0.3 if D > 1 else 0.0)
        want = np.array([np_cos(f64(R[b]).mean(0), f64(T[b]).mean(0)) for b in range(B)])
        got = ck.set_mean_cosine(R, T, backend=backend)
        assert got.shape == (B,)
        np.testing.assert_allclose(f64(got), want, rtol=0, atol=atol(dtype, max(P, Q) * D),
                                   err_msg=f"{dtype}")


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_set_mean_cosine_long_sets(backend, device):
    """One b with long sets: the kernels split the rows over many programs (and finish in stages)."""
    for B, P, Q, D in ((1, 300, 257, 70), (2, 1100, 900, 33)):
        R = rand((B, P, D), torch.float32, device, seed=P)
        T = rand((B, Q, D), torch.float32, device, seed=Q) + 0.05
        want = np.array([np_cos(f64(R[b]).mean(0), f64(T[b]).mean(0)) for b in range(B)])
        got = ck.set_mean_cosine(R, T, backend=backend)
        np.testing.assert_allclose(f64(got), want, rtol=0, atol=atol(torch.float32, max(P, Q) * D))


# ------------------------------------------------------------------ pairwise statistics
def _count_window_ok(cos: np.ndarray, thr: float, frac: float, w: float) -> bool:
    n = cos.size
    lo = np.count_nonzero(cos < thr - w) / n
    hi = np.count_nonzero(cos < thr + w) / n
    return lo - 1e-6 <= frac <= hi + 1e-6  # frac comes as float32


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("D", DIMS)
def test_pairwise_cosine_stats(backend, device, D):
    B, P, Q = 2, 37, 53
    thr = -0.5 if D == 1 else -0.04
    for dtype in _dtypes(backend):
        R = rand((B, P, D), dtype, device, seed=3)
        T = rand((B, Q, D), dtype, device, seed=4)
        cos = np_pairwise_cos(f64(R), f64(T))
        st = ck.pairwise_cosine_stats(R, T, threshold=thr, backend=backend)
        assert st.full is None and st.mean.shape == (B,) and st.frac_below.shape == (B,)
        tol = atol(dtype, D, _gpu_half(backend, device, dtype))
        np.testing.assert_allclose(f64(st.mean), cos.mean(axis=(1, 2)), rtol=0, atol=tol, err_msg=f"{dtype}")
        for b in range(B):
            assert _count_window_ok(cos[b], thr, float(st.frac_below[b]), tol), (dtype, b)
        assert 0.0 < float(st.frac_below.min()) < 1.0  # the threshold cuts through the distribution


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_pairwise_full_matrix(backend, device):
    B, P, Q, D = 2, 33, 19, 40
    R = rand((B, P, D), torch.float32, device, seed=5)
    T = rand((B, Q, D), torch.float32, device, seed=6)
    st = ck.pairwise_cosine_stats(R, T, threshold=0.0, return_full=True, backend=backend)
    cos = np_pairwise_cos(f64(R), f64(T))
    assert st.full.shape == (B, P, Q)
    np.testing.assert_allclose(f64(st.full), cos, rtol=0, atol=atol(torch.float32, D))
    np.testing.assert_allclose(f64(st.frac_below), (cos < 0).mean(axis=(1, 2)), atol=2 / (P * Q))


# ------------------------------------------------------------------ steering
def _np_steer(h, v, alpha, relative, tau):
    h = h.copy()
    T = h.shape[0]
    V = np.broadcast_to(v, h.shape)
    proj = np.zeros(T)
    changed = np.zeros(T, dtype=bool)
    for t in range(T):
        proj[t] = np_cos(h[t], V[t])
        vn = np.linalg.norm(V[t])
        if alpha[t] == 0 or vn == 0 or (tau is not None and not proj[t] < tau):
            continue
        coef = alpha[t] / vn * (np.linalg.norm(h[t]) if relative else 1.0)
        h[t] = h[t] + coef * V[t]
        changed[t] = True
    return h, proj, changed


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("D", DIMS)
def test_steer_inject(backend, device, D):
    Tn = 19
    alpha = torch.linspace(-2, 3, Tn, dtype=torch.float64)
    alpha[4] = 0.0
    for dtype in _dtypes(backend):
        for per_row in (False, True):
            for scale, tau in (("relative", None), ("absolute", 0.0)):
                h = rand((Tn, D), dtype, device, seed=7)
                v = rand((Tn, D) if per_row else (D,), dtype, device, seed=8)
                before = h.clone()
                want_h, want_p, changed = _np_steer(f64(h), f64(v), alpha.numpy(), scale == "relative", tau)
                proj = ck.steer_inject_(h, v, alpha.to(device), scale=scale, tau=tau, backend=backend)
                what = f"{dtype} per_row={per_row} {scale} tau={tau}"
                assert proj.shape == (Tn,), what
                np.testing.assert_allclose(f64(proj), want_p, rtol=0, atol=atol(dtype, D), err_msg=what)
                same = torch.from_numpy(~changed)
                assert torch.equal(h.cpu()[same], before.cpu()[same]), what  # untouched rows: same bits
                # written rows: within one rounding of the dtype (plus fp32 arithmetic)
                scale_ = np.abs(want_h).max(axis=1, keepdims=True)
                tol = (RES[dtype] if dtype != torch.float64 else 1e-12) * scale_ + 1e-6 * (dtype != torch.float64) * scale_
                assert np.all(np.abs(f64(h) - want_h) <= tol), what
                assert changed.any() and (~changed).any()


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_steer_algebra(backend, device):
    """repeng-style checks: alpha=0 and tau=-1 change no bit; a then b == a+b; per-row == loop."""
    Tn, D = 9, 33
    h0 = rand((Tn, D), torch.float32, device, seed=9)
    h0[0, 0] = -0.0
    v = rand((D,), torch.float32, device, seed=10)
    bits = lambda x: x.cpu().view(torch.int32)  # noqa: E731
    for scale in ("absolute", "relative"):
        h = h0.clone()
        ck.steer_inject_(h, v, 0.0, scale=scale, backend=backend)
        assert torch.equal(bits(h), bits(h0)), scale
        h = h0.clone()
        p = ck.steer_inject_(h, v, 5.0, scale=scale, tau=-1.0, backend=backend)
        assert torch.equal(bits(h), bits(h0)), scale
        assert float(p.abs().max()) > 0
    # absolute mode: a then b equals a + b (up to float32 rounding of the intermediate)
    h1, h2 = h0.clone(), h0.clone()
    ck.steer_inject_(h1, v, 1.25, scale="absolute", backend=backend)
    ck.steer_inject_(h1, v, -0.5, scale="absolute", backend=backend)
    ck.steer_inject_(h2, v, 0.75, scale="absolute", backend=backend)
    torch.testing.assert_close(h1, h2, rtol=0, atol=4 * 1.2e-7 * float(h0.abs().max() + 2))
    # per-row vectors equal a loop of single-vector injections
    V = rand((Tn, D), torch.float32, device, seed=11)
    alpha = torch.linspace(-1, 2, Tn, device=device)
    hb = h0.clone()
    pb = ck.steer_inject_(hb, V, alpha, scale="relative", tau=0.2, backend=backend)
    for t in range(Tn):
        row = h0[t:t + 1].clone()
        pt = ck.steer_inject_(row, V[t], float(alpha[t]), scale="relative", tau=0.2, backend=backend)
        # same arithmetic; GPU compilers may contract or order it differently: a few ulps
        torch.testing.assert_close(row[0], hb[t], rtol=4 * 1.2e-7, atol=4 * 1.2e-7 * float(h0.abs().max()))
        torch.testing.assert_close(pt[0], pb[t], rtol=4 * 1.2e-7, atol=4 * 1.2e-7)


# ------------------------------------------------------------------ defined edge behaviour
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_edges_zero_empty_nan(backend, device):
    D = 8
    R = rand((3, 5, D), torch.float32, device, seed=12)
    T = rand((3, 4, D), torch.float32, device, seed=13)
    R[0] = 0.0                  # b=0: R's mean is the zero vector -> cos 0
    R[1, 2, 3] = float("nan")   # b=1: NaN propagates to b=1 only
    T[2, 1] = 0.0               # b=2: one zero row: pairs with it have cos 0
    c = ck.set_mean_cosine(R, T, backend=backend).cpu()
    assert c[0] == 0.0 and math.isnan(c[1]) and math.isfinite(c[2])
    st = ck.pairwise_cosine_stats(R, T, threshold=0.0, return_full=True, backend=backend)
    mean, frac, full = st.mean.cpu(), st.frac_below.cpu(), st.full.cpu()
    assert mean[0] == 0.0 and frac[0] == 0.0            # all cosines 0, none below 0
    assert math.isnan(mean[1]) and math.isnan(frac[1])
    assert torch.all(full[2, :, 1] == 0.0) and math.isfinite(mean[2])
    # empty sets -> NaN
    e = torch.empty(3, 0, D, device=device)
    assert torch.isnan(ck.set_mean_cosine(e, T, backend=backend)).all()
    st = ck.pairwise_cosine_stats(R, e, backend=backend)
    assert torch.isnan(st.mean).all() and torch.isnan(st.frac_below).all()
    # pooled tap with no rows / no positions
    assert ck.pooled_tap(torch.empty(0, 3, D, device=device), None, backend=backend).shape == (0, D)
    z = ck.pooled_tap(torch.ones(2, 0, D, device=device), None, "mean", backend=backend)
    assert z.shape == (2, D) and torch.all(z == 0)
    # steering: zero v changes nothing, proj 0; NaN row with a gate is left alone, proj NaN
    h = rand((4, D), torch.float32, device, seed=14)
    h[2] = 0.0
    h[3, 0] = float("nan")
    before = h.clone()
    p = ck.steer_inject_(h, torch.zeros(D, device=device), 2.0, backend=backend).cpu()
    assert torch.equal(h.cpu().nan_to_num(7.0), before.cpu().nan_to_num(7.0))
    assert torch.all(p[:3] == 0)
    p = ck.steer_inject_(h, torch.ones(D, device=device), 2.0, scale="absolute", tau=0.5, backend=backend).cpu()
    assert math.isnan(p[3]) and p[2] == 0.0
    assert torch.isnan(h[3, 0]) and torch.equal(h[3, 1:].cpu(), before[3, 1:].cpu())
    assert torch.all(h[2].cpu() == 2.0 / math.sqrt(D))  # zero h row: cos 0 < 0.5, absolute step
    assert ck.steer_inject_(torch.empty(0, D, device=device), torch.ones(D, device=device), 1.0,
                            backend=backend).shape == (0,)


@pytest.mark.gpu
def test_gpu_huge_sets_match_reference():
    """P = Q = 8192 in tiles: each GPU backend against the (tiled) torch reference on the GPU."""
    B, P, Q, D = 1, 8192, 8192, 256
    R = rand((B, P, D), torch.float32, "cuda", seed=15)
    T = rand((B, Q, D), torch.float32, "cuda", seed=16) + 0.05
    ref = ck.pairwise_cosine_stats(R.double(), T.double(), threshold=0.0, backend="torch")
    for be in ("triton", "cupy"):
        st = ck.pairwise_cosine_stats(R, T, threshold=0.0, backend=be)
        assert abs(float(st.mean[0]) - float(ref.mean[0])) < 1e-5, be
        assert abs(float(st.frac_below[0]) - float(ref.frac_below[0])) < 1e-4, be
        c = ck.set_mean_cosine(R, T, backend=be)
        assert abs(float(c[0]) - float(ck.set_mean_cosine(R.double(), T.double(), backend="torch")[0])) < 1e-5, be


_TRITON_BACKEND_COMPILE = r"""
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import cape_kernels.triton_backend as tb
assert not tb.INTERPRET
target = GPUTarget("cuda", 90, 32)
jobs = [
    (tb._set_finish_kernel, {"part_ptr": "*fp32", "out_ptr": "*fp32", "D": "i32", "NSPLIT": "i32"},
     dict(BLOCK_S=16, BLOCK_D=256)),
    (tb._set_final_kernel, {"fin_ptr": "*fp32", "out_ptr": "*fp32", "NF": "i32"}, dict(BLOCK_F=64)),
]
STEER = {"h_ptr": "*bf16", "v_ptr": "*bf16", "a_ptr": "*fp32", "proj_ptr": "*fp32", "T": "i32", "D": "i32",
         "v_row_stride": "i32", "tau": "fp32"}
for single in (True, False):
    jobs.append((tb._steer_kernel, STEER, dict(RELATIVE=True, GATE=True, SINGLE=single, BLOCK_T=8, BLOCK_D=512)))
for fn, sig, consts in jobs:
    sig = dict(sig, **{k: "constexpr" for k in consts})
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target, options={"num_warps": 4})
    assert ".entry" in k.asm["ptx"]
print("TRITON-BACKEND-SM90-OK")
"""


def test_triton_backend_kernels_compile_for_a_gpu_target():
    """The real Triton kernels that share the safe-cosine helper (set mean cosine, steering) compile
    to PTX for sm_90 without a GPU (the interpreter accepts code the compiler rejects)."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _TRITON_BACKEND_COMPILE], capture_output=True, text=True, env=env,
                       timeout=600)
    if r.returncode and "ptxas" in r.stderr and "not found" in r.stderr:
        pytest.skip("no ptxas in this Triton install")
    assert r.returncode == 0 and "TRITON-BACKEND-SM90-OK" in r.stdout, r.stderr[-3000:]
