"""The numpy backend of the N_c resampling kernels (cape_kernels.numpy_resample): against the float64
oracle (cape_kernels.reference_resample) on odd shapes, bit for bit against the numba backend
(cape_kernels.resample), and the rule that picks one (numba is never imported by the numpy path)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from cape_kernels import numpy_resample as NP
from cape_kernels import resample as NB
from cape_kernels.reference_resample import gamma_rule_ref, quadratic_nc_batch_ref, resample_indices_ref

STRATA = [
    None,
    np.array([0, 0, 0]),                                    # the smallest fit
    np.array([3, 3, 1, 3, 7, 1, 1, 3, 9]),                  # singleton strata, unsorted labels
    np.array(list("abcab" "ccaab" "c")),                    # string labels
    np.repeat(np.arange(16), 4)[:63],                       # 16 families, one of size 3
]
# resample counts: one, a prime, past one vector chunk (a partial last chunk)
COUNTS = [1, 17, NP.CHUNK + 3]


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(7.0, 11.0, n))
    y = rng.normal(50.0, 10.0, n) + 4.0 * (x - 9.0) ** 2
    return x, y


def _n(strata, default=11):
    return default if strata is None else len(strata)


@pytest.mark.parametrize("strata", STRATA, ids=lambda s: "plain" if s is None else f"n{len(s)}")
@pytest.mark.parametrize("R", COUNTS)
def test_boot_matches_the_oracle(strata, R):
    n = _n(strata)
    x, y = _data(n)
    got = NP.quadratic_nc_boot(x, y, strata, R, 2**64 - 1, 8.0, 10.5, start=5)
    ref = quadratic_nc_batch_ref(x, y, resample_indices_ref(strata, R, 2**64 - 1, n=n, start=5), 8.0, 10.5)
    assert got.shape == (R,)
    ok = np.isfinite(ref)
    # invalid fits agree, except a vertex within rounding of the window's edge (np.polyfit differs in the last bits)
    edge = np.isclose(np.nan_to_num(ref, nan=0.0), 8.0, atol=1e-9) | np.isclose(np.nan_to_num(ref), 10.5, atol=1e-9)
    assert np.array_equal(np.isfinite(got) | edge, ok | edge)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("strata", STRATA, ids=lambda s: "plain" if s is None else f"n{len(s)}")
@pytest.mark.parametrize("R", COUNTS)
def test_boot_and_batch_equal_numba_bit_for_bit(strata, R):
    n = _n(strata)
    x, y = _data(n, 1)
    want = NB.quadratic_nc_boot(x, y, strata, R, 12345, 8.0, 10.5, start=3)
    got = NP.quadratic_nc_boot(x, y, strata, R, 12345, 8.0, 10.5, start=3)
    assert got.tobytes() == want.tobytes()
    idx = NB.resample_indices(strata, R, 12345, n=n, start=3)
    assert NP.quadratic_nc_batch(x, y, idx, 8.0, 10.5).tobytes() == want.tobytes()
    assert (NP.quadratic_nc_batch(x, y, idx, center=9.0).tobytes()
            == NB.quadratic_nc_batch(x, y, idx, center=9.0).tobytes())


def test_threads_follow_omp_num_threads_and_never_change_a_result(monkeypatch):
    """A Slurm job's or a sweep rank's OMP_NUM_THREADS bounds the chunk threads (never above the
    CPUs), read at each call (a sweep sets it after the import); any count gives the same bytes."""
    import os

    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert NP.threads() == min(NP.MAX_THREADS, cpus)
    x, y = _data(40, 2)
    out = {}
    for env, cap in (("1", 1), ("3", 3), ("64", 64), ("", None), ("two", None)):
        monkeypatch.setenv("OMP_NUM_THREADS", env)
        assert NP.threads() == min(NP.MAX_THREADS, cpus, cap or cpus)
        out[env] = NP.quadratic_nc_boot(x, y, None, 3 * NP.CHUNK + 5, 7, 8.0, 10.5).tobytes()
    assert len(set(out.values())) == 1


def test_degenerate_resamples_follow_the_same_rules():
    """Fewer than 3 distinct x (singular), equal scores (curvature below rounding), a concave fit
    and a vertex outside the window: NaN on both backends, in the same lanes."""
    x = np.array([8.0, 8.0, 9.0, 9.5, 10.0, 10.0])
    flat = np.full(6, 42.0)
    concave = -(x - 9.0) ** 2
    convex = (x - 9.2) ** 2
    idx = NB.resample_indices(None, 500, 9, n=6)
    for y, lo, hi in ((flat, -np.inf, np.inf), (concave, -np.inf, np.inf), (convex, 9.3, 11.0), (convex, 8, 11)):
        a = NP.quadratic_nc_batch(x, y, idx, lo, hi)
        assert a.tobytes() == NB.quadratic_nc_batch(x, y, idx, lo, hi).tobytes()
    assert np.all(np.isnan(NP.quadratic_nc_batch(x, flat, idx)))
    assert np.all(np.isnan(NP.quadratic_nc_batch(x, concave, idx)))
    assert np.isnan(NP.quadratic_nc_batch(x, convex, np.arange(6), 9.3, 11.0)[0])
    assert NP.quadratic_nc_batch(x, convex, np.arange(6))[0] == pytest.approx(9.2, rel=1e-12)


@pytest.mark.parametrize("n", [3, 7, 61])
def test_full_fit_and_intervals_equal_numba(n):
    x, y = _data(n, 2)
    assert NP.quadratic_fit(x, y) == NB.quadratic_fit(x, y)
    a, b, c = np.polyfit(x, y, 2)
    v, ka, kb, kc = NP.quadratic_fit(x, y)
    np.testing.assert_allclose([ka, kb, kc, v], [a, b, c, -b / (2 * a)], rtol=1e-8)
    fam = np.repeat(np.arange(3), n)[:n]
    logn = x.copy()
    logn[1] = logn[0]                       # equal N: undefined
    b1 = y / 7.0
    b1[-1] = b1[-2] + 1e-3                  # |dB1| < min_delta: undefined
    b2 = np.cos(y)
    xs, gs = NP.nc_intervals(fam, logn, b1, b2, 0.01)
    wx, wg = NB.nc_intervals(fam, logn, b1, b2, 0.01)
    assert xs.tobytes() == wx.tobytes() and gs.tobytes() == wg.tobytes()
    gam, code = gamma_rule_ref(fam, logn, b1, b2, 0.01)
    np.testing.assert_array_equal(gs, gam[code == 0])
    np.testing.assert_array_equal(xs, (0.5 * (logn[:-1] + logn[1:]))[code == 0])


def test_input_errors_are_the_numba_backends():
    x, y = _data(5)
    with pytest.raises(ValueError, match="finite"):
        NP.quadratic_nc_boot(x, np.where(y > 50, np.nan, y), None, 3, 0)
    with pytest.raises(ValueError, match="idx values"):
        NP.quadratic_nc_batch(x, y, np.array([[0, 1, 5]]))
    with pytest.raises(ValueError, match="seed"):
        NP.quadratic_nc_boot(x, y, None, 3, -1)
    assert NP.quadratic_nc_boot(x, y, None, 0, 0).shape == (0,)


def test_the_rule_and_that_the_numpy_path_imports_no_numba():
    """``resample_backend``: numpy for small work in a process without numba; numba past
    NUMPY_MAX_DRAWS or once numba is imported.  The numpy backend itself imports no numba."""
    code = ("import sys, json\n"
            "from cape_kernels import numpy_resample as K\n"
            "import numpy as np\n"
            "x = np.linspace(8, 10, 9); K.quadratic_nc_boot(x, (x - 9) ** 2, None, 100, 0)\n"
            "out = [K.resample_backend(10 ** 6), K.resample_backend(K.NUMPY_MAX_DRAWS + 1),"
            " K.resample_kernels(10).__name__, 'numba' in sys.modules]\n"
            "import numba\n"
            "out += [K.resample_backend(10), K.resample_kernels(10).__name__]\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["numpy", "numba", "cape_kernels.numpy_resample", False,
                                       "numba", "cape_kernels.resample"]
