"""What a referee needs from the audit (issue 25): no degenerate or vacuous pass, the paper's real
choices reachable, multiplicity reported, Monte Carlo tolerances, and the bugs found by an
independent recomputation.  References: numpy / scipy and hand computations on the shipped table
or on synthetic tables whose answers are known by construction."""
import math

import numpy as np
import pytest

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
    ratio is best anchored baseline / ODE error (issue 25: 3.14% against 6.25%, ratio ~0.5)."""
    ctx = AuditContext(shipped, n_resamples=10)
    ratio = evaluate(ctx, "dynamics", ODE_TQA_ONLY)
    ode = evaluate(ctx, "dynamics", {**ODE_TQA_ONLY, "quantity": "holdout"})
    anchored = evaluate(ctx, "dynamics", {**ODE_TQA_ONLY, "quantity": "best_poly", "anchor": True})
    assert ode == pytest.approx(6.25, abs=0.01)
    assert anchored == pytest.approx(3.14, abs=0.01)
    assert ratio == pytest.approx(anchored / ode, rel=1e-12)
    assert ratio < 1.8


# ------------------------------------------------------------------------------------------------
# synthetic tables (the same schema as the shipped one)

FIELDS = ["model", "family", "params", "d_model", "n_layers", "n_heads", "HS", "TQA", "ARC", "WG", "MMLU",
          "tqa_variant", "source"]


def _table(path, rows):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({"d_model": "", "n_layers": "", "n_heads": "", "ARC": 30, "WG": 55, "MMLU": 30,
                        "tqa_variant": "mc2", "source": "synthetic", **r})
    return load_scores(path)


def _family(name, hs, tqa, base=1e8, **extra):
    return [{"model": f"{name}-{i}", "family": name, "params": int(base * 2 ** i), "HS": h, "TQA": t, **extra}
            for i, (h, t) in enumerate(zip(hs, tqa))]


def _audit(tmp_path, df, registry, **opts):
    from cape_hpc.audit import AuditOptions, run_audit

    reg = tmp_path / "claims.yaml"
    reg.write_text(registry)
    return run_audit(df, AuditOptions(claims=str(reg), n_resamples=50, **opts)).by_id()


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
