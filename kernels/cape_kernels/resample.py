"""Resampling kernels (numba, CPU): counter-based bootstrap indices and statistics over resamples.

Random streams
--------------
Each resample ``r`` has its own SplitMix64 stream whose state is a hash of ``(seed, r)`` only, and
draw ``j`` of that stream fills position ``j``.  So a resample never depends on which thread made it,
how many threads ran, or how the resamples were chunked (``start=`` offsets give the same rows).
A draw ``u`` (64 random bits) picks member ``((u >> 32) * m) >> 32`` of a group of size ``m``
(multiply-shift; its bias is below ``m / 2**32``, i.e. < 2e-8 for 63 models).
``kernels/reference_resample.py`` implements the same streams in plain numpy (the test oracle).

Stratified resampling keeps every position's stratum: position ``j`` of stratum ``s`` is filled by a
draw from the members of ``s`` (in position order), so group sizes are preserved and strata never
mix.  Unstratified is the one-stratum case.

Statistics over resamples
-------------------------
Each statistic has two entry points: ``*_batch(..., idx[R, m])`` on a given index matrix, and the
fused ``*_boot(..., strata, n_resamples, seed, start=)`` that draws each resample's indices into a
per-thread scratch row (a vectorised loop: draw j's state is key_r + (j+1) GOLDEN in closed form)
and sums its features at once: no index matrix in memory, bit-identical to ``*_batch`` on
``resample_indices``.  Resamples go to threads in blocks of BLOCK, scheduled dynamically.
Both statistics reduce each resample to a few running sums over its rows (no eigendecomposition,
no per-resample allocation): every row's features are precomputed once, and a resample adds up
``n`` feature rows, then finishes in O(p^2) (or O(1)) work.

* ``participation_ratio_batch``: d_eff = (tr C)^2 / tr(C^2) with C the covariance (ddof=1) or the
  correlation of the resampled rows.  Features per row: the p values and the p(p+1)/2 products of
  the data centred at the full-sample mean (shift invariance keeps the one-pass sums accurate).
  Arithmetic per resample: n (p + p(p+1)/2) adds = 63 * 20 = 1,260 for the 63 x 5 table, plus
  ~3 p^2 to finish.
* ``quadratic_nc_batch``: least squares y = a x^2 + b x + c; vertex x* = -b / (2a) (log10 N_c).
  With t = x - mean_full(x), features per row are t, t^2, t^3, t^4, y, t y, t^2 y; the fit is solved
  in closed form from the 2 x 2 normal equations of the regressors (t, t^2) centred at the resample
  means (the intercept drops out).  NaN unless a > 0 and lo <= x* <= hi, or when the resample has
  fewer than three distinct x (singular normal equations).  Arithmetic: 8 n adds + ~30 to finish.
  ``quadratic_fit`` is the same solve on all points (the full-sample estimate).
* ``gamma_nc_batch`` / ``gamma_nc_boot``: the sign-change and gamma-fit N_c estimators
  (docs/METHODS.md §2.4).  A resample's rows are sorted (positions into arrays sorted by
  (family, N)), the gamma rule (``gamma_rule``: the one definition of local coupling between
  consecutive models, docs/METHODS.md §2.1, also used by ``cape_hpc.analysis.coupling``) gives its
  defined intervals, then the sign change or the least-squares line (``gamma_line``) gives N_c.
  O(n log n) per resample (the sort).
* ``participation_ratio(C)``: the ratio of one matrix or of its eigenvalues (the internals' d_rep).
"""
from __future__ import annotations

import numpy as np

from cape_kernels.numba_jit import njit, numba, prange, serial_copy

__all__ = [
    "resample_indices",
    "participation_ratio_batch",
    "quadratic_nc_batch",
    "participation_ratio_boot",
    "quadratic_nc_boot",
    "strata_layout",
    "seed_key",
    "participation_ratio",
    "quadratic_fit",
    "gamma_rule",
    "gamma_nc_batch",
    "gamma_nc_boot",
    "nc_intervals",
    "gamma_line",
]

# the numba-free half (seed key, strata layout, constants, input checks, the quadratic's features):
# defined once in the numpy backend, which must not import numba
from cape_kernels.numpy_resample import (  # noqa: E402,F401  (re-exported: the API of both backends)
    ATTACH_CODES, CURVATURE_RTOL, GAMMA_DEFINED, GAMMA_EQUAL_N, GAMMA_NC_ESTIMATORS, GAMMA_OTHER_FAMILY,
    GAMMA_SMALL_STEP, GOLDEN, SINGULAR_RTOL, ZERO_SPREAD_RTOL, _check_idx, _check_stream, _gamma_inputs,
    _quad_features, _window, fit_in_x, seed_key, strata_layout)


# ----------------------------------------------------------------------------------------------
# random streams
# ----------------------------------------------------------------------------------------------
@njit(inline="always")
def _mix64(z):
    # SplitMix64 finaliser (Stafford variant 13); all arithmetic in uint64, wrapping
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _stream_state(key, r):
    # initial SplitMix64 state of resample r's stream (r: uint64)
    return _mix64(key + (r + np.uint64(1)) * GOLDEN)


@njit(inline="always")
def _pick(u, size):
    # member of a group of ``size`` from 64 random bits (multiply-shift on the high 32 bits)
    return np.int64(((u >> np.uint64(32)) * np.uint64(size)) >> np.uint64(32))


@njit(inline="always")
def _draw_rows(kr, members, start, size, rows):
    # rows[j] = draw j of the stream with state kr: SplitMix64's j-th state is kr + (j+1) GOLDEN,
    # written in closed form so the loop has no carried dependency and vectorises
    for j in range(rows.shape[0]):
        rows[j] = members[start[j] + _pick(_mix64(kr + np.uint64(j + 1) * GOLDEN), size[j])]


@njit(parallel=True)
def _indices_kernel(key, start_r, n_resamples, members, start, size, out):
    for rr in prange(n_resamples):
        _draw_rows(_stream_state(key, np.uint64(start_r) + np.uint64(rr)), members, start, size,
                   out[rr])


def resample_indices(strata, n_resamples: int, seed: int, *, n: int | None = None,
                     start: int = 0) -> np.ndarray:
    """Bootstrap index matrix int64[R, n]: row r is resample ``start + r`` of stream ``seed``.

    ``strata``: labels int64[n] (stratified: each position drawn from its own stratum) or None
    (unstratified; then ``n`` is required).  Row r depends only on (seed, start + r): the same
    seed gives bit-identical rows whatever the thread count or chunking.
    """
    members, gstart, gsize = strata_layout(strata, n)
    R = int(n_resamples)
    if R < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    if int(start) < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    out = np.empty((R, members.shape[0]), dtype=np.int64)
    if R:
        _launch(_indices_kernel, out.size, seed_key(seed), int(start), R, members, gstart, gsize,
                out)
    return out


# ----------------------------------------------------------------------------------------------
# statistics over resamples: shared helpers
# ----------------------------------------------------------------------------------------------
BLOCK = 64  # resamples per parallel work item (scratch arrays are allocated once per block)
# blocks are asked for one at a time (numba.parallel_chunksize; the results do not depend on the
# schedule).  Measured with numba 0.68 on its omp and workqueue layers: the chunks are still dealt
# out statically, in equal contiguous runs per thread (a slow first block does not move the others
# to the idle thread); only the tbb layer would hand them out dynamically.
PARALLEL_CHUNKSIZE = 1
# calls with fewer row draws than this run on one thread (the full-sample estimate, the jackknife,
# small bootstraps): a parallel launch costs microseconds on an idle machine but can cost
# milliseconds on a busy one, waiting for the second thread to be scheduled
SERIAL_WORK = 1 << 15
_SERIAL: dict = {}


def _serial_twin(kernel):
    """The same kernel compiled without ``parallel`` (prange runs as range), cached on disk under
    its own name.  Every resample is computed by the same code either way, so results agree bit for
    bit with the parallel kernel."""
    twin = _SERIAL.get(kernel)
    if twin is None:
        twin = _SERIAL[kernel] = njit(serial_copy(kernel.py_func))
    return twin


def _launch(kernel, work, *args):
    """Run ``kernel(*args)``: on one thread for small work, else in parallel with dynamic blocks."""
    if work < SERIAL_WORK:
        _serial_twin(kernel)(*args)
    else:
        with numba.parallel_chunksize(PARALLEL_CHUNKSIZE):
            kernel(*args)


@njit(inline="always")
def _accumulate(s, F, row):
    for k in range(F.shape[1]):
        s[k] += F[row, k]


# ----------------------------------------------------------------------------------------------
# participation ratio
# ----------------------------------------------------------------------------------------------
def _pr_features(X):
    """Per-row features [x_c (p), upper-triangle products x_c,i x_c,k (p(p+1)/2)] of X centred at
    its mean; the column shift does not change any covariance."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"participation_ratio: X must be float64[n, p], got shape {X.shape}")
    Xc = X - X.mean(axis=0)
    p = X.shape[1]
    iu, ku = np.triu_indices(p)
    F = np.ascontiguousarray(np.concatenate([Xc, Xc[:, iu] * Xc[:, ku]], axis=1))
    return F, p, iu.astype(np.int64), ku.astype(np.int64)


@njit(inline="always")
def _pr_ratio(tr, tr2):
    # the participation ratio from tr C and tr(C^2) = sum_ik C_ik^2
    if not tr2 > 0.0:
        return np.nan
    return tr * tr / tr2


@njit(inline="always")
def _pr_finish(s, var, m, p, iu, ku, corr, rtol):
    # s: sums over the m rows of [x_c, x_c,i x_c,k]; returns (tr C)^2 / tr(C^2) or NaN
    if m < 2:
        return np.nan
    inv = 1.0 / m
    for k in range(p):
        s[k] *= inv  # resample mean of the centred data
    npair = iu.shape[0]
    tr = 0.0
    tr2 = 0.0
    if corr:
        for t in range(npair):
            i = iu[t]
            if i == ku[t]:
                v = s[p + t] - m * s[i] * s[i]
                if not v > rtol * s[p + t]:  # constant column (up to rounding)
                    return np.nan
                var[i] = v
        for t in range(npair):
            i = iu[t]
            k = ku[t]
            if i == k:
                tr += 1.0
                tr2 += 1.0
            else:
                c = (s[p + t] - m * s[i] * s[k]) / np.sqrt(var[i] * var[k])
                tr2 += 2.0 * c * c
    else:
        scale = 1.0 / (m - 1)
        raw = 0.0
        for t in range(npair):
            i = iu[t]
            k = ku[t]
            c = (s[p + t] - m * s[i] * s[k]) * scale
            if i == k:
                tr += c
                tr2 += c * c
                raw += s[p + t] * scale
            else:
                tr2 += 2.0 * c * c
        if not tr > rtol * raw:  # all rows identical (C == 0 up to rounding)
            return np.nan
    return _pr_ratio(tr, tr2)


@njit(parallel=True)
def _pr_kernel(F, p, iu, ku, idx, corr, rtol, out):
    R, m = idx.shape
    nb = (R + BLOCK - 1) // BLOCK
    for b in prange(nb):
        s = np.empty(F.shape[1])
        var = np.empty(p)
        for r in range(b * BLOCK, min(R, (b + 1) * BLOCK)):
            s[:] = 0.0
            for j in range(m):
                _accumulate(s, F, idx[r, j])
            out[r] = _pr_finish(s, var, m, p, iu, ku, corr, rtol)


@njit(parallel=True)
def _pr_stream_kernel(F, p, iu, ku, key, start_r, R, members, gstart, gsize, corr, rtol, out):
    m = members.shape[0]
    nb = (R + BLOCK - 1) // BLOCK
    for b in prange(nb):
        s = np.empty(F.shape[1])
        var = np.empty(p)
        rows = np.empty(m, dtype=np.int64)
        for r in range(b * BLOCK, min(R, (b + 1) * BLOCK)):
            _draw_rows(_stream_state(key, np.uint64(start_r) + np.uint64(r)), members, gstart,
                       gsize, rows)
            s[:] = 0.0
            for j in range(m):
                _accumulate(s, F, rows[j])
            out[r] = _pr_finish(s, var, m, p, iu, ku, corr, rtol)


def participation_ratio_batch(X, idx, corr: bool = False) -> np.ndarray:
    """d_eff = (tr C)^2 / tr(C^2) of the rows X[idx[r]] for every resample r -> float64[R].

    C is the covariance (ddof=1) or, with ``corr=True``, the correlation of the p columns.
    NaN when C is zero, i.e. all resampled rows are identical (or, for the correlation, when a
    column is constant in the resample); "zero" allows for rounding (ZERO_SPREAD_RTOL).
    ``idx`` may have any width m (e.g. m = n - 1 for the jackknife); m < 2 gives NaN.
    """
    F, p, iu, ku = _pr_features(X)
    idx = _check_idx(idx, F.shape[0], "participation_ratio_batch")
    out = np.empty(idx.shape[0], dtype=np.float64)
    if idx.shape[0]:
        _launch(_pr_kernel, idx.size, F, p, iu, ku, idx, bool(corr), ZERO_SPREAD_RTOL, out)
    return out


def participation_ratio_boot(X, strata, n_resamples: int, seed: int, *, corr: bool = False,
                             start: int = 0) -> np.ndarray:
    """Fused resample + d_eff: bit-identical to ``participation_ratio_batch(X,
    resample_indices(strata, n_resamples, seed, n=len(X), start=start), corr)`` without
    materialising the index matrix (each resample's draws go to a per-thread scratch row)."""
    F, p, iu, ku = _pr_features(X)
    members, gstart, gsize = strata_layout(strata, F.shape[0])
    R, start = _check_stream(n_resamples, start)
    out = np.empty(R, dtype=np.float64)
    if R:
        _launch(_pr_stream_kernel, R * members.shape[0], F, p, iu, ku, seed_key(seed), start, R,
                members, gstart, gsize, bool(corr), ZERO_SPREAD_RTOL, out)
    return out


# ----------------------------------------------------------------------------------------------
# quadratic N_c
# ----------------------------------------------------------------------------------------------
@njit(inline="always")
def _quad_coef(m, s, rtol):
    # the one quadratic least-squares solve: s = sums of [t, t^2, t^3, t^4, y, ty, t^2 y] over the
    # resample's m rows (t = x - xm); returns (a, b_t) of y = a t^2 + b_t t + c_t, NaN when singular
    S1, S2, S3, S4, T0, T1, T2 = s[0], s[1], s[2], s[3], s[4], s[5], s[6]
    Stt = S2 - S1 * S1 / m
    Stu = S3 - S1 * S2 / m
    Suu = S4 - S2 * S2 / m
    Sty = T1 - S1 * T0 / m
    Suy = T2 - S2 * T0 / m
    det = Stt * Suu - Stu * Stu
    if not (Stt > 0.0 and Suu > 0.0 and det > rtol * Stt * Suu):
        return np.nan, np.nan
    a = (Stt * Suy - Stu * Sty) / det
    b = (Suu * Sty - Stu * Suy) / det
    return a, b


@njit(inline="always")
def _quad_vertex(m, s, xm, lo, hi, rtol):
    # the quadratic vertex rule: x* = xm - b_t / (2a), valid when a > 0 beyond rounding (a * var(x) >
    # CURVATURE_RTOL * rms(y), i.e. a * Stt > CURVATURE_RTOL * sqrt(m * sum y^2)) and lo <= x* <= hi
    a, b = _quad_coef(m, s, rtol)
    if not a > 0.0:
        return np.nan
    if not a * (s[1] - s[0] * s[0] / m) > CURVATURE_RTOL * np.sqrt(m * s[7]):
        return np.nan
    v = xm - b / (2.0 * a)
    if v >= lo and v <= hi:
        return v
    return np.nan


@njit(inline="always")
def _quad_sums(F, rows, s):
    # eight running sums in registers (independent add chains), in row order
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(rows.shape[0]):
        i = rows[j]
        a0 += F[i, 0]
        a1 += F[i, 1]
        a2 += F[i, 2]
        a3 += F[i, 3]
        a4 += F[i, 4]
        a5 += F[i, 5]
        a6 += F[i, 6]
        a7 += F[i, 7]
    s[0] = a0
    s[1] = a1
    s[2] = a2
    s[3] = a3
    s[4] = a4
    s[5] = a5
    s[6] = a6
    s[7] = a7


@njit(parallel=True)
def _quad_kernel(F, xm, idx, lo, hi, rtol, out):
    R, m = idx.shape
    nb = (R + BLOCK - 1) // BLOCK
    for b in prange(nb):
        s = np.empty(F.shape[1])
        for r in range(b * BLOCK, min(R, (b + 1) * BLOCK)):
            _quad_sums(F, idx[r], s)
            out[r] = _quad_vertex(m, s, xm, lo, hi, rtol)


@njit(parallel=True)
def _quad_stream_kernel(F, xm, key, start_r, R, members, gstart, gsize, lo, hi, rtol, out):
    m = members.shape[0]
    nb = (R + BLOCK - 1) // BLOCK
    for b in prange(nb):
        s = np.empty(F.shape[1])
        rows = np.empty(m, dtype=np.int64)
        for r in range(b * BLOCK, min(R, (b + 1) * BLOCK)):
            _draw_rows(_stream_state(key, np.uint64(start_r) + np.uint64(r)), members, gstart,
                       gsize, rows)
            _quad_sums(F, rows, s)
            out[r] = _quad_vertex(m, s, xm, lo, hi, rtol)


def quadratic_nc_batch(x, y, idx, lo: float = -np.inf, hi: float = np.inf, *, center: float | None = None
                       ) -> np.ndarray:
    """log10 N_c = -b / (2a) of the least-squares fit y = a x^2 + b x + c on each resample -> [R].

    NaN (an invalid fit) unless a > 0 and lo <= vertex <= hi; NaN also when a resample has fewer
    than three distinct x (det of the centred normal equations <= SINGULAR_RTOL * Stt * Suu).
    ``center``: the x the sums are centred at (default: the mean of ``x``); it changes the result
    only by rounding (``cape crossmodel`` passes the mean of one ladder when ``x`` holds many copies).
    """
    F, xm = _quad_features(x, y, center)
    lo, hi = _window(lo, hi)
    idx = _check_idx(idx, F.shape[0], "quadratic_nc_batch")
    out = np.empty(idx.shape[0], dtype=np.float64)
    if idx.shape[0]:
        _launch(_quad_kernel, idx.size, F, xm, idx, lo, hi, SINGULAR_RTOL, out)
    return out


def quadratic_nc_boot(x, y, strata, n_resamples: int, seed: int, lo: float = -np.inf,
                      hi: float = np.inf, *, start: int = 0) -> np.ndarray:
    """Fused resample + quadratic vertex: bit-identical to ``quadratic_nc_batch(x, y,
    resample_indices(strata, n_resamples, seed, n=len(x), start=start), lo, hi)``."""
    F, xm = _quad_features(x, y)
    lo, hi = _window(lo, hi)
    members, gstart, gsize = strata_layout(strata, F.shape[0])
    R, start = _check_stream(n_resamples, start)
    out = np.empty(R, dtype=np.float64)
    if R:
        _launch(_quad_stream_kernel, R * members.shape[0], F, xm, seed_key(seed), start, R,
                members, gstart, gsize, lo, hi, SINGULAR_RTOL, out)
    return out


@njit
def _pr_matrix(C):
    tr = 0.0
    tr2 = 0.0
    p = C.shape[0]
    for i in range(p):
        tr += C[i, i]
        for k in range(p):
            tr2 += C[i, k] * C[i, k]
    return _pr_ratio(tr, tr2)


def participation_ratio(C) -> float:
    """Participation ratio of one symmetric matrix C [p, p] (a covariance, correlation or Gram
    matrix): (tr C)^2 / tr(C^2) = (sum lambda)^2 / sum lambda^2 -- or, given a 1-D array, of those
    eigenvalues.  NaN when tr(C^2) is zero or C is not finite.  The same ratio as
    ``participation_ratio_batch`` / ``_boot`` (docs/METHODS.md §2.5, §3)."""
    C = np.asarray(C, dtype=np.float64)
    if C.ndim == 1:
        C = np.diag(C)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 1:
        raise ValueError(f"participation_ratio: C must be a square matrix [p, p] or eigenvalues [p], "
                         f"got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        return float("nan")
    return float(_pr_matrix(np.ascontiguousarray(C)))


def quadratic_fit(x, y) -> tuple[float, float, float, float]:
    """(vertex, a, b, c) of the least-squares parabola y = a x^2 + b x + c on all points, by the same
    sums and solve as ``quadratic_nc_batch`` (vertex = xm - b_t / 2a in the centred coordinate
    t = x - xm, bit-identical to the kernel's value on the identity resample; a, b, c in x).  All NaN
    when the points have fewer than three distinct x (singular); the vertex is returned whatever the
    sign of a and wherever it lies (the caller applies the validity rule, docs/METHODS.md §2.4).  A
    curvature that is rounding noise (|a| var(x) <= CURVATURE_RTOL rms(y), e.g. identical scores) is
    reported as a = 0 with a NaN vertex."""
    F, xm = _quad_features(x, y)
    a, bt, s = _quad_full(F)
    return fit_in_x(F.shape[0], s, a, bt, xm)


@njit
def _quad_full(F):
    rows = np.arange(F.shape[0])
    s = np.empty(F.shape[1])
    _quad_sums(F, rows, s)
    a, bt = _quad_coef(F.shape[0], s, SINGULAR_RTOL)
    return a, bt, s


# ----------------------------------------------------------------------------------------------
# the gamma rule and the gamma-based N_c estimators (sign change, gamma fit)
# ----------------------------------------------------------------------------------------------
# the gamma rule's codes (GAMMA_DEFINED, ...) and ATTACH_CODES: cape_kernels.numpy_resample


@njit(inline="always")
def _gamma_step(fa, fb, na, nb, b1a, b1b, b2a, b2b, min_delta):
    # the one gamma rule: (code, gamma) of the interval from model a to the next model b
    if fa != fb:
        return GAMMA_OTHER_FAMILY, np.nan
    if na == nb:
        return GAMMA_EQUAL_N, np.nan
    d1 = b1b - b1a
    if abs(d1) < min_delta:
        return GAMMA_SMALL_STEP, np.nan
    return GAMMA_DEFINED, (b2b - b2a) / d1


@njit
def _gamma_rule_kernel(fam, size, b1, b2, min_delta, gamma, code):
    for j in range(1, fam.shape[0]):
        c, g = _gamma_step(fam[j - 1], fam[j], size[j - 1], size[j], b1[j - 1], b1[j], b2[j - 1], b2[j],
                           min_delta)
        code[j - 1] = c
        gamma[j - 1] = g


def gamma_rule(fam, size, b1, b2, min_delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Local coupling between consecutive models (docs/METHODS.md §2.1) -> (gamma float64[n-1], code int64[n-1]).

    The arrays are sorted by (family, N); interval j joins model j and model j + 1:
    gamma = (B2_{j+1} - B2_j) / (B1_{j+1} - B1_j), NaN with code GAMMA_OTHER_FAMILY (the two
    models are of different families), GAMMA_EQUAL_N (equal ``size``) or GAMMA_SMALL_STEP
    (|dB1| < min_delta); GAMMA_DEFINED (0) otherwise.  The resampled N_c estimators apply the same
    rule to each resample's sorted rows."""
    fam, size, b1, b2 = _gamma_inputs(fam, size, b1, b2)
    m = max(fam.shape[0] - 1, 0)
    gamma = np.empty(m, dtype=np.float64)
    code = np.empty(m, dtype=np.int64)
    if m:
        _gamma_rule_kernel(fam, size, b1, b2, float(min_delta), gamma, code)
    return gamma, code


@njit(inline="always")
def _defined_intervals(pos, fam, logn, b1, b2, min_delta, xs, gs, ln, lp):
    # defined intervals between consecutive sorted positions -> count k; fills xs (midpoint x),
    # gs (gamma), ln (log N of the larger model), lp (of the smaller)
    k = 0
    for j in range(1, pos.shape[0]):
        a = pos[j - 1]
        b = pos[j]
        c, g = _gamma_step(fam[a], fam[b], logn[a], logn[b], b1[a], b1[b], b2[a], b2[b], min_delta)
        if c != GAMMA_DEFINED:
            continue
        xs[k] = 0.5 * (logn[a] + logn[b])
        gs[k] = g
        ln[k] = logn[b]
        lp[k] = logn[a]
        k += 1
    return k


@njit(inline="always")
def _sign_change(k, xs, gs, ln, lp, attach):
    # the sign-change rule: N_c at the first positive gamma after a negative one, intervals in
    # order of their midpoint (stable); gamma == 0 is skipped.  attach 0/1/2: larger/smaller/mid
    order = np.argsort(xs[:k], kind="mergesort")
    prev = 0
    for j in order:
        g = gs[j]
        if g == 0.0:
            continue
        s = 1 if g > 0 else -1
        if prev == -1 and s == 1:
            if attach == 1:
                return lp[j]
            if attach == 2:
                return xs[j]
            return ln[j]
        prev = s
    return np.nan


@njit(inline="always")
def _gamma_line(k, xs, gs):
    # least-squares gamma = slope * x + intercept over the k intervals -> (slope, zero crossing)
    if k < 2:
        return np.nan, np.nan
    xm = xs[:k].mean()
    gm = gs[:k].mean()
    sxx = 0.0
    sxy = 0.0
    for i in range(k):
        sxx += (xs[i] - xm) ** 2
        sxy += (xs[i] - xm) * (gs[i] - gm)
    if sxx <= 1e-300:
        return np.nan, np.nan
    slope = sxy / sxx
    return slope, xm - gm / slope


@njit(inline="always")
def _gamma_fit(k, xs, gs, lo, hi):
    # the gamma-fit rule: valid when the line rises (slope > 0) and crosses zero inside [lo, hi]
    slope, v = _gamma_line(k, xs, gs)
    if not slope > 0:
        return np.nan
    if v < lo or v > hi:
        return np.nan
    return v


@njit(inline="always")
def _gamma_nc(kind, pos, fam, logn, b1, b2, min_delta, lo, hi, attach, xs, gs, ln, lp):
    k = _defined_intervals(pos, fam, logn, b1, b2, min_delta, xs, gs, ln, lp)
    if kind == 0:
        return _sign_change(k, xs, gs, ln, lp, attach)
    return _gamma_fit(k, xs, gs, lo, hi)


@njit(inline="always")
def _gamma_scratch(m):
    # per-block scratch of the gamma N_c kernels: interval x_mid, gamma, log N larger/smaller, rows
    return np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m, dtype=np.int64)


@njit(parallel=True)
def _gamma_nc_kernel(kind, idx, fam, logn, b1, b2, min_delta, lo, hi, attach, out):
    R, m = idx.shape
    nb = (R + BLOCK - 1) // BLOCK
    for blk in prange(nb):
        xs, gs, ln, lp, pos = _gamma_scratch(m)
        for r in range(blk * BLOCK, min(R, (blk + 1) * BLOCK)):
            pos[:] = idx[r]
            pos.sort()
            out[r] = _gamma_nc(kind, pos, fam, logn, b1, b2, min_delta, lo, hi, attach, xs, gs, ln, lp)


@njit(parallel=True)
def _gamma_nc_stream_kernel(kind, key, start_r, R, members, gstart, gsize, fam, logn, b1, b2, min_delta,
                            lo, hi, attach, out):
    m = members.shape[0]
    nb = (R + BLOCK - 1) // BLOCK
    for blk in prange(nb):
        xs, gs, ln, lp, pos = _gamma_scratch(m)
        for r in range(blk * BLOCK, min(R, (blk + 1) * BLOCK)):
            _draw_rows(_stream_state(key, np.uint64(start_r) + np.uint64(r)), members, gstart, gsize, pos)
            pos.sort()
            out[r] = _gamma_nc(kind, pos, fam, logn, b1, b2, min_delta, lo, hi, attach, xs, gs, ln, lp)




def _gamma_nc_args(estimator, fam, logn, b1, b2, min_delta, lo, hi, attach):
    if estimator not in GAMMA_NC_ESTIMATORS:
        raise ValueError(f"gamma N_c: estimator must be one of {GAMMA_NC_ESTIMATORS}, got {estimator!r}")
    if attach not in ATTACH_CODES:
        raise ValueError(f"gamma N_c: attach must be one of {tuple(ATTACH_CODES)}, got {attach!r}")
    fam, logn, b1, b2 = _gamma_inputs(fam, logn, b1, b2)
    lo, hi = _window(lo, hi)
    return (GAMMA_NC_ESTIMATORS.index(estimator), fam, logn, b1, b2, float(min_delta), lo, hi,
            ATTACH_CODES[attach])


def gamma_nc_batch(estimator: str, fam, logn, b1, b2, idx, min_delta: float, lo: float = -np.inf,
                   hi: float = np.inf, attach: str = "larger") -> np.ndarray:
    """log10 N_c of the ``"sign-change"`` or ``"gamma-fit"`` estimator on each resample -> float64[R].

    The arrays (one entry per model) are sorted by (family, N); a resample's rows are sorted
    (positions) and the gamma rule (``gamma_rule``, sizes = log N) gives its defined intervals
    (duplicates of a model have equal N: undefined).  sign-change: the first positive gamma after a
    negative one in order of the interval midpoints (``attach``: log N of the larger model, the
    smaller one, or the midpoint); gamma-fit: the zero of the least-squares line gamma(x_mid),
    valid when its slope is > 0, there are >= 2 intervals with distinct x_mid and it lies in
    [lo, hi] (docs/METHODS.md §2.4).  NaN = invalid."""
    kind, fam, logn, b1, b2, md, lo, hi, at = _gamma_nc_args(estimator, fam, logn, b1, b2, min_delta, lo,
                                                             hi, attach)
    idx = _check_idx(idx, fam.shape[0], "gamma_nc_batch")
    out = np.empty(idx.shape[0], dtype=np.float64)
    if idx.shape[0]:
        _launch(_gamma_nc_kernel, idx.size, kind, idx, fam, logn, b1, b2, md, lo, hi, at, out)
    return out


def gamma_nc_boot(estimator: str, fam, logn, b1, b2, strata, n_resamples: int, seed: int, min_delta: float,
                  lo: float = -np.inf, hi: float = np.inf, attach: str = "larger", *,
                  start: int = 0) -> np.ndarray:
    """Fused resample + gamma N_c: bit-identical to ``gamma_nc_batch(..., resample_indices(strata,
    n_resamples, seed, n=len(fam), start=start), ...)`` without the index matrix."""
    kind, fam, logn, b1, b2, md, lo, hi, at = _gamma_nc_args(estimator, fam, logn, b1, b2, min_delta, lo,
                                                             hi, attach)
    members, gstart, gsize = strata_layout(strata, fam.shape[0])
    R, start = _check_stream(n_resamples, start)
    out = np.empty(R, dtype=np.float64)
    if R:
        _launch(_gamma_nc_stream_kernel, R * members.shape[0], kind, seed_key(seed), start, R, members,
                gstart, gsize, fam, logn, b1, b2, md, lo, hi, at, out)
    return out


@njit
def _nc_intervals_kernel(fam, logn, b1, b2, min_delta, xs, gs, ln, lp):
    pos = np.arange(fam.shape[0])
    return _defined_intervals(pos, fam, logn, b1, b2, min_delta, xs, gs, ln, lp)


def nc_intervals(fam, logn, b1, b2, min_delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(x_mid, gamma) of the defined intervals of the full sample (arrays sorted by (family, N)), as
    the N_c estimators see them."""
    fam, logn, b1, b2 = _gamma_inputs(fam, logn, b1, b2)
    n = fam.shape[0]
    xs, gs, ln, lp = (np.empty(n) for _ in range(4))
    k = _nc_intervals_kernel(fam, logn, b1, b2, float(min_delta), xs, gs, ln, lp)
    return xs[:k].copy(), gs[:k].copy()


@njit
def _gamma_line_nb(xs, gs):
    return _gamma_line(xs.shape[0], xs, gs)


def gamma_line(x_mid, gamma) -> tuple[float, float]:
    """(slope g0, zero crossing) of the least-squares line gamma = g0 (x_mid - x0), as the gamma-fit
    estimator computes it (NaN when there are < 2 intervals or x_mid is constant)."""
    xs = np.ascontiguousarray(x_mid, dtype=np.float64).reshape(-1)
    gs = np.ascontiguousarray(gamma, dtype=np.float64).reshape(-1)
    if xs.shape != gs.shape:
        raise ValueError(f"gamma_line: x_mid and gamma differ in length ({xs.size}, {gs.size})")
    s, v = _gamma_line_nb(xs, gs)
    return float(s), float(v)
