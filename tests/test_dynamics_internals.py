"""Internal coupling as a state variable of the ODE (docs/METHODS.md §2.13): a synthetic system whose
true dynamics involve the internal coupling, solved in closed form (matrix exponential); the fitted
coefficients, the holdout against the benchmark-only fit and the baselines; the join to the score
table by model name (through ``cape dynamics --internals`` on an internals file) and its errors."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import expm

from crossmodel_fixture import synthetic_internals, write_internals
from roundtrip import assert_roundtrip

from cape_hpc.cli import main
from cape_hpc.dynamics import DynamicsOptions, PredictOptions, discover, predict_size
from cape_hpc.dynamics.internals import INTERNAL_QUANTITIES, join_internals
from cape_hpc.errors import DataError, OptionError

# state z = (HS, TQA, c) in fraction units (HS, TQA fractions; c the last layer's coupling, a cosine)
# dHS/dx = 0.05 + 0.30 c - 0.20 HS ; dTQA/dx = 0.10 - 0.25 c + 0.15 HS - 0.20 TQA ; dc/dx = 0.30 - 0.40 c
C = np.array([[-0.20, 0.00, 0.30],
              [0.15, -0.20, -0.25],
              [0.00, 0.00, -0.40]])
c0 = np.array([0.05, 0.10, 0.30])
STATE = ("HS", "TQA", "internal:final")


def closed_form(x, z0):
    shift = np.linalg.solve(C, c0)
    return np.array([expm(C * (xi - x[0])) @ (z0 + shift) - shift for xi in x])


def synthetic_tables(n=60, lo=8.0, hi=11.0):
    """Three training families and one held-out family (different starting coupling), n sizes each on
    a non-uniform grid: the score table (percent) and the internals table (couplings as cosines)."""
    starts = {"TrainA": (0.30, 0.45, 0.20), "TrainB": (0.55, 0.30, 0.90), "TrainC": (0.25, 0.60, 0.55),
              "Hold": (0.35, 0.40, -0.10)}
    rows, irows = [], []
    for k, (fam, z0) in enumerate(starts.items()):
        rng = np.random.default_rng(k)
        steps = rng.uniform(0.5, 1.5, n - 1)
        x = lo + np.concatenate([[0.0], np.cumsum(steps) / steps.sum() * (hi - lo)])
        Z = closed_form(x, np.array(z0))
        for i, xi in enumerate(x):
            m = f"{fam}-{i}"
            rows.append({"model": m, "family": fam, "params": 10 ** xi, "HS": 100 * Z[i, 0], "TQA": 100 * Z[i, 1]})
            irows.append({"model": m.lower() if i % 7 == 0 else m,   # the join is case-insensitive
                          "final": Z[i, 2], "mean": Z[i, 2] - 0.1, "min": Z[i, 2] - 0.3, "head_net": math.nan})
    df = pd.DataFrame(rows)
    internals = pd.DataFrame(irows)
    internals.attrs["path"] = "synthetic.h5"
    return df, internals


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


def _opts(**kw):
    base = dict(train=("TrainA", "TrainB", "TrainC"), holdout=("Hold",), n_resamples=0, phase_pair=None)
    base.update(kw)
    return DynamicsOptions(**base)


def test_linear_ode_recovers_the_internal_coefficients(tables):
    df, internals = tables
    res = discover(df, _opts(model="linear", state=STATE, derivative="forward"), internals=internals)
    assert res.benchmarks == list(STATE) and res.terms == ["1", *STATE]
    # forward differences at midpoints: O(h^2) with h ~ 0.05 decades -> coefficients to 2e-3
    np.testing.assert_allclose(res.coefficients[:, 1:], C, atol=2e-3)
    np.testing.assert_allclose(res.coefficients[:, 0], c0, atol=2e-3)
    # the held-out family starts at another coupling; integrating the fitted system reproduces it
    assert res.holdout_error.rel_mae < 2e-3
    # the pooled error is over the score columns; the internal variable is scored in its own column
    assert set(res.holdout_error.per_benchmark) == set(STATE)
    x, models, A, P = res.trajectory("Hold")
    d = df[df.family == "Hold"].sort_values("params")
    np.testing.assert_allclose(A[:, :2], d[["HS", "TQA"]].to_numpy()[1:], rtol=1e-12)
    e = np.abs(P[:, :2] - A[:, :2])
    assert res.holdout_error.rel_mae == pytest.approx(e.mean() / A[:, :2].mean(), rel=1e-12)
    assert "score columns only" in res.error_definition


def test_sindy_recovers_the_sparse_system_with_the_internal_term(tables):
    df, internals = tables
    res = discover(df, _opts(model="sindy", degree=2, threshold=0.03, alpha=0.0, state=STATE, derivative="forward"),
                   internals=internals)
    pos = {t: j for j, t in enumerate(res.terms)}
    lin = [pos["HS"], pos["TQA"], pos["internal:final"]]
    np.testing.assert_allclose(res.coefficients[:, lin], C, atol=5e-3)
    np.testing.assert_allclose(res.coefficients[:, pos["1"]], c0, atol=5e-3)
    # the true zeros and every quadratic term are pruned
    true_zero = [(0, pos["TQA"]), (2, pos["HS"]), (2, pos["TQA"])]
    assert all(res.coefficients[i, j] == 0.0 for i, j in true_zero)
    quad = [j for t, j in pos.items() if t not in ("1", "HS", "TQA", "internal:final")]
    assert quad and np.all(res.coefficients[:, quad] == 0.0)
    assert any("internal:final" in eq for eq in res.equations[:2])


def test_the_internal_state_beats_the_benchmark_only_fit_on_the_same_cells_and_baselines(tables):
    df, internals = tables
    with_c = discover(df, _opts(model="linear", state=STATE), internals=internals)
    without = discover(df, _opts(model="linear", benchmarks=("HS", "TQA")))
    # the same held-out cells: the score columns of the later sizes
    assert with_c.holdout_error.n_points == without.holdout_error.n_points
    assert with_c.holdout_error.rel_mae < 0.01 < without.holdout_error.rel_mae
    # the baselines are fitted per column and scored on the same cells: identical numbers
    for a, b in zip(with_c.baselines, without.baselines):
        assert a.degree == b.degree
        assert a.rel_mae == pytest.approx(b.rel_mae, rel=1e-12, nan_ok=True)
        assert a.per_benchmark["HS"] == pytest.approx(b.per_benchmark["HS"], rel=1e-12, nan_ok=True)
    # by hand: the degree-1 baseline of HS fitted on the training models, scored at the held-out ones
    tr = df[df.family.isin(["TrainA", "TrainB", "TrainC"])]
    ho = df[df.family == "Hold"].sort_values("params").iloc[1:]
    coef = np.polyfit(np.log10(tr.params), tr[["HS", "TQA"]].to_numpy(), 1)
    pred = np.log10(ho.params.to_numpy())[:, None] * coef[0] + coef[1]
    act = ho[["HS", "TQA"]].to_numpy()
    b1 = next(b for b in with_c.baselines if b.degree == 1)
    assert b1.rel_mae == pytest.approx(np.abs(pred - act).mean() / act.mean(), rel=1e-9)


def test_predict_with_the_internal_state(tables):
    df, internals = tables
    opts = PredictOptions(family="TrainB", size=10 ** 11.5, train=("TrainA", "TrainB", "TrainC"), model="linear",
                          derivative="forward", state=STATE, n_resamples=0)
    res = predict_size(df, opts, internals=internals)
    d = df[df.family == "TrainB"].sort_values("params").iloc[-1]
    z0 = np.array([d.HS / 100, d.TQA / 100, internals.set_index("model").loc[d.model, "final"]])
    want = closed_form(np.array([math.log10(d.params), 11.5]), z0)[-1]
    np.testing.assert_allclose(np.array(res.ode) / 100, want, atol=2e-3)
    assert res.benchmarks == list(STATE) and "internals" in res.provenance.inputs


def test_join_names_the_models_without_internals(tables):
    df, internals = tables
    short = internals[~internals.model.isin(["TrainB-3", "Hold-5"])].copy()
    short.attrs["path"] = "partial.h5"
    with pytest.raises(DataError) as ei:
        discover(df, _opts(state=STATE), internals=short)
    msg = str(ei.value)
    assert msg.startswith("partial.h5:") and "TrainB-3 [TrainB]" in msg and "Hold-5 [Hold]" in msg
    assert "2 model(s)" in msg
    # a family not used needs no internals; a model with a blank score is left out and needs none either
    ok = join_internals(df.assign(HS=np.where(df.model == "TrainB-3", np.nan, df.HS)), short, STATE,
                        ["TrainA", "TrainB"])
    assert np.isnan(ok.loc[ok.model == "Hold-1", "internal:final"]).all()
    assert ok.loc[ok.model == "TrainA-2", "internal:final"].iloc[0] == pytest.approx(
        100 * internals.loc[internals.model == "TrainA-2", "final"].iloc[0])
    # a quantity that is not measured (NaN) is named too
    with pytest.raises(DataError, match=r"head_net not measured"):
        discover(df, _opts(state=("HS", "internal:head_net")), internals=internals)


def test_state_options_are_checked(tables):
    df, _ = tables
    with pytest.raises(OptionError, match="--state.*needs model internals"):
        discover(df, _opts(state=STATE))
    with pytest.raises(OptionError, match="option '--state': 'internal:bogus'"):
        _opts(state=("HS", "internal:bogus"))
    with pytest.raises(OptionError, match="at least one score column"):
        _opts(state=("internal:final",))
    with pytest.raises(OptionError, match="repeated"):
        _opts(state=("HS", "HS"))
    assert _opts(state="HS,internal:mean").columns == ("HS", "internal:mean")
    assert _opts().columns == DynamicsOptions().benchmarks


def test_quantities_match_the_cross_model_table():
    from cape_hpc.crossmodel.results import QUANTITIES

    assert tuple(INTERNAL_QUANTITIES) == tuple(QUANTITIES)


def test_result_roundtrip(tables, tmp_path):
    df, internals = tables
    res = discover(df, _opts(model="linear", state=STATE, n_resamples=20), internals=internals)
    assert res.term_stability is not None and res.term_stability.benchmarks == list(STATE)
    assert_roundtrip(res, tmp_path, "/dynamics/linear/TrainA+TrainB+TrainC--Hold--internal_final")


# ------------------------------------------------------------------------------------------------
# the command: an internals file (per-model /internals groups) joined to a score table

def _cli_files(tmp_path, drop=()):
    """A small score CSV (two families of 4 models) and an internals file whose last-layer coupling
    follows a known ladder."""
    rows, results = [], []
    k = 0
    for fam, base in (("FamA", 0.2), ("FamB", 0.4)):
        for i in range(4):
            m = f"{fam}-{i}"
            c = base + 0.1 * i
            rows.append({"model": m, "family": fam, "params": 10 ** (8 + 0.5 * i), "d_model": "", "n_layers": "",
                         "n_heads": "", "HS": 30 + 8 * i + 10 * c, "TQA": 40 - 3 * i + 5 * c, "ARC": "", "WG": "",
                         "MMLU": "", "tqa_variant": "mc2", "source": "synthetic"})
            if m not in drop:
                res, _ = synthetic_internals(m, [0.9, c], n_r=6, n_t=6, D=6, n_blocks=3, seed=k, noise=0.01)
                results.append(res)
            k += 1
    csv = tmp_path / "scores.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    h5 = write_internals(tmp_path / "internals.h5", results)
    return str(csv), h5, results


def test_cli_dynamics_with_internals_file(tmp_path, capsys):
    csv, h5, results = _cli_files(tmp_path)
    args = ["dynamics", "--scores", csv, "--internals", h5, "--state", "HS", "TQA", "internal:final",
            "--train", "FamA", "--holdout", "FamB", "--model", "linear", "-n", "0", "--phase-pair", "HS", "TQA"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmarks"] == ["HS", "TQA", "internal:final"]
    assert out["provenance"]["inputs"]["internals"]
    # the state column is 100 x the stored last-layer coupling of each model (from its InternalsResult)
    stored = {r.model: r.layer_coupling[-1] for r in results}
    fam_b = [r for r in out["predictions"] if r["predictor"] == "ode" and r["benchmark"] == "internal:final"]
    assert len(fam_b) == 3
    for r in fam_b:
        assert r["actual"] == pytest.approx(100 * stored[r["model"]], rel=1e-9)
    # --out: the group names the internal state, beside the benchmark-only run's group
    out_h5 = tmp_path / "r.h5"
    assert main(args + ["--out", str(out_h5)]) == 0
    assert "FamA--FamB--internal_final" in capsys.readouterr().out


def test_cli_dynamics_join_error_is_one_line(tmp_path, capsys):
    csv, h5, _ = _cli_files(tmp_path, drop=("FamB-2",))
    rc = main(["dynamics", "--scores", csv, "--internals", h5, "--state", "HS,TQA,internal:mean", "--train", "FamA",
               "--holdout", "FamB", "-n", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "internals.h5" in err and "FamB-2 [FamB]" in err
    rc = main(["dynamics", "--scores", csv, "--internals", h5, "--train", "FamA", "--holdout", "FamB", "-n", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "option '--internals'" in err
