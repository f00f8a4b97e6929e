"""What a referee needs from the audit (issue 25): no degenerate or vacuous pass, the paper's real
choices reachable, multiplicity reported, Monte Carlo tolerances, and the bugs found by an
independent recomputation.  References: numpy / scipy and hand computations on the shipped table
or on synthetic tables whose answers are known by construction."""

import numpy as np
import pytest
from test_audit_search import _table

from cape_hpc.audit.computations import AuditContext, evaluate
from cape_hpc.audit.degeneracy import reasons
from cape_hpc.io.data import data_file
from cape_hpc.io.scores import load_scores


@pytest.fixture(scope="module")
def shipped():
    return load_scores(data_file("base_models.csv"))


# ------------------------------------------------------------------------------------------------
# item 1: an ODE without coupling, or compared with a baseline given less information, is no pass

ODE_TQA_ONLY = {"train": ["Pythia", "Llama-1"], "holdout": ["Llama-2"], "model": "sindy", "units": "percent",
                "include_start": True, "benchmarks": ["TQA"], "quantity": "poly_over_ode"}


def test_ode_without_coupling_term_is_degenerate(shipped):
    """The combination that 'reproduced' ode-twice-baseline: a one-score SINDy state (no term can
    link two scores), so the match is degenerate whatever its error."""
    ctx = AuditContext(shipped, n_resamples=10)
    evaluate(ctx, "dynamics", ODE_TQA_ONLY)
    why = reasons(ctx.facts)
    assert any("no coupling term" in r for r in why), why


def test_ode_ratio_uses_anchored_baselines(shipped):
    """The ODE starts from Llama-2-7B's true score, so its baselines are anchored there too: the
    ratio is best anchored baseline / ODE error (issue 25, on the rows before the correction: 3.14%
    against 6.25%; on the corrected rows 4.80% against 9.36%)."""
    ctx = AuditContext(shipped, n_resamples=10)
    ratio = evaluate(ctx, "dynamics", ODE_TQA_ONLY)
    ode = evaluate(ctx, "dynamics", {**ODE_TQA_ONLY, "quantity": "holdout"})
    anchored = evaluate(ctx, "dynamics", {**ODE_TQA_ONLY, "quantity": "best_poly", "anchor": True})
    assert anchored < ode
    assert ratio == pytest.approx(anchored / ode, rel=1e-12)
    assert ratio < 1.8


# ------------------------------------------------------------------------------------------------
# synthetic tables (the same schema as the shipped one; rows written by the search tests' _table)

def _family(name, hs, tqa, base=1e8, **extra):
    return [{"model": f"{name}-{i}", "family": name, "params": int(base * 2 ** i), "HS": h, "TQA": t, **extra}
            for i, (h, t) in enumerate(zip(hs, tqa))]


def _audit(tmp_path, df, registry, **opts):
    from cape_hpc.audit import AuditOptions, run_audit

    reg = tmp_path / "claims.yaml"
    reg.write_text(registry)
    return run_audit(df, AuditOptions(claims=str(reg), **{"n_resamples": 50, **opts})).by_id()


# ------------------------------------------------------------------------------------------------
# item 6: the bugs

def test_scale_split_keeps_a_family_with_a_zero_gamma(tmp_path):
    """Z: gammas -0.5, 0, -0.5 (no positive step: all tax once gamma == 0 is skipped); Q: all +0.5.
    The tax line over Z's three intervals, by numpy's least squares."""
    hs, tz = [30, 40, 50, 60], [50, 45, 45, 40]
    df = _table(tmp_path / "s.csv", _family("Z", hs, tz) + _family("Q", hs, [30, 35, 40, 45], base=3e8))
    ctx = AuditContext(df, n_resamples=10)
    b = evaluate(ctx, "phase_coef", {"phase": "tax", "split": "scale"})
    x = np.log10([1e8 * 2 ** i for i in range(4)])
    mid = (np.array(hs[1:]) + np.array(hs[:-1])) / 2 / 100
    slope = np.diff(np.array(tz) / 100) / np.diff(x)
    assert b == pytest.approx(np.polyfit(mid, slope, 1)[0], rel=1e-9)


def test_zero_width_interval_within_rounding_is_degenerate():
    from cape_hpc.schema import BootstrapSummary, ConfidenceInterval

    s = BootstrapSummary(1.0, 1.0, [ConfidenceInterval(1.0, 1.0 + 1e-14, 0.95)], 1000, 1000, 0, True, "percentile",
                         False, valid_share=1.0)
    assert any("zero width" in r for r in reasons([("interval", ("N_c", s))]))
    wide = BootstrapSummary(1.0, 1.0, [ConfidenceInterval(1.0, 1.001, 0.95)], 1000, 1000, 0, True, "percentile",
                            False, valid_share=1.0)
    assert reasons([("interval", ("N_c", wide))]) == []


def test_uncertain_rows_are_those_of_the_deciding_combination(tmp_path):
    """The stated method names family A; only the family-B alternative matches: the uncertain rows
    reported are B's, not A's."""
    from cape_hpc.audit.audit import audit_claim
    from cape_hpc.audit.registry import load_claims

    hs = [30, 40, 50, 60, 70]
    df = _table(tmp_path / "s.csv", _family("A", hs, [40, 44, 38, 47, 36]) + _family("B", hs, [30, 32, 35, 41, 44]))
    r_b = np.corrcoef(hs, [30, 32, 35, 41, 44])[0, 1]
    reg = tmp_path / "c.yaml"
    reg.write_text(f"""claims:
  - id: c
    gist: g
    paper: "{r_b:.3f}"
    method: m
    compute: {{fn: pearson, args: {{families: [A]}}}}
    alternatives:
      - {{name: "family B", args: {{families: [B]}}}}
""")
    claim = load_claims(reg)[0]
    res = audit_claim(AuditContext(df), claim, uncertain={"A-1", "B-2"})
    assert res.decided_by == "family B"
    assert res.uncertain_rows == ["B-2"]


def test_width_claim_on_a_table_without_d_model_is_unavailable(tmp_path):
    from cape_hpc.audit.computations import Unavailable

    df = _table(tmp_path / "s.csv", _family("Pythia", [30, 40, 50, 60], [40, 38, 37, 41]))
    with pytest.raises(Unavailable, match="d_model"):
        evaluate(AuditContext(df), "width", {"family": "Pythia"})


def test_an_empty_group_is_not_called_exactly_determined():
    why = reasons([("determined", ("the tax line", 0, 2))])
    assert why and not any("exactly determined" in r for r in why) and "no observations" in why[0]


def test_lolo_error_is_labelled_in_points(capsys):
    from cape_hpc.cli import main

    assert main(["frontier"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("LOLO MAE mean"))
    assert "percentage points" in line and "(percent)" not in line


def test_pooled_sign_change_carries_a_caveat(shipped):
    ctx = AuditContext(shipped, n_resamples=10)
    evaluate(ctx, "nc", {"family": "all", "pooled": True, "estimator": "sign-change"})
    notes = [v for k, v in ctx.facts if k == "note"]
    assert any("concatenated" in n for n in notes)


# ------------------------------------------------------------------------------------------------
# item 3: specification-curve reporting

def test_look_elsewhere_coverage_by_hand():
    """Grid of 201 targets over 1.0 +- 0.5 (step 0.005): the targets within 0.05 of 1.0 are 21 of them."""
    from cape_hpc.audit.speccurve import coverage

    assert coverage(1.0, 0.05, np.array([1.0])) == pytest.approx(21 / 201)
    assert coverage(1.0, 0.05, np.array([1.0, 1.3])) == pytest.approx(42 / 201)
    assert coverage(1.0, 0.05, np.array([5.0])) == 0.0


def test_spec_curve_counts_and_grades(tmp_path):
    """Family A, B: r(A) is the paper's value; the stated method matches -> robust; a claim only a
    two-change combination matches -> fragile, with its match counts."""
    hs = [30, 40, 50, 60, 70]
    ta, tb = [40, 44, 38, 47, 36], [30, 32, 35, 41, 44]
    df = _table(tmp_path / "s.csv", _family("A", hs, ta) + _family("B", hs, tb))
    from scipy import stats

    rho_b = stats.spearmanr(hs, tb)[0]
    r_a = np.corrcoef(hs, ta)[0, 1]
    claim = """
  - id: {id}
    gist: g
    paper: "{paper:.3f}"
    method: m
    compute: {{fn: pearson, args: {{families: [A]}}}}
    axes:
      subset: [{{name: "family B", args: {{families: [B]}}}}]
      statistic: [{{name: "Spearman", args: {{stat: rho}}}}]
"""
    res = _audit(tmp_path, df, "claims:" + claim.format(id="stated", paper=r_a) + claim.format(id="two", paper=rho_b))
    assert res["stated"].grade == "robust" and res["stated"].n_matches == 1 and res["stated"].n_tried == 4
    two = res["two"]
    assert two.grade == "fragile" and two.n_matches == 1 and two.n_degenerate == 0
    assert "1/4 match (0 degenerate)" in two.spec_curve
    vals = [r_a, np.corrcoef(hs, tb)[0, 1], stats.spearmanr(hs, ta)[0], rho_b]
    assert f"median {np.median(vals):.4g}" in two.spec_curve


# ------------------------------------------------------------------------------------------------
# item 4: Monte Carlo tolerances

def test_bootstrap_bounds_get_a_tolerance_from_five_seeds(shipped, tmp_path):
    """The quadratic N_c interval of Pythia changes with the seed: each bound's tolerance is 2 sd over
    5 seeds of the same bootstrap (computed here with estimate_nc directly); the point estimate,
    which does not depend on the seed, keeps half a unit of its last digit."""
    from cape_hpc.analysis.nc import NcOptions, estimate_nc

    res = _audit(tmp_path, shipped, """claims:
  - id: nc
    gist: g
    paper: ["3.5", "2.9", "13.4"]
    method: m
    compute: {fn: nc, args: {family: Pythia, estimator: quadratic, quantity: [nc, ci_lo, ci_hi]}}
""", n_resamples=1000)["nc"]
    hi = []
    for seed in range(5):
        est = estimate_nc(shipped, NcOptions(estimator="quadratic", families=("Pythia",), n_resamples=1000,
                                             seed=seed)).estimates[0]
        hi.append(10 ** est.bootstrap.interval(0.95).high / 1e9)
    sd = np.std(hi, ddof=1)
    assert f"13.4: 5 seeds give {min(hi):.4g}..{max(hi):.4g} (sd {sd:.3g}); tolerance {2 * sd:.3g}" in res.mc_tolerance
    assert "3.5:" not in res.mc_tolerance


# ------------------------------------------------------------------------------------------------
# item 5: passes that mean little

def test_width_sign_that_every_random_ordering_gives_is_not_informative(shipped):
    """Pythia's r after width normalisation is positive; so it is under (nearly) every random
    assignment of the family's widths (numpy, 2000 orderings): 'holds but not informative'."""
    from cape_hpc.audit import VERDICT_UNINFORMATIVE, AuditOptions, run_audit

    py = shipped[(shipped.family == "Pythia")].dropna(subset=["d_model"])
    rng = np.random.default_rng(1)
    w = py.d_model.to_numpy(float)
    pos = np.mean([np.corrcoef(py.HS / p, py.TQA / p)[0, 1] > 0 for p in (rng.permutation(w) / 512 for _ in range(2000))])
    assert pos >= 0.95
    res = run_audit(shipped, AuditOptions(only=("width-pythia",), n_resamples=50)).by_id()["width-pythia"]
    assert res.verdict.startswith(VERDICT_UNINFORMATIVE) and "null" in res.verdict


def test_base_rate_of_lying_above_is_hypergeometric():
    from scipy import stats

    from cape_hpc.audit.informative import p_all_above, reasons as vacuous

    assert p_all_above(5, 49, 61) == pytest.approx(stats.hypergeom(61, 49, 5).pmf(5), rel=1e-12)
    assert vacuous([("base_rate", ("5 named models above", 5, 49, 61))])      # p = 0.32: not informative
    assert not vacuous([("base_rate", ("20 named models above", 20, 49, 61))])


def test_difference_interval_and_near_determined_fit():
    from cape_hpc.audit.informative import reasons as vacuous

    assert vacuous([("difference", ("d_eff(tax) - d_eff(bonus)", -0.2, 0.5))])
    assert not vacuous([("difference", ("d_eff(tax) - d_eff(bonus)", 0.1, 0.5))])
    assert "near-determined" in vacuous([("determined", ("the line", 3, 2))])[0]
    assert not vacuous([("determined", ("the line", 4, 2))])


def test_deff_ordering_records_the_difference_interval(shipped):
    ctx = AuditContext(shipped, n_resamples=50)
    evaluate(ctx, "deff", {"quantity": "decreasing"})
    (lo, hi), = [(v[1], v[2]) for k, v in ctx.facts if k == "difference"]
    tax, bonus = (evaluate(AuditContext(shipped), "deff", {"group": g}) for g in ("tax", "bonus"))
    assert lo < tax - bonus < hi


def test_sign_change_inside_the_transition_band_is_not_informative(tmp_path):
    """gammas -0.5 then +0.019: a 'sign flip' whose positive step lies inside [-0.1, 0.1]."""
    from cape_hpc.audit import VERDICT_UNINFORMATIVE

    df = _table(tmp_path / "s.csv", _family("F", [30, 40, 50], [50, 45, 45.19]))
    res = _audit(tmp_path, df, """claims:
  - id: flip
    gist: g
    paper: "1"
    method: m
    compute: {fn: sign_flip_count, args: {families: [F]}}
""")
    assert res["flip"].verdict.startswith(VERDICT_UNINFORMATIVE) and "+0.019" in res["flip"].verdict


# ------------------------------------------------------------------------------------------------
# item 2: the axes that produce the paper's kinds of number; each reproduces a claim no other
# combination of the shipped claim does (the claim's paper value replaced by that axis's value,
# computed here directly with numpy or the analysis API)

def _only_with(shipped, claim_id, paper, axis_name, n_resamples=200):
    import dataclasses

    from cape_hpc.audit.audit import audit_claim
    from cape_hpc.audit.registry import load_claims

    claim = {c.id: c for c in load_claims()}[claim_id]
    claim = dataclasses.replace(claim, paper=paper)
    res = audit_claim(AuditContext(shipped, n_resamples=n_resamples), claim, budget=400, mc_seeds=1)
    assert res.decided_by == axis_name and axis_name in res.within_tolerance, (res.verdict, res.within_tolerance)
    # the match comes from that axis: every matching combination includes it
    assert all(axis_name.split(" + ")[-1] in m for m in res.within_tolerance)
    return res


def test_axis_family_subset(shipped):
    meta = shipped[shipped.family.isin(["Llama-1", "Llama-2", "Llama-3", "OPT"]) & (shipped.params > 7e9)]
    r = np.corrcoef(meta.HS, meta.TQA)[0, 1]
    _only_with(shipped, "large-models-r", f"{r:.4f}", "Meta's models only (Llama-1/2/3 and OPT)")


def test_axis_scale_split_inside_a_family(shipped):
    small = shipped[(shipped.family == "Pythia") & (shipped.params < 3.5e9)]
    r = np.corrcoef(small.WG, small.TQA)[0, 1]
    _only_with(shipped, "commonsense-tqa-r", f"{r:.4f}", "Pythia models below N_c (3.5B)")


def _nc_values(shipped, **kw):
    from cape_hpc.analysis.nc import NcOptions, estimate_nc

    e = estimate_nc(shipped, NcOptions(n_resamples=200, seed=0, **kw)).estimates[0]
    ci = e.bootstrap.interval(0.95)
    return [f"{v:.4f}" for v in (e.nc / 1e9, 10 ** ci.low / 1e9, 10 ** ci.high / 1e9)]


def test_axis_pooled_named_families(shipped):
    paper = _nc_values(shipped, estimator="gamma-fit", families=("Pythia", "GPT-Neo"), pooled=True)
    _only_with(shipped, "pythia-nc", paper, "pooled over the EleutherAI suites (Pythia, GPT-Neo)")


def test_axis_vertex_window(shipped, tmp_path):
    """Pythia's quadratic has its vertex far outside the data, so only the interval's bounds depend
    on the window; a claim of those bounds is reproduced only with the window."""
    from cape_hpc.analysis.nc import NcOptions, estimate_nc

    e = estimate_nc(shipped, NcOptions(estimator="quadratic", families=("Pythia",), n_resamples=200,
                                       window=(8.0, 11.0))).estimates[0]
    ci = e.bootstrap.interval(0.95)
    lo, hi = 10 ** ci.low / 1e9, 10 ** ci.high / 1e9
    res = _audit(tmp_path, shipped, f"""claims:
  - id: w
    gist: g
    paper: ["{lo:.4f}", "{hi:.4f}"]
    method: m
    compute: {{fn: nc, args: {{family: Pythia, estimator: quadratic, quantity: [ci_lo, ci_hi]}}}}
    axes:
      window:
        - {{name: "vertex window", args: {{window: [8.0, 11.0]}}, when: {{estimator: quadratic}}}}
""", n_resamples=200, mc_seeds=1)["w"]
    assert res.decided_by == "vertex window" and res.within_tolerance == ["vertex window"], res.verdict


def _llama2_holdout(shipped):
    from cape_hpc.dynamics import DynamicsOptions, discover

    return discover(shipped, DynamicsOptions(train=("Pythia",), holdout=("Llama-2",), n_resamples=0, phase_pair=None))


def test_axis_model_class_of_a_holdout_claim(shipped):
    r = _llama2_holdout(shipped)
    deg2 = {b.degree: b for b in r.baselines}[2].rel_mae
    _only_with(shipped, "ode-holdout-llama2", f"{100 * deg2:.4f}", "degree-2 polynomial in log N instead of the ODE")


def test_axis_error_metric(shipped):
    r = _llama2_holdout(shipped)
    _only_with(shipped, "ode-holdout-llama2", f"{100 * r.holdout_error.mape:.4f}",
               "MAPE (mean of |error| / score) instead of the ratio of means")


def test_axis_spread_statistic(shipped):
    from cape_hpc.analysis.frontier import frontier_fit
    from cape_hpc.io.scores import load_frontier

    r = frontier_fit(load_frontier())
    errs = np.array([lf.holdout_mae for lf in r.labs])
    paper = [f"{errs.mean():.4f}", f"{(errs.max() - errs.min()) / 2:.4f}"]
    import dataclasses

    from cape_hpc.audit.audit import audit_claim
    from cape_hpc.audit.registry import load_claims

    claim = dataclasses.replace({c.id: c for c in load_claims()}["frontier-lolo"], paper=paper)
    res = audit_claim(AuditContext(shipped, frontier=load_frontier()), claim, mc_seeds=1)
    assert res.alternative == "half the range of the labs' errors", res.verdict


# ------------------------------------------------------------------------------------------------
# item 8: principal-component shares over all models; an empty width table says why

def test_deff_prints_the_principal_component_shares_over_all_models(capsys, shipped):
    from cape_hpc.cli import main
    from cape_hpc.io.scores import SCORE_COLUMNS

    assert main(["deff", "--n-resamples", "20"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("principal-component shares"))
    X = shipped.dropna(subset=list(SCORE_COLUMNS))[list(SCORE_COLUMNS)].to_numpy(float)
    lam = np.sort(np.linalg.eigvalsh(np.cov(X.T)))[::-1]
    assert f"over all {len(X)} models" in line
    for i, v in enumerate(lam / lam.sum()):
        assert f"PC{i + 1} {100 * v:.1f}%" in line


def test_an_empty_width_table_says_why(capsys, tmp_path):
    from cape_hpc.cli import main

    _table(tmp_path / "s.csv", _family("Pythia", [30, 40, 50, 60], [40, 38, 37, 41]))
    assert main(["width", "--scores", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "no family has a model with HS, TQA and d_model" in out and "4 model(s) left out" in out


def test_spec_curve_in_the_table_and_the_json(capsys):
    import json

    from cape_hpc.cli import main

    assert main(["reproduce", "--claim", "pythia-r-hs-tqa", "-n", "20"]) == 0
    out = capsys.readouterr().out
    assert "grade" in out and "matched" in out and "robust" in out
    assert main(["reproduce", "--claim", "pythia-r-hs-tqa", "-n", "20", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["claims"][0]
    assert c["grade"] == "robust" and c["spec_curve"].startswith(f"{c['n_matches']}/{c['n_tried']} match")


def test_spec_curve_in_the_report_audit_section(shipped):
    from cape_hpc.audit import AuditOptions, run_audit
    from cape_hpc.report.html import audit_table

    res = run_audit(shipped, AuditOptions(only=("pythia-r-hs-tqa",), n_resamples=20))

    class Stored:
        def optional(self, group, cls):
            return res

    t = audit_table(Stored())
    row = dict(zip(t["columns"], t["rows"][0]))
    assert row["grade"] == "robust" and row["specification curve (matches, clean values, coverage)"].startswith("1/")
