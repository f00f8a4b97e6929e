"""Plain numpy reference of ``cape_kernels.resample`` (the oracle in tests and the benchmark's
"numpy loop" baseline).

The index streams are re-implemented with numpy uint64 array arithmetic (wrapping); the statistics
are computed the textbook way, one resample at a time: ``np.cov`` / ``np.corrcoef`` for d_eff and
``np.polyfit`` for the quadratic vertex and the gamma-fit line, Python loops for the gamma rule and
the sign change.  Nothing here is shared with the numba kernels except the seed key (``seed_key``,
a pure-Python function) and the strata layout.  Used only by tests and the benchmark.
"""
from __future__ import annotations

import numpy as np

from cape_kernels.numpy_resample import GOLDEN, seed_key, strata_layout

__all__ = [
    "resample_indices_ref",
    "participation_ratio_ref",
    "participation_ratio_eig",
    "quadratic_vertex_ref",
    "participation_ratio_batch_ref",
    "quadratic_nc_batch_ref",
    "gamma_rule_ref",
    "gamma_nc_ref",
    "gamma_nc_batch_ref",
]


def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def resample_indices_ref(strata, n_resamples, seed, *, n=None, start=0):
    """Same rows as ``cape_kernels.resample_indices``, vectorised in numpy uint64."""
    members, gstart, gsize = strata_layout(strata, n)
    m = members.shape[0]
    with np.errstate(over="ignore"):
        r = np.arange(start, start + n_resamples, dtype=np.uint64)
        key = _mix64(seed_key(seed) + (r + np.uint64(1)) * GOLDEN)           # [R]
        j = np.arange(1, m + 1, dtype=np.uint64)
        u = _mix64(key[:, None] + j[None, :] * GOLDEN)                        # [R, m]
        k = ((u >> np.uint64(32)) * gsize.astype(np.uint64)[None, :]) >> np.uint64(32)
    return members[gstart[None, :] + k.astype(np.int64)]


def participation_ratio_ref(Xs, corr=False):
    """(tr C)^2 / tr(C^2) from np.cov (ddof=1) or np.corrcoef of the rows Xs; NaN when all rows
    are identical (C = 0) or, for the correlation, when a column is constant."""
    Xs = np.asarray(Xs, dtype=np.float64)
    if np.all(Xs == Xs[0]) or (corr and np.any(np.ptp(Xs, axis=0) == 0)):
        return np.nan
    if corr:
        with np.errstate(invalid="ignore", divide="ignore"):
            C = np.corrcoef(Xs, rowvar=False)
        if not np.all(np.isfinite(C)):
            return np.nan
    else:
        C = np.cov(Xs, rowvar=False, ddof=1)
    C = np.atleast_2d(C)
    tr2 = float(np.sum(C * C))
    return float(np.trace(C)) ** 2 / tr2 if tr2 > 0 else np.nan


def participation_ratio_eig(Xs, corr=False):
    """(sum lambda)^2 / sum lambda^2 over eigvalsh of the covariance / correlation (textbook)."""
    C = np.atleast_2d(np.corrcoef(Xs, rowvar=False) if corr else np.cov(Xs, rowvar=False, ddof=1))
    lam = np.linalg.eigvalsh(C)
    return float(lam.sum() ** 2 / np.sum(lam ** 2))


#: curvature below rounding (docs/METHODS.md §2.4): the same rule as cape_kernels.resample (its value written here)
CURVATURE_RTOL = 1e-9


def quadratic_vertex_ref(xs, ys, lo=-np.inf, hi=np.inf):
    """Vertex -b/(2a) of np.polyfit(x, y, 2) (x centred for conditioning); NaN unless a > 0 beyond
    rounding (a var(x) > CURVATURE_RTOL rms(y): the curvature's size against the data's),
    lo <= vertex <= hi and the resample has >= 3 distinct x."""
    if np.unique(xs).size < 3:
        return np.nan
    xm = xs.mean()
    a, b, _ = np.polyfit(xs - xm, ys, 2)
    if not a > 0:
        return np.nan
    if not a * np.var(xs) > CURVATURE_RTOL * np.sqrt(np.mean(np.asarray(ys, float) ** 2)):
        return np.nan
    v = xm - b / (2 * a)
    return float(v) if lo <= v <= hi else np.nan


def participation_ratio_batch_ref(X, idx, corr=False):
    X = np.asarray(X, dtype=np.float64)
    return np.array([participation_ratio_ref(X[row], corr) for row in np.atleast_2d(idx)])


def quadratic_nc_batch_ref(x, y, idx, lo=-np.inf, hi=np.inf):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.array([quadratic_vertex_ref(x[row], y[row], lo, hi) for row in np.atleast_2d(idx)])


def gamma_rule_ref(fam, size, b1, b2, min_delta):
    """(gamma, code) between consecutive entries, code 0 defined, 1 other family, 2 equal size,
    3 |dB1| < min_delta (the order of the tests)."""
    gam, code = [], []
    for j in range(1, len(fam)):
        d1 = float(b1[j]) - float(b1[j - 1])
        if fam[j] != fam[j - 1]:
            c = 1
        elif size[j] == size[j - 1]:
            c = 2
        elif abs(d1) < min_delta:
            c = 3
        else:
            c = 0
        code.append(c)
        gam.append((float(b2[j]) - float(b2[j - 1])) / d1 if c == 0 else np.nan)
    return np.array(gam, dtype=np.float64), np.array(code, dtype=np.int64)


def gamma_nc_ref(estimator, fam, logn, b1, b2, rows, min_delta, lo=-np.inf, hi=np.inf, attach="larger"):
    """log10 N_c of one resample (``rows``: positions into arrays sorted by (family, N))."""
    pos = np.sort(np.asarray(rows))
    f, x, u, v = (np.asarray(a)[pos] for a in (fam, logn, b1, b2))
    gam, code = gamma_rule_ref(f, x, u, v, min_delta)
    ok = code == 0
    xmid = (0.5 * (x[:-1] + x[1:]))[ok]
    larger, smaller, g = x[1:][ok], x[:-1][ok], gam[ok]
    if estimator == "sign-change":
        order = np.argsort(xmid, kind="stable")
        prev = 0
        for j in order:
            if g[j] == 0:
                continue
            s = 1 if g[j] > 0 else -1
            if prev == -1 and s == 1:
                return {"larger": larger, "smaller": smaller, "midpoint": xmid}[attach][j]
            prev = s
        return np.nan
    if len(xmid) < 2 or np.ptp(xmid) == 0:
        return np.nan
    slope, icpt = np.polyfit(xmid, g, 1)
    if not slope > 0:
        return np.nan
    root = -icpt / slope
    return float(root) if lo <= root <= hi else np.nan


def gamma_nc_batch_ref(estimator, fam, logn, b1, b2, idx, min_delta, lo=-np.inf, hi=np.inf, attach="larger"):
    return np.array([gamma_nc_ref(estimator, fam, logn, b1, b2, row, min_delta, lo, hi, attach)
                     for row in np.atleast_2d(idx)])
