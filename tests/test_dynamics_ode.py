"""ODE discovery (docs/METHODS.md §2.13) against closed forms: a synthetic linear system on a non-uniform log10 N grid."""
import numpy as np
import pandas as pd
import pytest
from scipy.linalg import expm

from roundtrip import assert_roundtrip

from cape_hpc.dynamics import (DynamicsOptions, LinearODE, ODEOptions, PhaseFitOptions, PolyBaseline, PredictOptions,
                               SindyODE, TermStabilityOptions, Trajectory, derivative_rows, discover, make_model,
                               phase_fits, predict_size, term_stability, trajectory_errors)
from cape_hpc.errors import OptionError

# dB/dx = C B + c0 in fraction units, x = log10 N.  Stable, with off-diagonal coupling.
C = np.array([[-0.30, 0.20, 0.00],
              [0.25, -0.40, 0.10],
              [0.00, 0.15, -0.20]])
c0 = np.array([0.20, 0.05, 0.10])
B0 = np.array([0.30, 0.45, 0.25])
BENCH = ("A", "B", "D")


def closed_form(x, x0=8.0, b0=B0):
    """B(x) = e^{C (x - x0)} (b0 + C^-1 c0) - C^-1 c0."""
    shift = np.linalg.solve(C, c0)
    return np.array([expm(C * (xi - x0)) @ (b0 + shift) - shift for xi in x])


def grid(n, seed=1, lo=8.0, hi=11.0):
    rng = np.random.default_rng(seed)
    steps = rng.uniform(0.3, 1.7, n - 1)
    return lo + np.concatenate([[0.0], np.cumsum(steps) / steps.sum() * (hi - lo)])


def traj(x, family="Syn", b0=B0):
    Y = closed_form(x, x[0], b0) * 100.0  # percent, as in the tables
    return Trajectory(family, [f"{family}-{i}" for i in range(len(x))], x, Y, BENCH)


STARTS = [B0, np.array([0.60, 0.20, 0.50]), np.array([0.15, 0.70, 0.40])]


@pytest.fixture(scope="module")
def dense():
    """Three families from different starting points (one trajectory alone is nearly collinear)."""
    return [traj(grid(120, seed=k), f"Syn{k}", b0=b) for k, b in enumerate(STARTS)]


def test_gradient_derivative_second_order_on_nonuniform_grid():
    x = grid(7, seed=3)
    t = Trajectory("q", list("abcdefg"), x, np.column_stack([x ** 2, 3 * x - 1.0]), ("p", "q"))
    _, s, d = derivative_rows(t, "gradient", edge_order=2)
    np.testing.assert_allclose(d, np.column_stack([2 * x, np.full_like(x, 3.0)]), rtol=1e-12, atol=1e-9)
    xm, sm, dm = derivative_rows(t, "forward")
    np.testing.assert_allclose(xm, 0.5 * (x[1:] + x[:-1]))
    np.testing.assert_allclose(dm[:, 0], x[1:] + x[:-1], rtol=1e-12)  # exact for a quadratic at the midpoint


@pytest.mark.parametrize("derivative", ["gradient", "forward"])
def test_linear_ode_recovers_coefficients(dense, derivative):
    m = LinearODE(units="fraction", derivative=derivative).fit(dense)
    np.testing.assert_allclose(m.C_, C, atol=2e-3)
    np.testing.assert_allclose(m.c0_, c0, atol=2e-3)
    assert m.coef_.shape == (3, 4) and m.terms_ == ["1", "A", "B", "D"]


def test_sindy_recovers_coefficients_and_prunes_nonlinear_terms(dense):
    m = SindyODE(degree=2, threshold=0.03, alpha=0.0, units="fraction").fit(dense)
    terms = m.terms_
    lin = {t: i for i, t in enumerate(terms) if t in ("1", "A", "B", "D")}
    got_C = m.coef_[:, [lin["A"], lin["B"], lin["D"]]]
    np.testing.assert_allclose(got_C, C, atol=5e-3)
    np.testing.assert_allclose(m.coef_[:, lin["1"]], c0, atol=5e-3)
    nonlinear = [i for t, i in zip(terms, range(len(terms))) if t not in lin]
    assert np.all(m.coef_[:, nonlinear] == 0.0)
    # zero true coefficients are pruned too
    assert m.coef_[0, lin["D"]] == 0.0 and m.coef_[2, lin["A"]] == 0.0
    assert all(eq.startswith("d(") for eq in m.equations())


def test_simulation_matches_closed_form():
    x = grid(9, seed=5)
    m = LinearODE(units="fraction")
    m.benchmarks_ = BENCH
    m.fit_rows(np.zeros((2, 3)), np.zeros((2, 3)))  # shapes only
    m.coef_ = np.column_stack([c0, C])
    sim = m.simulate(B0 * 100, x)
    np.testing.assert_allclose(sim, closed_form(x, x[0]) * 100, rtol=1e-6, atol=1e-6)
    # backwards from the last point returns to the start
    back = m.simulate(sim[-1], x[::-1])
    np.testing.assert_allclose(back[-1], B0 * 100, rtol=1e-6)


def test_holdout_on_synthetic_families_is_near_exact(dense):
    other = traj(grid(12, seed=9, lo=8.5, hi=10.5), "Hold", b0=np.array([0.35, 0.40, 0.30]))
    m = LinearODE().fit(dense)
    e = m.errors([other])
    assert e.rel_mae < 2e-3
    assert set(e.per_benchmark) == set(BENCH) and e.n_points == other.n - 1


def test_errors_definitions():
    pred = np.array([[10.0, 20.0], [30.0, 50.0]])
    act = np.array([[12.0, 20.0], [30.0, 40.0]])
    e = trajectory_errors(pred, act, ("p", "q"))
    assert e.rel_mae == pytest.approx(np.mean([2, 0, 0, 10]) / np.mean([12, 20, 30, 40]))
    assert e.mape == pytest.approx(np.mean([2 / 12, 0, 0, 10 / 40]))
    assert e.mae_points == pytest.approx(3.0)
    assert e.per_benchmark["q"] == pytest.approx(5.0 / 30.0)
    bad = trajectory_errors(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]), ("p", "q"))
    assert np.isnan(bad.rel_mae) and bad.failed


@pytest.mark.parametrize("deg", [1, 2, 3, 4])
def test_baselines_equal_numpy_polyfit(deg):
    a = traj(grid(8, seed=2), "A1")
    b = traj(grid(5, seed=4, lo=9, hi=11.5), "A2", b0=np.array([0.5, 0.3, 0.4]))
    pb = PolyBaseline(deg).fit([a, b])
    xs = np.concatenate([a.x, b.x])
    ys = np.concatenate([a.Y, b.Y])
    xq = np.array([9.3, 10.1, 12.0])
    for j in range(3):
        ref = np.polyval(np.polyfit(xs, ys[:, j], deg), xq)
        np.testing.assert_allclose(pb.predict_x(xq)[:, j], ref, rtol=1e-10)
    anch = PolyBaseline(deg, anchored=True).fit([a, b])
    np.testing.assert_allclose(anch.predict(b), pb.predict(b) - pb.predict(b)[0] + b.Y[0], rtol=1e-12)
    small = PolyBaseline(4).fit([traj(grid(4), "S")])
    assert not small.valid_ and np.isnan(small.predict_x(np.array([9.0]))).all()


def _table(trajs):
    rows = []
    for t in trajs:
        for i, m in enumerate(t.models):
            rows.append({"model": m, "family": t.family, "params": 10 ** t.x[i],
                         **{b: t.Y[i, j] for j, b in enumerate(BENCH)}})
    return pd.DataFrame(rows)


def test_term_stability_is_a_true_bootstrap_and_deterministic(tmp_path):
    from cape_kernels import resample_indices

    fams = [traj(grid(6, seed=s, lo=8 + 0.1 * s), f"F{s}", b0=STARTS[s]) for s in range(3)]
    est = LinearODE(units="fraction")
    ts1 = term_stability(est, fams, TermStabilityOptions(n_resamples=64, seed=7))
    ts2 = term_stability(est, fams, TermStabilityOptions(n_resamples=64, seed=7))
    np.testing.assert_array_equal(ts1.sign_agreement, ts2.sign_agreement)
    # reference: explicit loop over the same resample rows
    S = np.concatenate([0.5 * (f.Y[1:] + f.Y[:-1]) / 100 for f in fams])
    D = np.concatenate([np.diff(f.Y, axis=0) / np.diff(f.x)[:, None] / 100 for f in fams])
    strata = np.repeat(np.arange(3), 5)
    idx = resample_indices(strata, 64, 7)
    A = np.column_stack([np.ones(len(S)), S])
    full = np.linalg.lstsq(A, D, rcond=None)[0].T
    agree = np.mean([np.sign(np.linalg.lstsq(A[r], D[r], rcond=None)[0].T) == np.sign(full) for r in idx], axis=0)
    np.testing.assert_allclose(ts1.sign_agreement, agree)
    assert ts1.n_rows == 15 and ts1.n_valid == 64
    assert_roundtrip(ts1, tmp_path, "/dynamics/term_stability")
    # sindy: the strongest true terms are selected in (nearly) every resample on exact data
    tss = term_stability(SindyODE(degree=1, threshold=0.05, alpha=0.0), fams,
                         TermStabilityOptions(n_resamples=32, seed=1))
    assert tss.inclusion.shape == (3, 4) and np.all((tss.inclusion >= 0) & (tss.inclusion <= 1))
    assert tss.inclusion[1, tss.terms.index("B")] >= 0.9 and tss.inclusion[0, tss.terms.index("A")] >= 0.9


@pytest.fixture(scope="module")
def table():
    fams = [traj(grid(40, seed=k), f"Train{k}", b0=b) for k, b in enumerate(STARTS)]
    fams.append(traj(grid(4, seed=6, lo=9.0, hi=11.0), "Hold", b0=np.array([0.4, 0.35, 0.3])))
    return fams, _table(fams)


def test_discover_and_predict_on_a_table(table, tmp_path):
    fams, df = table
    opts = DynamicsOptions(train=("Train0,Train1", "Train2"), holdout=("Hold",), model="linear", benchmarks=BENCH,
                           n_resamples=16, phase_pair=None)
    assert opts.train == ("Train0", "Train1", "Train2")
    r = discover(df, opts)
    assert r.holdout_error.rel_mae < 0.02 and len(r.baselines) == 4
    ode_rows = [row for row in r.predictions if row.predictor == "ode"]
    assert len(ode_rows) == 3 * 3 and len(r.predictions) == 5 * 3 * 3 and r.provenance.seed == 0
    assert r.units == "fraction" and r.provenance.options == opts.to_dict()
    # the stored trajectory is the simulation from the smallest held-out model: compare with the closed form
    x, models, A, P = r.trajectory("Hold")
    hold = fams[-1]
    np.testing.assert_allclose(x, hold.x[1:])
    np.testing.assert_allclose(A, hold.Y[1:])
    np.testing.assert_allclose(P, closed_form(hold.x, hold.x[0], hold.Y[0] / 100)[1:] * 100, rtol=2e-2)
    back = assert_roundtrip(r, tmp_path, "/dynamics/linear/Train0+Train1+Train2--Hold")
    assert back.term_stability.n_resamples == 16 and back.phase_fits is None

    p = predict_size(df, PredictOptions(family="Train0", size=10 ** 11.5, model="linear",
                                        train=("Train0", "Train1", "Train2"), benchmarks=BENCH, n_resamples=16))
    exact = closed_form(np.array([fams[0].x[-1], 11.5]), fams[0].x[-1], fams[0].Y[-1] / 100)[-1] * 100
    np.testing.assert_allclose(p.ode, exact, rtol=2e-2)
    for b in BENCH:
        ci95, ci68 = p.interval(b, 0.95), p.interval(b, 0.68)
        assert ci95.low <= ci68.low <= ci68.high <= ci95.high
    assert_roundtrip(p, tmp_path, "/dynamics/predict/Train0/3.16228e+11")


def test_dynamics_options_are_checked(table):
    _, df = table
    with pytest.raises(OptionError, match="holdout"):
        discover(df, DynamicsOptions(train=("Train0",), holdout=("Train0",), benchmarks=BENCH))
    with pytest.raises(OptionError, match="train"):
        discover(df, DynamicsOptions(train=("Nope",), holdout=("Hold",), benchmarks=BENCH))
    with pytest.raises(OptionError, match="--model"):
        DynamicsOptions(model="quartic")
    with pytest.raises(OptionError, match="--units"):
        ODEOptions(units="points")
    with pytest.raises(OptionError, match="--threshold"):
        ODEOptions(threshold=-1.0)
    with pytest.raises(OptionError, match="size"):
        PredictOptions(family="Train0", size=-3, benchmarks=BENCH)
    with pytest.raises(OptionError, match="--family"):
        PredictOptions(size=1e9)


def test_options_generate_the_flags_and_read_them_back():
    import argparse

    p = argparse.ArgumentParser()
    DynamicsOptions.add_arguments(p)
    args = p.parse_args(["--model", "linear", "--train", "A", "B", "--units", "percent", "--no-stratify", "-n", "0"])
    o = DynamicsOptions.from_args(args)
    assert (o.model, o.train, o.units, o.stratify, o.n_resamples) == ("linear", ("A", "B"), "percent", False, 0)
    assert o.holdout == DynamicsOptions().holdout and o.threshold == DynamicsOptions().threshold
    assert vars(args)["train"] == ["A", "B"]  # from_args leaves the namespace as parsed


def test_units_change_the_coefficients_not_the_predictions(dense):
    """A linear system is unit-equivariant: C unchanged, c0 x100 in percent, simulated scores equal."""
    f = make_model(ODEOptions(model="linear", units="fraction")).fit(dense)
    q = make_model(ODEOptions(model="linear", units="percent")).fit(dense)
    np.testing.assert_allclose(q.C_, f.C_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(q.c0_, 100 * f.c0_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(q.predict(dense[0]), f.predict(dense[0]), rtol=1e-7)


def test_phase_fits_equal_a_hand_least_squares(tmp_path):
    """b of dTQA/dlog10N = a + b HS_mid over the tax intervals, from the intervals by hand."""
    from cape_hpc.io.scores import load_scores

    df = load_scores()
    r = phase_fits(df, PhaseFitOptions(units="fraction"))
    xs, ys = [], []
    for fam, g in df.dropna(subset=["HS", "TQA"]).sort_values(["family", "params"], kind="mergesort").groupby("family"):
        g = g.loc[~g["params"].duplicated()]
        hs, tqa, logn = g["HS"].to_numpy() / 100, g["TQA"].to_numpy() / 100, np.log10(g["params"].to_numpy())
        for i in range(1, len(g)):
            d1, d2 = hs[i] - hs[i - 1], tqa[i] - tqa[i - 1]
            if abs(d1) < 0.005 or logn[i] == logn[i - 1]:
                continue
            if d2 / d1 < -0.1:
                xs.append(0.5 * (hs[i] + hs[i - 1]))
                ys.append(d2 / (logn[i] - logn[i - 1]))
    tax = {f.phase: f for f in r.fits}["tax"]
    assert tax.n_intervals == len(xs)
    b_ref = np.polyfit(xs, ys, 1)[0]
    assert tax.b == pytest.approx(b_ref, rel=1e-9)
    assert r.units == "fraction"
    assert_roundtrip(r, tmp_path, "/dynamics/phase_fits")


def test_sindy_bootstrap_regression_equals_pysindy_fit():
    """The term-stability refit (STLSQ on the library matrix) is the same regression PySINDy runs."""
    from cape_hpc.dynamics.trajectories import stacked_rows

    fams = [traj(grid(9, seed=s), f"F{s}", b0=STARTS[s]) for s in range(3)]
    m = SindyODE(degree=2, threshold=0.02, alpha=0.05).fit(fams)
    S, D, _ = stacked_rows(fams, "gradient", 0.01)
    np.testing.assert_allclose(m.regress_batch(m._library(S), D), m.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.rhs(S), m.model_.predict(S), rtol=1e-10, atol=1e-12)


def test_estimators_take_ode_options(dense):
    """The estimators take one ODEOptions (or its fields by keyword): the options validate and hold the
    defaults, and an estimator built either way fits the same numbers as ``make_model``."""
    opts = ODEOptions(model="sindy", degree=2, threshold=0.03, alpha=0.0)
    a, b = SindyODE(opts), SindyODE(degree=2, threshold=0.03, alpha=0.0)
    assert a.opts == b.opts == opts and b.clone().opts == opts
    np.testing.assert_array_equal(a.fit(dense).coef_, make_model(opts).fit(dense).coef_)
    lin = LinearODE(opts)                                  # the class decides the model
    assert lin.opts.model == "linear" and lin.opts.degree == 2 and isinstance(make_model(lin.opts), LinearODE)
    assert LinearODE().opts == ODEOptions(model="linear")  # the defaults are the options'
    for kw, flag in (({"ridge": -1.0}, "--ridge"), ({"degree": 0}, "--degree"), ({"derivative": "central"},
                     "--derivative"), ({"units": "permille"}, "--units"), ({"threshold": float("nan")}, "--threshold")):
        with pytest.raises(OptionError, match=flag):   # at construction, before any fit
            (LinearODE if "ridge" in kw else SindyODE)(**kw)
