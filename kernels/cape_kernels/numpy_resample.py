"""The numpy backend of the N_c resampling kernels, and the numba-free half of ``cape_kernels.resample``.

``cape_kernels.resample`` (numba) and this module are two backends of one API: ``quadratic_nc_boot``,
``quadratic_nc_batch``, ``quadratic_fit`` and ``nc_intervals`` take the same arguments and return
the same values, bit for bit (tests/test_resample_numpy.py checks both against the float64 oracle
``cape_kernels.reference_resample`` and against each other).  Importing this module imports numpy
only: a new process that needs a few hundred thousand resamples is done before numba (about 0.3 s
to import) and its first call to a cached kernel (about 0.4 s more: it imports scipy.linalg) would
have started.  ``resample_backend`` is the rule that picks one.

What is shared (defined here, imported by ``cape_kernels.resample``): the random streams' seed key
and strata layout, the quadratic's features, validity constants and its fit in x, the gamma rule's
codes and the estimator names, and the input checks.  The numba kernels compile GOLDEN,
CURVATURE_RTOL and the gamma codes in, and numba's on-disk cache watches only ``resample.py``: after
changing one of them here, touch ``resample.py`` (the bit-for-bit tests against numba fail until
then).  The solve itself is written twice, once per backend (numba's scalar kernel returns early;
here every lane runs the same expressions under a mask): a plain function shared by both would be
inlined into cached numba kernels from another file, the same blind spot.

How the numpy backend computes the same bits: the resamples of a chunk are the vector lanes.  Draw
``j`` of every resample's SplitMix64 stream is one uint64 array operation over the chunk
(``kr + (j + 1) GOLDEN``, mixed), and the eight running sums add feature row ``rows[:, j]`` to every
lane, for j = 0, 1, ... in order: each lane adds the same numbers in the same order as the numba
kernel's scalar loop (from 0.0), and the vertex rule is the same IEEE expressions, elementwise.
"""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import numpy as np

__all__ = [
    "seed_key",
    "strata_layout",
    "quadratic_nc_boot",
    "quadratic_nc_batch",
    "quadratic_fit",
    "nc_intervals",
    "resample_backend",
    "resample_kernels",
]

_MASK64 = (1 << 64) - 1
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SEED_SALT = 0xD1B54A32D192ED03
# relative threshold on det(normal equations) below which a quadratic fit is singular
SINGULAR_RTOL = 1e-10
# a quadratic whose curvature is rounding noise is not a minimum: valid only when a * var(x) (the
# curvature's size over the resample's spread of x) exceeds CURVATURE_RTOL * rms(y) (the size of
# the fitted scores); identical scores give a ~ 1e-15 from rounding, which `a > 0` alone accepted
CURVATURE_RTOL = 1e-9
# a resample whose spread (sum of squared deviations) is below this fraction of its sum of squares
# about the full-sample mean counts as zero spread: C == 0 (covariance) or a constant column
# (correlation) -> d_eff is NaN
ZERO_SPREAD_RTOL = 1e-10

GAMMA_DEFINED = 0        # codes of gamma_rule
GAMMA_OTHER_FAMILY = 1
GAMMA_EQUAL_N = 2
GAMMA_SMALL_STEP = 3     # |dB1| < min_delta
ATTACH_CODES = {"larger": 0, "smaller": 1, "midpoint": 2}
GAMMA_NC_ESTIMATORS = ("sign-change", "gamma-fit")

#: ``resample_backend``: a call that draws more rows than this (resamples x rows per resample) goes
#: to numba even in a process that has not imported it; at about 4e7 draws/s here, numpy spends
#: about a second on 2**25 draws, the price of numba's import and first call
NUMPY_MAX_DRAWS = 1 << 25
#: resamples per vector chunk (eight float64 sums and a few uint64 temporaries per lane stay in cache)
CHUNK = 1 << 14


def resample_backend(draws: int) -> str:
    """'numba' or 'numpy' for a call drawing ``draws`` rows: numba once it is imported in this
    process (nothing left to pay) or when the call is larger than ``NUMPY_MAX_DRAWS``; numpy
    otherwise.  Both give the same bits, so the choice changes the time only."""
    return "numba" if "numba" in sys.modules or draws > NUMPY_MAX_DRAWS else "numpy"


def resample_kernels(draws: int) -> ModuleType:
    """The module of the backend ``resample_backend(draws)`` picks: ``cape_kernels.resample`` (numba)
    or this one; both have ``quadratic_nc_boot``, ``quadratic_nc_batch``, ``quadratic_fit`` and
    ``nc_intervals``."""
    if resample_backend(draws) == "numpy":
        return sys.modules[__name__]
    return importlib.import_module("cape_kernels.resample")


# ----------------------------------------------------------------------------------------------
# random streams (the numba kernels draw the same rows, ``cape_kernels.resample``)
# ----------------------------------------------------------------------------------------------
def seed_key(seed: int) -> np.uint64:
    """The 64-bit key of a user seed (an int in [0, 2**64)); resample r's stream is seeded by
    mix64(key + (r + 1) * GOLDEN)."""
    try:
        s = int(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}") from None
    if s != seed or s < 0 or s > _MASK64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    z = (s * 0x9E3779B97F4A7C15 + _SEED_SALT) & _MASK64
    # finalise in Python ints (the same function as _mix64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return np.uint64(z ^ (z >> 31))


def strata_layout(strata, n: int | None = None):
    """(members, start, size) arrays for the index kernel.

    ``strata`` None -> one stratum of ``n`` positions.  Otherwise any 1-D array of labels (ints,
    strings): position j's group is {i : strata[i] == strata[j]}; ``members`` lists each group's
    positions in increasing order, ``start[j]``/``size[j]`` locate position j's group in it.
    """
    if strata is None:
        if n is None:
            raise ValueError("resample_indices: pass n= when strata is None (unstratified)")
        n = int(n)
        if n < 1:
            raise ValueError(f"resample_indices: n must be >= 1, got {n}")
        return (np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                np.full(n, n, dtype=np.int64))
    strata = np.asarray(strata)
    if strata.ndim != 1 or strata.size < 1:
        raise ValueError(f"strata must be a non-empty 1-D array, got shape {strata.shape}")
    if n is not None and int(n) != strata.size:
        raise ValueError(f"n={n} does not match len(strata)={strata.size}")
    _, codes = np.unique(strata, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    members = np.argsort(codes, kind="stable").astype(np.int64)
    counts = np.bincount(codes).astype(np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return members, offsets[codes], counts[codes]


def _mix64_(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of uint64[c] ``z`` in place (``t``: scratch of the same shape)."""
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        np.right_shift(z, np.uint64(shift), out=t)
        np.bitwise_xor(z, t, out=z)
        np.multiply(z, np.uint64(mult), out=z)
    np.right_shift(z, np.uint64(31), out=t)
    return np.bitwise_xor(z, t, out=z)


def threads() -> int:
    """Threads one call shares its chunks among: the CPUs this process may run on, no more than
    ``OMP_NUM_THREADS`` when it is set (a Slurm job's share, or one a program sets after importing
    this module: it is read at each call) and no more than :data:`MAX_THREADS`."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:      # not on Linux
        n = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return max(1, min(MAX_THREADS, n))


#: the most threads a call uses (numpy releases the GIL inside each array operation); every chunk is
#: computed by the same code whichever thread runs it, so the results never depend on the count
MAX_THREADS = 4
_POOL: dict = {}


def _run_chunks(work, starts) -> None:
    """``work(r0)`` for every chunk start, on up to :func:`threads` threads (one pool per count)."""
    starts = list(starts)
    n = threads()
    if n < 2 or len(starts) < 2:
        for r0 in starts:
            work(r0)
        return
    if n not in _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL[n] = ThreadPoolExecutor(n, thread_name_prefix="cape-numpy-resample")
    for f in [_POOL[n].submit(work, r0) for r0 in starts]:
        f.result()


def _check_idx(idx, n_rows, name):
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if idx.ndim == 1:
        idx = idx[None, :]
    if idx.ndim != 2:
        raise ValueError(f"{name}: idx must be int64[R, m], got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        raise ValueError(f"{name}: idx values must lie in [0, {n_rows})")
    return idx


def _check_stream(n_resamples, start):
    R = int(n_resamples)
    if R < 0 or int(start) < 0:
        raise ValueError(f"n_resamples and start must be >= 0, got {n_resamples}, {start}")
    return R, int(start)


# ----------------------------------------------------------------------------------------------
# the quadratic N_c (the rule: cape_kernels.resample's module doc and _quad_coef/_quad_vertex)
# ----------------------------------------------------------------------------------------------
def _quad_features(x, y, center=None):
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size < 1:
        raise ValueError(f"quadratic_nc: x and y must be float64[n] of one length, got "
                         f"{x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("quadratic_nc: x and y must be finite")
    xm = float(x.mean()) if center is None else float(center)   # the fit's centre (rounding only)
    t = x - xm
    t2 = t * t
    F = np.ascontiguousarray(np.stack([t, t2, t2 * t, t2 * t2, y, t * y, t2 * y,
                                       y * y], axis=1))  # 8th column: y^2 (the data's scale)
    return F, xm


def _window(lo, hi):
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    return lo, hi


def _quad_coef_v(m, s):
    """(a, b_t) of every lane of the sums s[8, c] over m rows: ``_quad_coef`` elementwise (NaN
    where singular)."""
    S1, S2, S3, S4, T0, T1, T2 = s[0], s[1], s[2], s[3], s[4], s[5], s[6]
    Stt = S2 - S1 * S1 / m
    Stu = S3 - S1 * S2 / m
    Suu = S4 - S2 * S2 / m
    Sty = T1 - S1 * T0 / m
    Suy = T2 - S2 * T0 / m
    det = Stt * Suu - Stu * Stu
    ok = (Stt > 0.0) & (Suu > 0.0) & (det > SINGULAR_RTOL * Stt * Suu)
    a = np.where(ok, (Stt * Suy - Stu * Sty) / det, np.nan)
    b = np.where(ok, (Suu * Sty - Stu * Suy) / det, np.nan)
    return a, b


def _quad_vertex_v(m, s, xm, lo, hi):
    """The vertex rule of every lane of s[8, c] (``_quad_vertex`` elementwise) -> float64[c]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = _quad_coef_v(m, s)
        ok = a > 0.0
        ok &= a * (s[1] - s[0] * s[0] / m) > CURVATURE_RTOL * np.sqrt(m * s[7])
        v = xm - b / (2.0 * a)
    ok &= (v >= lo) & (v <= hi)
    return np.where(ok, v, np.nan)


def _quad_sums(F, columns, c):
    """s[8, c]: the running sums of the feature rows ``F[rows]`` for rows = each array of
    ``columns`` (row j of every lane) in order, from 0.0, as the numba kernel adds them."""
    s = np.zeros((c, F.shape[1]))
    for rows in columns:
        s += np.take(F, rows, axis=0)   # (numpy's take is faster here without out=)
    return s.T


def _stream_columns(key, r0, c, members, gstart, gsize):
    """Rows j = 0, 1, ... of resamples r0 .. r0+c-1 of the stream ``key`` (int64[c] each; one
    buffer, overwritten by the next row)."""
    plain = bool(np.array_equal(members, np.arange(members.shape[0])) and not gstart.any())
    with np.errstate(over="ignore"):
        kr = np.arange(r0 + 1, r0 + c + 1, dtype=np.uint64) * GOLDEN
        kr += key
        t = np.empty_like(kr)
        _mix64_(kr, t)
        u = np.empty_like(kr)
        for j in range(members.shape[0]):
            np.add(kr, np.uint64(j + 1) * GOLDEN, out=u)
            _mix64_(u, t)
            np.right_shift(u, np.uint64(32), out=u)
            np.multiply(u, np.uint64(gsize[j]), out=u)
            np.right_shift(u, np.uint64(32), out=u)
            k = u.view(np.int64)          # < 2**32: the same value
            if plain:                     # one stratum of positions 0..n-1: member k is row k
                yield k
            else:
                np.add(k, gstart[j], out=k)
                yield members[k]


def quadratic_nc_batch(x, y, idx, lo: float = -np.inf, hi: float = np.inf, *, center: float | None = None
                       ) -> np.ndarray:
    """numpy backend of ``cape_kernels.resample.quadratic_nc_batch`` (same arguments, same bits)."""
    F, xm = _quad_features(x, y, center)
    lo, hi = _window(lo, hi)
    idx = _check_idx(idx, F.shape[0], "quadratic_nc_batch")
    R, m = idx.shape
    out = np.empty(R, dtype=np.float64)
    for r0 in range(0, R, CHUNK):
        part = idx[r0:r0 + CHUNK]
        s = _quad_sums(F, (part[:, j] for j in range(m)), part.shape[0])
        out[r0:r0 + part.shape[0]] = _quad_vertex_v(m, s, xm, lo, hi)
    return out


def quadratic_nc_boot(x, y, strata, n_resamples: int, seed: int, lo: float = -np.inf,
                      hi: float = np.inf, *, start: int = 0) -> np.ndarray:
    """numpy backend of ``cape_kernels.resample.quadratic_nc_boot``: resamples start ..
    start+n_resamples-1 of stream ``seed``, drawn and summed a chunk of lanes at a time."""
    F, xm = _quad_features(x, y)
    lo, hi = _window(lo, hi)
    members, gstart, gsize = strata_layout(strata, F.shape[0])
    R, start = _check_stream(n_resamples, start)
    key = seed_key(seed)
    m = members.shape[0]
    out = np.empty(R, dtype=np.float64)

    def chunk(r0):
        c = min(CHUNK, R - r0)
        s = _quad_sums(F, _stream_columns(key, start + r0, c, members, gstart, gsize), c)
        out[r0:r0 + c] = _quad_vertex_v(m, s, xm, lo, hi)

    _run_chunks(chunk, range(0, R, CHUNK))
    return out


def fit_in_x(m: int, s, a: float, bt: float, xm: float) -> tuple[float, float, float, float]:
    """(vertex, a, b, c) in x of the fit (a, b_t) with sums s over all m points centred at xm: the
    finish of ``quadratic_fit`` (both backends).  All NaN when singular; a curvature that is
    rounding noise is reported as a = 0 with a NaN vertex."""
    if not np.isfinite(a):
        return (np.nan,) * 4
    if not abs(a) * (s[1] - s[0] * s[0] / m) > CURVATURE_RTOL * np.sqrt(m * s[7]):
        a = 0.0
    ct = (s[4] - a * s[1] - bt * s[0]) / m
    b = bt - 2.0 * a * xm
    c = ct - bt * xm + a * xm * xm
    v = xm - bt / (2.0 * a) if a != 0.0 else np.nan
    return float(v), float(a), float(b), float(c)


def quadratic_fit(x, y) -> tuple[float, float, float, float]:
    """numpy backend of ``cape_kernels.resample.quadratic_fit`` (same bits)."""
    F, xm = _quad_features(x, y)
    m = F.shape[0]
    s = _quad_sums(F, (np.array([i]) for i in range(m)), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a, bt = _quad_coef_v(m, s)
    return fit_in_x(m, s[:, 0], float(a[0]), float(bt[0]), xm)


# ----------------------------------------------------------------------------------------------
# the gamma rule's defined intervals of the full sample (cape_kernels.resample._gamma_step)
# ----------------------------------------------------------------------------------------------
def _gamma_inputs(fam, size, b1, b2):
    fam = np.ascontiguousarray(fam, dtype=np.int64).reshape(-1)
    size = np.ascontiguousarray(size, dtype=np.float64).reshape(-1)
    b1 = np.ascontiguousarray(b1, dtype=np.float64).reshape(-1)
    b2 = np.ascontiguousarray(b2, dtype=np.float64).reshape(-1)
    if not fam.shape == size.shape == b1.shape == b2.shape:
        raise ValueError(f"gamma rule: family, size, b1 and b2 must be [n] of one length, got "
                         f"{fam.shape}, {size.shape}, {b1.shape}, {b2.shape}")
    return fam, size, b1, b2


def nc_intervals(fam, logn, b1, b2, min_delta: float) -> tuple[np.ndarray, np.ndarray]:
    """numpy backend of ``cape_kernels.resample.nc_intervals``: (x_mid, gamma) of the defined
    intervals between consecutive models (arrays sorted by (family, N)); the gamma rule's tests in
    its order (other family, equal N, |dB1| < min_delta), elementwise."""
    fam, logn, b1, b2 = _gamma_inputs(fam, logn, b1, b2)
    d1 = b1[1:] - b1[:-1]
    ok = (fam[1:] == fam[:-1]) & ~(logn[1:] == logn[:-1]) & ~(np.abs(d1) < float(min_delta))
    if np.any(d1[ok] == 0.0):
        raise ZeroDivisionError("division by zero")   # as the numba kernel (Python's error model)
    xs = 0.5 * (logn[:-1] + logn[1:])
    return xs[ok], (b2[1:] - b2[:-1])[ok] / d1[ok]
