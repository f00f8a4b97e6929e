"""The cross-model internals analysis (docs/METHODS.md §3.10) against hand computations and float64
references built from the per-prompt vectors of synthetic models (tests/crossmodel_fixture.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from crossmodel_fixture import synthetic_internals, write_internals
from roundtrip import assert_roundtrip

from cape_hpc.cli import main
from cape_hpc.crossmodel.families import cross_model_analysis, from_files, lineage
from cape_hpc.crossmodel.options import CrossModelOptions
from cape_hpc.crossmodel.results import GROUP, CrossModelResult
from cape_hpc.crossmodel.table import ModelInput, read_inputs
from cape_hpc.errors import DataError, OptionError
from cape_hpc.io.store import read_results
from cape_kernels.resample import resample_indices

PARAMS = [1e8, 3e8, 1e9, 3e9]
FINAL = [0.6, 0.3, 0.5, 0.8]       # a dip: internal gamma negative, then positive


def _cos(a, b):
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def _family(blocks=True, family="Fam", params=PARAMS, final=FINAL, prefix="M", **kw):
    out = []
    for i, (p, c) in enumerate(zip(params, final)):
        res, vec = synthetic_internals(f"{prefix}{i}", [0.2, c], seed=i + (100 if prefix != "M" else 0),
                                       blocks=blocks, **kw)
        out.append((ModelInput(res, f"mem:/internals/{prefix}{i}", family, p, "spec"), vec))
    return out


def _final_point(vec, n_r=12):
    X = vec["X"][-1]
    return _cos(X[:n_r].mean(0), X[n_r:].mean(0))


def _final_resampled(vec, w, n_r=12):
    """Coupling of the stacked prompts of the drawn blocks (block b drawn w[b] times)."""
    g, X = vec["blocks"], vec["X"][-1]
    reps = np.repeat(np.arange(X.shape[0]), w[g].astype(int))
    r = reps[reps < n_r]
    t = reps[reps >= n_r]
    if not len(r) or not len(t):
        return math.nan
    return _cos(X[r].mean(0), X[t].mean(0))


def _weights(R, seed, G):
    idx = resample_indices(None, R, seed, n=G)
    W = np.zeros((R, G))
    for r in range(R):
        np.add.at(W[r], idx[r], 1)
    return W


# ------------------------------------------------------------------------------------------------ table


def test_rows_and_block_intervals_equal_a_stacked_reference():
    """Point values are the float64 statistics of the vectors; the final-layer interval equals the
    percentile interval of the coupling recomputed from the stacked prompts of the drawn blocks
    (seed + 1, the prompt-level stream)."""
    fam = _family()
    R, seed = 300, 7
    res = cross_model_analysis([m for m, _ in fam], CrossModelOptions(n_resamples=R, seed=seed))
    W = _weights(R, seed + 1, 6)
    for (mi, vec), row in zip(fam, res.rows):
        assert row.final_coupling == pytest.approx(_final_point(vec), abs=1e-12)
        X = vec["X"]
        layer_c = [_cos(X[l, :12].mean(0), X[l, 12:].mean(0)) for l in range(2)]
        assert row.mean_coupling == pytest.approx(np.mean(layer_c), abs=1e-12)
        assert row.min_coupling == pytest.approx(min(layer_c), abs=1e-12) and row.min_layer == int(np.argmin(layer_c))
        ref = np.array([_final_resampled(vec, W[r]) for r in range(R)])
        ok = np.isfinite(ref)
        lo, hi = np.quantile(ref[ok], [0.025, 0.975])
        assert (row.final_coupling_ci.low, row.final_coupling_ci.high) == pytest.approx((lo, hi), abs=1e-9)
        assert row.n_valid == int(ok.sum())
        hs = vec["H"]
        hc = [_cos(hs[l, :12, h * 4:(h + 1) * 4].mean(0), hs[l, 12:, h * 4:(h + 1) * 4].mean(0))
              for l in range(2) for h in range(2)]
        assert row.head_net == pytest.approx(np.mean(hc), abs=1e-12)
        assert row.head_cooperative_share == pytest.approx(np.mean(np.array(hc) > 0))
        F = vec["F"]
        assert row.bottleneck_hidden == pytest.approx(_cos(F[:12].mean(0), F[12:].mean(0)), abs=1e-12)
        assert row.params_source == "spec" and row.family == "Fam"


# ------------------------------------------------------------------------------------------------ families


def test_every_family_number_equals_a_hand_computation():
    fam = _family(blocks=False)
    opts = CrossModelOptions(n_resamples=200)
    res = cross_model_analysis([m for m, _ in fam], opts)
    c = np.array([_final_point(v) for _, v in fam])
    x = np.log10(PARAMS)
    # internal gamma between neighbours: dc / dlog10 N, attached to the larger model
    g = np.diff(c) / np.diff(x)
    assert [iv.gamma for iv in res.gammas] == pytest.approx(list(g), abs=1e-12)
    assert [iv.model for iv in res.gammas] == ["M1", "M2", "M3"]
    assert [iv.phase for iv in res.gammas] == ["tax" if v < -0.1 else "bonus" if v > 0.1 else "transition" for v in g]
    # ladder slope and r
    lad = res.ladders[0]
    slope, _ = np.polyfit(x, c, 1)
    assert lad.slope == pytest.approx(slope, abs=1e-12)
    assert lad.r == pytest.approx(sps.pearsonr(x, c)[0], abs=1e-12)
    nc = {e.estimator: e for e in res.nc}
    # sign change: the first positive gamma after a negative one -> the larger model of that interval
    first = next(i for i in range(1, len(g)) if g[i - 1] < 0 < g[i])
    assert nc["sign-change"].log10_nc == pytest.approx(x[first + 1], abs=1e-12)
    # gamma-fit: zero of the least-squares line gamma(x_mid)
    xm = 0.5 * (x[1:] + x[:-1])
    s, i0 = np.polyfit(xm, g, 1)
    assert nc["gamma-fit"].log10_nc == pytest.approx(-i0 / s, abs=1e-9)
    # quadratic: the vertex of c = a x^2 + b x + c0
    a2, b2, _ = np.polyfit(x, c, 2)
    assert a2 > 0 and nc["quadratic"].log10_nc == pytest.approx(-b2 / (2 * a2), abs=1e-9)
    # fixed point: dc/dx regressed on the mean of neighbouring c
    a, b = np.polyfit(0.5 * (c[1:] + c[:-1]), g, 1)
    fp = res.fixed_points[0]
    assert (fp.a, fp.b, fp.gamma_star) == pytest.approx((a, b, -b / a), abs=1e-9)
    assert fp.stability == ("attracting" if a < 0 else "repelling")
    # the models-only fallback says so
    assert "models only" in lad.note


def test_two_level_bootstrap_equals_a_direct_loop():
    """Resample r: models by stream r of seed, prompt blocks by stream r of seed + 1 (the same blocks
    in every model); the slope interval equals a numpy loop over stacked prompt vectors."""
    fam = _family()
    R, seed = 200, 3
    res = cross_model_analysis([m for m, _ in fam], CrossModelOptions(n_resamples=R, seed=seed, levels=(0.9,)))
    x = np.log10(PARAMS)
    W = _weights(R, seed + 1, 6)
    midx = resample_indices(None, R, seed, n=4)
    vals = []
    for r in range(R):
        cr = np.array([_final_resampled(v, W[r]) for _, v in fam])
        xi, yi = x[midx[r]], cr[midx[r]]
        if not np.isfinite(yi).all() or np.unique(xi).size < 2:
            vals.append(math.nan)
            continue
        vals.append(np.polyfit(xi, yi, 1)[0])
    vals = np.array(vals)
    ok = np.isfinite(vals)
    lo, hi = np.quantile(vals[ok], [0.05, 0.95])
    sb = res.ladders[0].slope_boot
    assert sb.n_valid == int(ok.sum())
    assert (sb.intervals[0].low, sb.intervals[0].high) == pytest.approx((lo, hi), abs=1e-9)
    # the internal gamma's interval: the same blocks in both models of the interval
    g_ref = np.array([(_final_resampled(fam[1][1], W[r]) - _final_resampled(fam[0][1], W[r])) / (x[1] - x[0])
                      for r in range(R)])
    ok = np.isfinite(g_ref)
    lo, hi = np.quantile(g_ref[ok], [0.05, 0.95])
    assert (res.gammas[0].gamma_ci.low, res.gammas[0].gamma_ci.high) == pytest.approx((lo, hi), abs=1e-9)


def test_a_family_with_fewer_than_three_models_gets_no_estimate_and_says_why():
    fam = _family(params=PARAMS[:2], final=FINAL[:2])
    res = cross_model_analysis([m for m, _ in fam], CrossModelOptions(n_resamples=50))
    why = "2 model(s) < 3: no ladder estimate"
    assert res.ladders[0].reason == why and math.isnan(res.ladders[0].slope)
    assert all(e.reason == why and math.isnan(e.log10_nc) and e.bootstrap.n_resamples == 0 for e in res.nc)
    assert res.fixed_points[0].reason == why and math.isnan(res.fixed_points[0].gamma_star)
    assert len(res.gammas) == 1 and math.isfinite(res.gammas[0].gamma)   # a neighbour pair is still a gamma


def test_competing_heads_wilson_interval_by_hand():
    fam = _family(params=PARAMS[:3], final=FINAL[:3])
    m4, _ = synthetic_internals("C", [0.2, 0.5], head_coupling=[[0.5, -0.8], [0.4, 0.3]], seed=11)
    inputs = [m for m, _ in fam] + [ModelInput(m4, "mem:/internals/C", "Other", 5e9, "spec")]
    res = cross_model_analysis(inputs, CrossModelOptions(n_resamples=50))
    h = res.heads
    assert (h.n_zero, h.n_models, h.with_competing) == (3, 4, ["C"])
    z = sps.norm.ppf(0.975)
    k, n = 3, 4
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (h.ci.low, h.ci.high) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_phase_agreement_and_generations():
    fam = _family()
    q2, v2 = synthetic_internals("Qwen2.5-1.5B", [0.2, 0.1], seed=21)
    q3, v3 = synthetic_internals("Qwen3-1.7B", [0.2, 0.8], seed=22)
    inputs = [m for m, _ in fam] + [ModelInput(q2, "mem:q2", "Qwen2.5", 1.5e9, "spec"),
                                    ModelInput(q3, "mem:q3", "Qwen3", 1.7e9, "spec")]
    # benchmark scores: gamma = dTQA/dHS per interval, by hand below
    hs = [30.0, 35.0, 40.0, 50.0]
    tqa = [40.0, 38.0, 38.1, 45.0]
    scores = pd.DataFrame({"model": [f"M{i}" for i in range(4)], "family": "Fam", "params": PARAMS, "HS": hs, "TQA": tqa})
    R, seed = 100, 5
    res = cross_model_analysis(inputs, CrossModelOptions(n_resamples=R, seed=seed), scores)
    bg = np.diff(tqa) / np.diff(hs)
    bphase = ["tax" if v < -0.1 else "bonus" if v > 0.1 else "transition" for v in bg]
    rows = {p.model: p for p in res.phases}
    assert set(rows) == {"M0", "M1", "M2", "M3"}
    assert rows["M0"].benchmark_phase == "" and not rows["M0"].agree
    igs = {g.model: g for g in res.gammas}
    for i, m in enumerate(["M1", "M2", "M3"]):
        assert rows[m].benchmark_gamma == pytest.approx(bg[i])
        assert rows[m].benchmark_phase == bphase[i]
        assert rows[m].internal_phase == igs[m].phase
        assert rows[m].agree == (igs[m].phase == bphase[i])
    a = res.phase_agreement
    assert a.n_both == 3 and a.n_agree == sum(rows[m].agree for m in ("M1", "M2", "M3"))
    # generations: Qwen2.5 vs Qwen3 at matched size, paired block-bootstrap difference
    assert lineage("Qwen2.5") == ("Qwen", (2.0, 5.0)) and lineage("Gemma-3") == ("Gemma", (3.0,))
    (gc,) = res.generations
    assert (gc.model_a, gc.model_b, gc.lineage) == ("Qwen2.5-1.5B", "Qwen3-1.7B", "Qwen")
    assert gc.difference == pytest.approx(_final_point(v3) - _final_point(v2), abs=1e-12)
    W = _weights(R, seed + 1, 6)
    d = np.array([_final_resampled(v3, W[r]) - _final_resampled(v2, W[r]) for r in range(R)])
    lo, hi = np.quantile(d[np.isfinite(d)], [0.025, 0.975])
    assert (gc.difference_ci.low, gc.difference_ci.high) == pytest.approx((lo, hi), abs=1e-9)
    with pytest.raises(OptionError, match="generations"):
        cross_model_analysis(inputs, CrossModelOptions(n_resamples=10, generations=("Qwen2.5:Nope",)))


def test_result_round_trips(tmp_path):
    fam = _family()
    res = cross_model_analysis([m for m, _ in fam], CrossModelOptions(n_resamples=60))
    assert_roundtrip(res, tmp_path, GROUP)


# ------------------------------------------------------------------------------------------------ inputs


def test_files_spec_scores_and_unknown(tmp_path):
    fam = _family()
    rows = [{"model": f"M{i}", "internals_sha256": "", "provenance_sha256": "", "source": "", "resolved_revision": "",
             "family": "Fam", "params": p} for i, p in enumerate(PARAMS)]
    a = write_internals(tmp_path / "merged.h5", [m.result for m, _ in fam], rows)
    p70, _ = synthetic_internals("Pythia-70M", [0.2, 0.4], seed=30)
    unk, _ = synthetic_internals("mystery", [0.2, 0.4], seed=31)
    b = write_internals(tmp_path / "single.h5", [p70, unk])
    scores = pd.DataFrame({"model": ["pythia-70m"], "family": ["Pythia"], "params": [7e7], "HS": [27.0], "TQA": [45.0]})
    ins = {mi.name: mi for mi in read_inputs([a, b], scores)}
    assert (ins["M2"].family, ins["M2"].params, ins["M2"].params_source) == ("Fam", 1e9, "spec")
    assert (ins["Pythia-70M"].family, ins["Pythia-70M"].params, ins["Pythia-70M"].params_source) == ("Pythia", 7e7, "scores")
    assert (ins["mystery"].family, ins["mystery"].params_source) == ("", "") and math.isnan(ins["mystery"].params)
    res = from_files([a, b], CrossModelOptions(n_resamples=30), scores)
    assert "no family" in res.row("mystery").note and "parameter count unknown" in res.row("mystery").note
    assert res.inputs == sorted([a, b])
    with pytest.raises(DataError, match="also in"):
        read_inputs([a, a])


@pytest.mark.parametrize("change, message", [
    (dict(prompt_sha="other"), "mixed prompt sets.*prompt-set sha256"),
    (dict(prompt_sha=""), "no prompt-set hash"),
    (dict(n_r=10), "mixed prompt sets.*prompts in R"),
    (dict(pooling="mean"), "mixed prompt sets.*pooling"),
    (dict(n_blocks=4), "mixed prompt blocks"),
])
def test_missing_or_mixed_prompt_sets_are_refused(tmp_path, change, message):
    fam = _family(params=PARAMS[:2], final=FINAL[:2])
    odd, _ = synthetic_internals("odd", [0.2, 0.5], seed=40, **change)
    a = write_internals(tmp_path / "a.h5", [m.result for m, _ in fam])
    b = write_internals(tmp_path / "b.h5", [odd])
    with pytest.raises(DataError, match=message) as ei:
        from_files([a, b], CrossModelOptions(n_resamples=10))
    assert "b.h5:/internals/odd" in str(ei.value)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_json_out_and_errors(tmp_path, capsys):
    fam = _family()
    rows = [{"model": f"M{i}", "internals_sha256": "", "provenance_sha256": "", "source": "", "resolved_revision": "",
             "family": "Fam", "params": p} for i, p in enumerate(PARAMS)]
    a = write_internals(tmp_path / "merged.h5", [m.result for m, _ in fam], rows)
    out = tmp_path / "cm.h5"
    assert main(["crossmodel", a, "-n", "40", "--scores", "none", "--json", "--out", str(out)]) == 0
    js = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in js["rows"]] == ["M0", "M1", "M2", "M3"]
    assert js["provenance"]["options"]["n_resamples"] == 40
    back = CrossModelResult.from_tree(read_results(out, GROUP), where=GROUP)
    assert [e.estimator for e in back.nc] == ["sign-change", "gamma-fit", "quadratic"]
    assert main(["crossmodel", a, "-n", "40", "--scores", "none"]) == 0
    text = capsys.readouterr().out
    assert "Internal N_c" in text and "Fixed point of the internal ladder" in text and "M0, M1, M2, M3" in text
    odd, _ = synthetic_internals("odd", [0.2, 0.5], seed=40, prompt_sha="other")
    b = write_internals(tmp_path / "b.h5", [odd])
    assert main(["crossmodel", a, b, "--scores", "none"]) == 2
    assert "mixed prompt sets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["crossmodel", a, "--quantity", "nope"])
