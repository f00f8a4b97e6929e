"""The streaming ops (``cape_kernels.streaming``) on every backend against float64 numpy oracles.

``pool_accumulate_``: odd shapes (B = 1, 3, 7; S = 1, 5, 13; D = 1, 31, 65, 130; G = 1, 3, 5),
slots with repeats, -1 and >= G, left padding, holes and fully masked rows, every input dtype and
both sums dtypes, sums that start nonzero.  ``count_pairs_below``: random rows checked inside a
window of the threshold (pairs within the arithmetic's error of it may go either way, no others),
and constructed rows whose cosines are exactly -1, -0.5, 0, 0.5, 1 on shapes at and around every
backend's tile sizes, checked exactly (ties are not below).  On a CPU-only machine the Triton
kernels run in the interpreter (TRITON_INTERPRET=1, set below before they are first imported, as
in test_kernels_ops.py); the CUDA cases carry the ``gpu`` marker.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch

from kernel_backends import BACKENDS  # noqa: E402  (sets TRITON_INTERPRET first)

import cape_kernels as ck  # noqa: E402
from cape_kernels import streaming as st  # noqa: E402
from cape_kernels.reference_streaming import np_cosines, np_count_pairs_below, np_pool_accumulate  # noqa: E402


HIDDEN_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
EPS = {torch.float32: 1.2e-7, torch.float64: 2.3e-16}


def _f64(x):
    return x.detach().to("cpu", torch.float64).numpy()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ pool_accumulate_
POOL_CASES = [  # B, S, D, G
    (1, 1, 1, 1), (3, 5, 31, 3), (7, 13, 65, 5), (7, 5, 130, 3), (3, 13, 1, 5), (1, 5, 130, 1),
    (7, 1, 31, 1), (3, 13, 130, 5),
]


def _mask(B, S, kind, g):
    if kind == "none":
        return None
    m = torch.ones(B, S, dtype=torch.long)
    for b in range(B):
        if kind == "left":      # left padding, as the batches of the internals pass
            m[b, : int(torch.randint(0, S, (1,), generator=g))] = 0
        elif kind == "holes":   # arbitrary holes, a fully masked row when B > 1
            m[b] = (torch.rand(S, generator=g) < 0.6).long()
    if kind == "holes" and B > 1:
        m[1] = 0
    return m


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", ["last", "mean"])
def test_pool_accumulate_matches_float64_oracle(backend, device, mode):
    for ci, (B, S, D, G) in enumerate(POOL_CASES):
        g = _gen(100 + ci)
        for di, dtype in enumerate(HIDDEN_DTYPES):
            sdt = (torch.float32, torch.float64)[(ci + di) % 2]
            kind = ("none", "left", "holes")[(ci + di) % 3]
            h = torch.randn(B, S, D, generator=g, dtype=torch.float64).to(dtype)
            m = _mask(B, S, kind, g)
            slot = torch.randint(-1, G + 1, (B,), generator=g)  # repeats, -1 and G (not accumulated)
            sums0 = torch.randn(G, D, generator=g, dtype=torch.float64).to(sdt)
            units0 = torch.randn(G, D, generator=g, dtype=torch.float64).to(sdt)
            sums, units = sums0.clone().to(device), units0.clone().to(device)
            pooled = ck.pool_accumulate_(h.to(device), None if m is None else m.to(device), mode,
                                         slot.to(device), sums, units, backend=backend)
            wp, ws, wu = np_pool_accumulate(_f64(h), None if m is None else m.numpy(), mode, slot.numpy(),
                                            _f64(sums0), _f64(units0))
            what = f"B={B} S={S} D={D} G={G} {dtype} sums {sdt} mask {kind}"
            assert pooled.dtype == (torch.float64 if dtype == torch.float64 else torch.float32), what
            assert pooled.shape == (B, D) and sums.dtype == sdt and units.dtype == sdt, what
            assert pooled.device.type == device and sums.device.type == device
            eps_p = EPS[pooled.dtype]
            tol_p = 0.0 if mode == "last" else 4 * eps_p * S * float(np.abs(_f64(h)).max())
            np.testing.assert_allclose(_f64(pooled), wp, rtol=0, atol=tol_p, err_msg=what)
            eps = max(EPS[sdt], eps_p)
            scale = 1.0 + float(np.abs(ws).max())
            np.testing.assert_allclose(_f64(sums), ws, rtol=0, atol=B * tol_p + 4 * eps * (B + 1) * scale,
                                       err_msg=what)
            # a unit vector moves by at most ~2 |dp| / |p|; every pooled row here has |p| > 0.05
            nrm = np.linalg.norm(wp, axis=1)
            rel = 2 * tol_p / max(nrm[nrm > 0].min(), 0.05) if (nrm > 0).any() else 0.0
            np.testing.assert_allclose(_f64(units), wu, rtol=0,
                                       atol=B * rel + 8 * eps * (B + 1) * (1.0 + float(np.abs(wu).max())),
                                       err_msg=what)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_pool_accumulate_edges(backend, device):
    D = 6
    sums = torch.ones(3, D, dtype=torch.float64, device=device)
    units = torch.ones(3, D, dtype=torch.float64, device=device)
    # B == 0: an empty result, the sums unchanged
    out = ck.pool_accumulate_(torch.empty(0, 4, D, device=device), None, "mean",
                              torch.empty(0, dtype=torch.long, device=device), sums, units, backend=backend)
    assert out.shape == (0, D) and torch.all(sums == 1) and torch.all(units == 1)
    # a zero row adds 0 to both; a fully masked row pools to 0; a NaN row poisons only its slot;
    # a NaN row with slot -1 adds nothing anywhere
    h = torch.randn(5, 4, D, generator=_gen(3)).to(device)
    h[0] = 0.0
    h[2, 3, 1] = float("nan")
    h[3, 3, 0] = float("nan")
    m = torch.ones(5, 4, dtype=torch.bool, device=device)
    m[1] = False
    slot = torch.tensor([0, 0, 1, -1, 2], device=device)
    for mode in ("last", "mean"):
        s = torch.zeros(3, D, device=device)
        u = torch.zeros(3, D, device=device)
        p = ck.pool_accumulate_(h, m, mode, slot, s, u, backend=backend).cpu()
        s, u = s.cpu(), u.cpu()
        assert torch.all(p[0] == 0) and torch.all(p[1] == 0), mode
        assert torch.all(s[0] == 0) and torch.all(u[0] == 0), mode        # zero rows add 0
        assert torch.isnan(s[1, 1]) and torch.isnan(u[1]).all(), mode      # NaN row -> its slot NaN
        assert torch.isfinite(s[2]).all() and torch.isfinite(u[2]).all(), mode  # slot -1 row added nowhere
        torch.testing.assert_close(u[2].norm(), torch.tensor(1.0), rtol=1e-6, atol=1e-6)
    # no positions at all (S == 0): zeros, nothing changes
    s = torch.zeros(2, D, device=device)
    p = ck.pool_accumulate_(torch.ones(2, 0, D, device=device), None, "mean",
                            torch.zeros(2, dtype=torch.long, device=device), s, None, backend=backend)
    assert p.shape == (2, D) and torch.all(p == 0) and torch.all(s == 0)


def test_pool_accumulate_rejects_bad_arguments():
    h = torch.randn(3, 4, 5)
    s = torch.zeros(2, 5)
    slot = torch.zeros(3, dtype=torch.long)
    call = ck.pool_accumulate_
    with pytest.raises(ValueError, match="hidden must be \\[B, S, D\\]"):
        call(h[0], None, "last", slot, s)
    with pytest.raises(ValueError, match="hidden must be float16"):
        call(h.long(), None, "last", slot, s)
    with pytest.raises(ValueError, match="mode must be"):
        call(h, None, "max", slot, s)
    with pytest.raises(ValueError, match="mask must be \\[B, S\\]"):
        call(h, torch.ones(3, 5), "last", slot, s)
    with pytest.raises(ValueError, match="slot must be \\[B\\]"):
        call(h, None, "last", slot[:2], s)
    with pytest.raises(ValueError, match="slot must be an integer"):
        call(h, None, "last", slot.float(), s)
    with pytest.raises(ValueError, match="sums must be float32 or float64"):
        call(h, None, "last", slot, s.half())
    with pytest.raises(ValueError, match="sums must be \\[G, D\\] with D = 5"):
        call(h, None, "last", slot, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="contiguous"):
        call(h, None, "last", slot, torch.zeros(5, 2).T)
    with pytest.raises(ValueError, match="unit_sums .* must match"):
        call(h, None, "last", slot, s, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="different tensors"):
        call(h, None, "last", slot, s, s)
    with pytest.raises(ValueError, match="backend must be one of"):
        call(h, None, "last", slot, s, backend="gpu")


# ------------------------------------------------------------------ count_pairs_below
def _pair_dtypes(backend, device):
    return [torch.float32, torch.float16, torch.bfloat16] + ([torch.float64] if device == "cpu" and backend != "triton" else [])


def _window_check(got, A, B, thr, ag, bg, G, w, what):
    C = np_cosines(_f64(A), _f64(B))
    lo = np_count_pairs_below(None, None, thr - w, ag, bg, G, cos=C)
    # exact ties (zero rows: cosine exactly 0) are computed exactly by every backend: not below
    hi = np_count_pairs_below(None, None, thr + w, ag, bg, G, cos=np.where(C == thr, np.inf, C))
    got = got.cpu().numpy()
    assert got.dtype == np.int64 and got.shape == (G, G), what
    assert np.all(lo <= got) and np.all(got <= hi), f"{what}\ngot {got}\nlo {lo}\nhi {hi}"
    assert (hi - lo).sum() <= 0.01 * C.size + 2, what  # the window is narrow: the check has teeth


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_count_pairs_matches_float64_oracle(backend, device):
    cases = [(1, 1, 1, 1), (7, 5, 31, 3), (40, 33, 65, 5), (3, 70, 130, 3), (65, 17, 1, 1)]
    for ci, (n, m, D, G) in enumerate(cases):
        g = _gen(200 + ci)
        for dtype in _pair_dtypes(backend, device):
            A = torch.randn(n, D, generator=g, dtype=torch.float64).to(dtype)
            B = (torch.randn(m, D, generator=g, dtype=torch.float64) + 0.2).to(dtype)
            if n > 2:
                A[2] = 0.0  # a zero row: cosine 0 with everything
            ag = torch.randint(-1, G + 1, (n,), generator=g)
            bg = torch.randint(0, G, (m,), generator=g)
            w = 1e-12 if dtype == torch.float64 else 2e-6 * (1 + math.log2(D))
            for thr, grouped in ((-0.5, True), (0.0, False), (0.3, True)):
                kw = dict(a_groups=ag.to(device), b_groups=bg.to(device), n_groups=G) if grouped else {}
                got = ck.count_pairs_below(A.to(device), B.to(device), thr, backend=backend, **kw)
                assert got.device.type == device
                _window_check(got, A, B, thr, ag.numpy() if grouped else None,
                              bg.numpy() if grouped else None, G if grouped else 1, w,
                              f"n={n} m={m} D={D} G={G} {dtype} thr={thr} grouped={grouped}")


_EXACT_B = np.array([[-1, 1, 1, 1], [0, 1, 0, 0], [1, 1, 1, 1], [-1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0],
                     [-2, 2, 2, 2]], dtype=np.float64)  # cos with e1: -0.5, 0, 0.5, -1, 0 (zero row), 1, -0.5


def _exact_rows(n, m, seed):
    """A: rows +-2^k e1; B: rows from _EXACT_B times 2^k: every cosine is exactly -1, -0.5, 0, 0.5
    or 1 in any float format, so counts against those thresholds are exact (ties are not below)."""
    r = np.random.default_rng(seed)
    A = np.zeros((n, 4))
    A[:, 0] = r.choice([0.5, 1.0, 4.0], n)
    B = _EXACT_B[r.integers(0, len(_EXACT_B), m)] * r.choice([0.25, 1.0, 8.0], m)[:, None]
    return A, B


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_count_pairs_exact_ties_at_tile_boundaries(backend, device):
    # tiles: torch 256 x 256, numba 32 x 128, Triton interpreter 32 x 32, CUDA 64..128: sizes at
    # and around each, thresholds equal to attained cosines
    sizes = [(31, 33), (32, 128), (129, 65), (257, 255), (256, 257)]
    if backend == "triton" and device == "cpu":
        sizes = [(31, 33), (32, 64), (65, 97)]  # the interpreter is slow
    for si, (n, m) in enumerate(sizes):
        A, B = _exact_rows(n, m, si)
        ag = np.arange(n) % 3 - (np.arange(n) % 7 == 0)  # includes -1
        bg = np.arange(m) % 4                          # includes 3 >= G: not counted
        C = np_cosines(A, B)
        assert set(np.unique(C)) <= {-1.0, -0.5, 0.0, 0.5, 1.0}
        for dtype in (torch.float32, (torch.float16, torch.bfloat16)[si % 2]):
            At, Bt = torch.tensor(A).to(dtype).to(device), torch.tensor(B).to(dtype).to(device)
            for thr in (-0.5, 0.0, 0.5):
                want = np_count_pairs_below(None, None, thr, ag, bg, 3, cos=C)
                got = ck.count_pairs_below(At, Bt, thr, a_groups=torch.tensor(ag).to(device),
                                           b_groups=torch.tensor(bg).to(device), n_groups=3, backend=backend)
                assert np.array_equal(got.cpu().numpy(), want), (n, m, dtype, thr, got, want)
            for thr in (-1.0, 0.0, 1.0):
                tot = ck.count_pairs_below(At, Bt, thr, backend=backend)
                assert int(tot.cpu()[0, 0]) == int((C < thr).sum()), (n, m, dtype, thr)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_count_pairs_edges(backend, device):
    D = 5
    A = torch.randn(4, D, generator=_gen(5)).to(device)
    z = torch.empty(0, D, device=device)
    for X, Y in ((z, A), (A, z), (z, z)):
        c = ck.count_pairs_below(X, Y, 0.5, n_groups=3, backend=backend)
        assert c.shape == (3, 3) and c.dtype == torch.int64 and int(c.abs().sum()) == 0
    # a NaN row is never below; a zero row has cosine 0 (below 0.5, not below 0)
    B = torch.randn(3, D, generator=_gen(6)).to(device)
    A[1, 2] = float("nan")
    A[3] = 0.0
    C = np_cosines(_f64(A), _f64(B))
    for thr in (0.0, 0.5, 2.0):
        got = int(ck.count_pairs_below(A, B, thr, backend=backend).cpu()[0, 0])
        assert got == int((C < thr).sum()), thr
    assert int(ck.count_pairs_below(A, B, 2.0, backend=backend).cpu()[0, 0]) == 9  # 3 NaN pairs excluded
    assert int(ck.count_pairs_below(A, B, -1.0, backend=backend).cpu()[0, 0]) == 0


def test_count_pairs_rejects_bad_arguments():
    A, B = torch.randn(3, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="same D"):
        ck.count_pairs_below(A, torch.randn(2, 5), 0.0)
    with pytest.raises(ValueError, match="2-D"):
        ck.count_pairs_below(A[None], B, 0.0)
    with pytest.raises(ValueError, match="n_groups must be an int >= 1"):
        ck.count_pairs_below(A, B, 0.0, n_groups=0)
    with pytest.raises(ValueError, match="a_groups must be \\[3\\]"):
        ck.count_pairs_below(A, B, 0.0, a_groups=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="b_groups must be an integer"):
        ck.count_pairs_below(A, B, 0.0, b_groups=torch.zeros(2))
    with pytest.raises(ValueError, match="threshold must be a Python number"):
        ck.count_pairs_below(A, B, torch.tensor(0.0))
    with pytest.raises(ValueError, match="A must be float16"):
        ck.count_pairs_below(A.long(), B, 0.0)


# ------------------------------------------------------------------ numba: thread count, torch.compile
def test_numba_results_do_not_depend_on_the_thread_count():
    numba = pytest.importorskip("numba")
    g = _gen(7)
    h = (torch.randn(64, 3, 70, generator=g) * torch.logspace(-3, 3, 64)[:, None, None]).float()
    slot = torch.randint(0, 3, (64,), generator=g)
    A, B = torch.randn(300, 33, generator=g), torch.randn(400, 33, generator=g)
    ag, bg = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (400,), generator=g)
    old = numba.get_num_threads()
    outs = []
    try:
        for t in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(t)
            s, u = torch.zeros(3, 70), torch.zeros(3, 70)
            p = ck.pool_accumulate_(h, None, "mean", slot, s, u, backend="numba")
            c = ck.count_pairs_below(A, B, 0.1, a_groups=ag, b_groups=bg, n_groups=4, backend="numba")
            outs.append((p, s, u, c))
    finally:
        numba.set_num_threads(old)
    for x, y in zip(outs[0], outs[-1]):
        assert torch.equal(x, y)  # bit for bit


def test_ops_registered_and_compile_fullgraph():
    g = _gen(8)
    h = torch.randn(4, 6, 9, generator=g)
    m = torch.ones(4, 6, dtype=torch.bool)
    m[0, :2] = False
    slot = torch.tensor([0, 1, 1, -1])
    A, B = torch.randn(5, 9, generator=g), torch.randn(7, 9, generator=g)
    ag = torch.tensor([0, 1, 0, 1, 1])
    torch.library.opcheck(torch.ops.cape.pool_accumulate_.default,
                          (h, m, "mean", slot, torch.zeros(2, 9), torch.zeros(2, 9), "torch"))
    torch.library.opcheck(torch.ops.cape.count_pairs_below.default, (A, B, 0.1, ag, None, 2, "torch"))

    def f(h, m, slot, s, u, A, B):
        p = ck.pool_accumulate_(h, m, "last", slot, s, u)
        return p * 2, ck.count_pairs_below(A, B, 0.1, a_groups=ag, n_groups=2)

    s1, u1, s2, u2 = (torch.zeros(2, 9) for _ in range(4))
    want = f(h, m, slot, s1, u1, A, B)
    got = torch.compile(f, fullgraph=True)(h, m, slot, s2, u2, A, B)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(s2, s1)  # the in-place adds survive compilation
    torch.testing.assert_close(u2, u1)
    assert float(s2.abs().sum()) > 0


# ------------------------------------------------------------------ CUDA C source, GPU-only checks
def test_cuda_streaming_source_compiles():
    pytest.importorskip("cupy")
    from cape_kernels.cupy_backend import compile_ptx
    from cape_kernels.cupy_streaming import KERNELS, source

    try:
        ptx = compile_ptx(source(), "streaming.cu")
    except RuntimeError as exc:
        if "no CUDA compiler" in str(exc) or "unavailable" in str(exc):
            pytest.skip(str(exc))
        raise
    assert set(KERNELS) <= set(re.findall(r"\.entry\s+(\w+)", ptx))


_TRITON_COMPILE = r"""
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import cape_kernels.triton_streaming as ts
assert not ts.INTERPRET
target = GPUTarget("cuda", 90, 32)
POOL = {"h_ptr": "*bf16", "m_ptr": "*u8", "slot_ptr": "*i64", "sums_ptr": "*fp32", "units_ptr": "*fp32",
        "out_ptr": "*fp32", "S": "i32", "D": "i32", "G": "i32"}
CNT = {"a_ptr": "*fp16", "b_ptr": "*fp16", "ga_ptr": "*i64", "gb_ptr": "*i64", "cnt_ptr": "*i64", "n": "i32",
       "m": "i32", "D": "i32", "G": "i32", "thr": "fp32"}
jobs = [
    (ts._pool_acc_kernel, POOL, dict(HAS_MASK=True, MEAN=True, UNITS=True, SINGLE=False, BLOCK_S=8,
                                     BLOCK_D=1024, ACC=tl.float32, SUM=tl.float32)),
    (ts._pool_acc_kernel, dict(POOL, h_ptr="*fp64", sums_ptr="*fp64", units_ptr="*fp64", out_ptr="*fp64"),
     dict(HAS_MASK=False, MEAN=False, UNITS=True, SINGLE=True, BLOCK_S=16, BLOCK_D=4096, ACC=tl.float64,
          SUM=tl.float64)),
    (ts._count_kernel, CNT, dict(GROUPED=True, IEEE=False, UPCAST=False, BM=128, BN=128, BK=32, GC=32,
                                 HOT=tl.float16, HOT32=False)),
    (ts._count_kernel, dict(CNT, a_ptr="*fp32", b_ptr="*fp32"),
     dict(GROUPED=False, IEEE=True, UPCAST=False, BM=64, BN=64, BK=32, GC=16, HOT=tl.float16, HOT32=False)),
]
for fn, sig, consts in jobs:
    sig = dict(sig, **{k: "constexpr" for k in consts})
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                       options={"num_warps": 8})
    assert ".entry" in k.asm["ptx"]
print("TRITON-SM90-OK")
"""


def test_triton_kernels_compile_for_a_gpu_target():
    """The real (not interpreted) Triton kernels compile to PTX for sm_90 without a GPU: the
    interpreter accepts code the compiler rejects (dtypes of atomics, dot shapes, constexprs)."""
    pytest.importorskip("triton")
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    r = subprocess.run([sys.executable, "-c", _TRITON_COMPILE], capture_output=True, text=True, env=env,
                       timeout=600)
    if r.returncode and "ptxas" in r.stderr and "not found" in r.stderr:
        pytest.skip("no ptxas in this Triton install")
    assert r.returncode == 0 and "TRITON-SM90-OK" in r.stdout, r.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton", "cupy"])
def test_gpu_no_host_sync_and_large_counts(backend):
    dev = "cuda"
    g = _gen(9)
    h = torch.randn(64, 37, 576, generator=g).to(dev, torch.bfloat16)
    m = torch.ones(64, 37, dtype=torch.bool, device=dev)
    m[::3, :5] = False
    slot = torch.randint(-1, 8, (64,), generator=g).to(dev)
    A = torch.randn(333, 576, generator=g).to(dev, torch.float16)
    B = (torch.randn(5000, 576, generator=g) + 0.02).to(dev, torch.float16)
    ag = torch.randint(0, 20, (333,), generator=g).to(dev)
    bg = torch.randint(0, 20, (5000,), generator=g).to(dev)
    s = torch.zeros(8, 576, device=dev)
    u = torch.zeros(8, 576, device=dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for mode in ("last", "mean"):
            p = ck.pool_accumulate_(h, m, mode, slot, s, u, backend=backend)
        c = ck.count_pairs_below(A, B, 0.0, a_groups=ag, b_groups=bg, n_groups=20, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert p.device.type == "cuda" and c.device.type == "cuda"
    s_ref, u_ref = torch.zeros(8, 576, dtype=torch.float64), torch.zeros(8, 576, dtype=torch.float64)
    for mode in ("last", "mean"):
        _, s_ref2, u_ref2 = np_pool_accumulate(_f64(h), m.cpu().numpy(), mode, slot.cpu().numpy(),
                                               s_ref.numpy(), u_ref.numpy())
        s_ref, u_ref = torch.from_numpy(s_ref2), torch.from_numpy(u_ref2)
    torch.testing.assert_close(s.cpu().double(), s_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(u.cpu().double(), u_ref, rtol=1e-4, atol=1e-4)
    _window_check(c, A, B, 0.0, ag.cpu().numpy(), bg.cpu().numpy(), 20, 1e-4, backend)
    if backend != "torch":
        assert st.resolve_backend(None, dev) in ("triton", "cupy")


def test_numba_serial_and_parallel_paths_agree_bit_for_bit(monkeypatch):
    """Small calls run a serial twin of the parallel kernels: the same additions in the same order."""
    pytest.importorskip("numba")
    from cape_kernels import numba_streaming as nbs

    g = _gen(11)
    h = torch.randn(9, 5, 70, generator=g)
    mask = (torch.rand(9, 5, generator=g) > 0.3).long()
    slot = torch.randint(-1, 3, (9,), generator=g)
    A, B = torch.randn(70, 33, generator=g), torch.randn(90, 33, generator=g)
    ag, bg = torch.randint(0, 3, (70,), generator=g), torch.randint(0, 3, (90,), generator=g)
    outs = []
    for serial_below, count_chunks in ((1 << 30, 1), (0, 2)):
        monkeypatch.setattr(nbs, "SERIAL_BELOW", serial_below)
        monkeypatch.setattr(nbs, "COUNT_SERIAL_BELOW", serial_below)
        monkeypatch.setattr(nbs.numba, "get_num_threads", lambda: count_chunks)
        res = []
        for mode in ("last", "mean"):
            s, u = torch.zeros(3, 70, dtype=torch.float64), torch.zeros(3, 70, dtype=torch.float64)
            res += [nbs.pool_accumulate_(h, mask, mode, slot, s, u), s, u]
        res.append(nbs.count_pairs_below(A, B, 0.05, ag, bg, 3))
        outs.append(res)
    for x, y in zip(*outs):
        assert torch.equal(x, y)
    ref = np_count_pairs_below(A.double().numpy(), B.double().numpy(), 0.05, ag.numpy(), bg.numpy(), 3)
    assert np.array_equal(np.asarray(ref), outs[0][-1].numpy())
