"""The refits of the dynamics go through the estimator's interface (``fit_rows``, ``with_coefficients``),
never by setting its fitted attributes: the ``cape predict`` band against an independent re-computation
(numpy least squares on the same resample rows, the affine system integrated in closed form with
scipy.linalg.expm, numpy quantiles)."""
import numpy as np
import pandas as pd
import pytest
from scipy.linalg import expm

from cape_kernels import resample_indices

from cape_hpc.dynamics import LinearODE, PredictOptions, family_trajectory, predict_size, trajectories

C_TRUE = np.array([[-0.6, 0.2], [0.1, -0.4]])
C0_TRUE = np.array([0.3, 0.25])


def _flow(x0, x1, y0, C, c0):
    """B(x1) of dB/dx = C B + c0 from B(x0) = y0 (closed form through the augmented matrix)."""
    M = np.zeros((3, 3))
    M[:2, :2], M[:2, 2] = C, c0
    return (expm(M * (x1 - x0)) @ np.append(y0, 1.0))[:2]


def _table():
    rng = np.random.default_rng(11)
    rows = []
    for k, start in enumerate(([0.30, 0.50], [0.45, 0.35], [0.60, 0.55])):
        x = np.sort(rng.uniform(8.0, 10.5, 7))
        y = np.array([_flow(x[0], xi, np.array(start), C_TRUE, C0_TRUE) for xi in x])
        y = 100 * (y + rng.normal(scale=0.004, size=y.shape))
        rows += [{"model": f"F{k}-{i}", "family": f"F{k}", "params": 10 ** xi, "A": a, "B": b}
                 for i, (xi, (a, b)) in enumerate(zip(x, y))]
    return pd.DataFrame(rows)


def test_with_coefficients_is_a_copy_and_the_fit_is_untouched():
    df = _table()
    est = LinearODE().fit(trajectories(df, ["F0", "F1"], ("A", "B")))
    coef = est.coef_.copy()
    other = est.with_coefficients(np.column_stack([C0_TRUE, C_TRUE]))
    assert other is not est and np.array_equal(est.coef_, coef)
    y = other.simulate(np.array([40.0, 45.0]), np.array([9.0, 10.0]))[-1]
    np.testing.assert_allclose(y, 100 * _flow(9.0, 10.0, np.array([0.40, 0.45]), C_TRUE, C0_TRUE), rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        est.with_coefficients(np.zeros((2, 2)))


def _ridge_fit(A, D, ridge):
    """[p, n_terms]: (A'A + ridge I')^-1 A'D, the constant unpenalised (the normal equations)."""
    pen = ridge * np.eye(A.shape[1])
    pen[0, 0] = 0.0
    return np.linalg.solve(A.T @ A + pen, A.T @ D).T


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_predict_band_equals_an_independent_bootstrap_of_the_refits(ridge):
    """The refits are the estimator's own (its ridge included: the band of a ridge fit is a ridge band)."""
    df = _table()
    opts = PredictOptions(family="F0", size=10 ** 11.0, model="linear", train=("F0", "F1", "F2"), benchmarks=("A", "B"),
                          n_resamples=40, seed=5, levels=(0.9, 0.5), ridge=ridge)
    p = predict_size(df, opts)
    trajs = trajectories(df, ["F0", "F1", "F2"], ("A", "B"))
    S = np.concatenate([t.Y / 100 for t in trajs])                                       # gradient rows (fraction)
    D = np.concatenate([np.gradient(t.Y / 100, t.x, axis=0, edge_order=1) for t in trajs])
    fam = np.concatenate([np.full(t.n, k) for k, t in enumerate(trajs)])
    A = np.column_stack([np.ones(len(S)), S])
    start = family_trajectory(df, "F0", ("A", "B"))
    x0, y0 = start.x[-1], start.Y[-1] / 100
    sims = []
    for idx in resample_indices(fam, 40, 5):
        W = _ridge_fit(A[idx], D[idx], ridge)                                            # [2, 3]: c0 | C
        sims.append(100 * _flow(x0, 11.0, y0, W[:, 1:], W[:, 0]))
    sims = np.array(sims)
    assert p.n_valid == 40
    full = _ridge_fit(A, D, ridge)
    np.testing.assert_allclose(p.ode, 100 * _flow(x0, 11.0, y0, full[:, 1:], full[:, 0]), rtol=1e-6)
    for j, b in enumerate(("A", "B")):
        for lv in (0.9, 0.5):
            lo, hi = np.quantile(sims[:, j], [(1 - lv) / 2, (1 + lv) / 2])
            ci = p.interval(b, lv)
            assert ci.low == pytest.approx(lo, rel=1e-6) and ci.high == pytest.approx(hi, rel=1e-6)
