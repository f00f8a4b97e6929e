"""The audit's internal claims computed from an internals file (`cape reproduce --internals`):
synthetic files built from the paper's stated inputs reproduce the formulas' outputs, and every
claim whose named models are missing lists them (never reproduced from fewer models than it names)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from crossmodel_fixture import synthetic_internals, write_internals

from cape_hpc.audit import AuditOptions, run_audit
from cape_hpc.audit.computations import AuditContext, Unavailable, evaluate
from cape_hpc.crossmodel.claims import NotComputable, evaluate_internal_claim, table_from_file
from cape_hpc.io.scores import load_scores
from cape_hpc.stats.intervals import wilson_interval

OPT = ["OPT-125M", "OPT-350M", "OPT-1.3B", "OPT-2.7B", "OPT-6.7B", "OPT-13B"]
# the paper states the ends (0.514 at 125M, 0.876 at 13B); the ladder between them is given here
OPT_C = [0.514, 0.560, 0.610, 0.700, 0.800, 0.876]


def _opt_file(tmp_path, extra=()):
    rs = [synthetic_internals(m, [c, c], seed=i, noise=1e-9)[0] for i, (m, c) in enumerate(zip(OPT, OPT_C))]
    return write_internals(tmp_path / "opt.h5", rs + list(extra))


@pytest.fixture(scope="module")
def scores():
    return load_scores()


def test_fixed_point_of_a_given_ladder_and_stated_values(tmp_path, scores):
    path = _opt_file(tmp_path)
    ctx = AuditContext(scores, internals=path, n_resamples=50)
    n = scores.set_index("model").loc[OPT, "params"].to_numpy(float)
    x, c = np.log10(n), np.array(OPT_C)
    g = np.diff(c) / np.diff(x)
    a, b = np.polyfit(0.5 * (c[1:] + c[:-1]), g, 1)
    v = evaluate(ctx, "internals", {"models": OPT, "quantity": "coupling_fixed_point"})
    assert v == pytest.approx(-b / a, abs=1e-6)
    assert evaluate(ctx, "internals", {"models": ["OPT-125M", "OPT-13B"], "quantity": "layer_coupling"}) == \
        pytest.approx([0.514, 0.876], abs=1e-6)
    res = run_audit(scores, AuditOptions(internals=path, only=("opt-internal-range", "opt-13b-coupling",
                                                               "qwen25-dip", "competing-heads-wilson"),
                                         n_resamples=50))
    by = {r.id: r for r in res.claims}
    assert by["opt-internal-range"].verdict == "reproduced"
    assert by["opt-13b-coupling"].verdict == "reproduced"
    # missing models are listed, the claim is not computed
    assert by["qwen25-dip"].verdict == "needs model internals"
    assert "Qwen2.5-1.5B" in by["qwen25-dip"].reason and "Qwen3-1.7B" in by["qwen25-dip"].reason
    assert by["competing-heads-wilson"].verdict == "needs model internals"
    assert "34 more of 40 models" in by["competing-heads-wilson"].reason   # 6 OPT models found of 40


def test_competing_heads_over_forty_models_wilson_from_the_counts(tmp_path, scores):
    fams = ["Pythia", "OPT", "BLOOM", "GPT-Neo", "Phi", "Gemma", "Mistral", "Qwen2.5", "Qwen3"]
    rs, rows = [], []
    for i in range(40):
        fam = fams[i % len(fams)]
        hc = [[0.5, -0.7], [0.4, 0.3]] if i in (7, 25) else None
        r, _ = synthetic_internals(f"{fam}-m{i}", [0.3, 0.5], seed=i, head_coupling=hc, n_r=6, n_t=6, D=4)
        rs.append(r)
        rows.append({"model": r.model, "internals_sha256": "", "provenance_sha256": "", "source": "",
                     "resolved_revision": "", "family": fam, "params": 1e8 * (i + 1)})
    path = write_internals(tmp_path / "forty.h5", rs, rows)
    table, heads = table_from_file(path, None, n_resamples=20)
    named = ["40 models of Pythia, OPT, BLOOM, GPT-Neo, Phi, Gemma, Mistral, Qwen2.5, Qwen3"]
    v = evaluate_internal_claim(table, named, "competing_heads")
    assert v.complete and v.value == (38, 40)
    w = evaluate_internal_claim(table, named, "competing_heads_wilson")
    ci = wilson_interval(38, 40, 0.95)
    assert w.value == pytest.approx([100 * ci.low, 100 * ci.high])
    # fewer models than the claim names: not computed, the shortfall is listed
    short = evaluate_internal_claim(table, ["41 models of Pythia, OPT, BLOOM, GPT-Neo, Phi, Gemma, Mistral, "
                                            "Qwen2.5, Qwen3"], "competing_heads")
    assert short.value is None and short.missing == ["1 more of 41 models of Pythia, OPT, BLOOM, GPT-Neo, Phi, "
                                                     "Gemma, Mistral, Qwen2.5, Qwen3 (40 found)"]
    # the pooled median of the per-head couplings
    m = evaluate_internal_claim(table, [rs[0].model, rs[1].model], "head_median", head_couplings=heads)
    pooled = np.concatenate([rs[0].head_coupling.ravel(), rs[1].head_coupling.ravel()])
    assert m.value == pytest.approx(float(np.median(pooled)))


def test_unnamed_and_unmeasured_quantities(tmp_path, scores):
    path = _opt_file(tmp_path)
    table, _ = table_from_file(path, scores, n_resamples=20)
    v = evaluate_internal_claim(table, ["Gemma-3-4B", "the RLHF model (not named)"], "coupling_drep")
    assert v.value is None and any("does not name" in m for m in v.missing)
    with pytest.raises(NotComputable, match="non-negative by construction"):
        evaluate_internal_claim(table, ["7 models"], "attention")
    every = evaluate_internal_claim(table, ["every model measured"], "drep_range")
    d = [r.d_rep_mean for r in table.rows]
    assert every.value == pytest.approx([min(d), max(d)])
    ctx = AuditContext(scores, internals=str(tmp_path / "absent.h5"))
    with pytest.raises(Unavailable, match="pass --internals"):
        evaluate(ctx, "internals", {"models": OPT, "quantity": "layer_coupling"})
    assert math.isfinite(table.row("OPT-13B").final_coupling)
