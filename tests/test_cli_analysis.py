"""`cape <analysis> --json` on the shipped tables and on user CSVs; `cape analyze --out` store rules."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cape_hpc.analysis.options import CouplingOptions, IsoclineOptions
from cape_hpc.cli import main
from cape_hpc.io.data import data_dir
from cape_hpc.io.store import read_results


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def user_csvs(tmp_path):
    """A user's tables in the shipped schema: other rows, renamed models, changed scores."""
    base = pd.read_csv(data_dir() / "base_models.csv")
    base = base[base.family.isin(["Pythia", "OPT", "BLOOM", "Cerebras-GPT"])].copy()
    base["model"] = "my-" + base["model"]
    base.loc[base.model == "my-OPT-66B", "TQA"] = 40.0
    base.to_csv(tmp_path / "scores.csv", index=False)
    fr = pd.read_csv(data_dir() / "frontier.csv")
    fr = fr[fr.lab != "Google"]
    fr.to_csv(tmp_path / "frontier.csv", index=False)
    loss = pd.read_csv(data_dir() / "pythia_loss.csv")
    loss["val_loss"] = loss["val_loss"] + 0.05
    loss.to_csv(tmp_path / "loss.csv", index=False)
    return {"scores": tmp_path / "scores.csv", "frontier": tmp_path / "frontier.csv", "loss": tmp_path / "loss.csv",
            "base": base, "fr": fr, "loss_df": loss}


def test_coupling_json_shipped_and_user(capsys, user_csvs):
    out = run_json(capsys, "coupling", "--json")
    assert out["min_delta"] == 0.5 and out["b1"] == "HS" and out["units"] == "percent"
    assert out["provenance"]["options"] == CouplingOptions().to_dict()   # stored unchanged: min_delta None
    g = {iv["model"]: iv["gamma"] for iv in out["intervals"]}
    assert g["Pythia-160M"] == pytest.approx(-2.8 / 4.1)
    out = run_json(capsys, "coupling", "--json", "--scores", str(user_csvs["scores"]), "--pair", "HS", "ARC")
    g = {iv["model"]: iv["gamma"] for iv in out["intervals"]}
    assert "my-OPT-66B" in g and "Phi-2" not in g
    assert g["my-Pythia-160M"] == pytest.approx((24.1 - 21.6) / (31.4 - 27.3))
    import hashlib
    assert out["provenance"]["inputs"]["scores"] == hashlib.sha256(user_csvs["scores"].read_bytes()).hexdigest()


def test_nc_json(capsys, user_csvs):
    out = run_json(capsys, "nc", "--json", "--estimator", "quadratic", "--n-resamples", "300", "--seed", "5")
    assert set(out) == {"quadratic", "quadratic_pooled"}
    pooled = out["quadratic_pooled"]
    assert pooled["provenance"]["seed"] == 5 and pooled["provenance"]["n_resamples"] == 300
    assert pooled["provenance"]["options"]["stratify"] is True
    e = pooled["estimates"][0]
    assert e["bootstrap"]["n_resamples"] == 300 and 0 < e["bootstrap"]["n_valid"] <= 300
    assert [ci["level"] for ci in e["bootstrap"]["intervals"]] == [0.95, 0.68]
    out2 = run_json(capsys, "nc", "--json", "--scores", str(user_csvs["scores"]), "--estimator", "sign-change",
                    "--scope", "per-family", "--no-stratify", "--ci-method", "bca", "--n-resamples", "200")
    scopes = {e["scope"]: e for e in out2["sign-change"]["estimates"]}
    assert set(scopes) == {"Pythia", "OPT", "BLOOM", "Cerebras-GPT"}
    assert out2["sign-change"]["provenance"]["options"]["ci_method"] == "bca"


def test_deff_json(capsys, user_csvs):
    out = run_json(capsys, "deff", "--json", "--n-resamples", "200")
    groups = {g["group"]: g for g in out["groups"]}
    assert set(groups) == {"tax", "transition", "bonus", "all"}
    assert groups["tax"]["bootstrap"]["n_resamples"] == 200 and out["provenance"]["options"]["stratify"] is True
    out = run_json(capsys, "deff", "--json", "--scores", str(user_csvs["scores"]), "--matrix", "correlation",
                   "--no-bootstrap")
    X = user_csvs["base"][["HS", "TQA", "ARC", "WG", "MMLU"]].to_numpy(float)
    lam = np.linalg.eigvalsh(np.corrcoef(X, rowvar=False))
    allg = next(g for g in out["groups"] if g["group"] == "all")
    assert allg["d_eff"] == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum())


def test_width_json(capsys, user_csvs):
    out = run_json(capsys, "width", "--json", "--n-permutations", "100", "--families", "Pythia", "OPT")
    fams = {f["family"]: f for f in out["families"]}
    assert set(fams) == {"Pythia", "OPT"} and len(fams["Pythia"]["r_null"]) == 100
    assert out["provenance"]["seed"] == 0 and out["provenance"]["n_resamples"] == 100
    out = run_json(capsys, "width", "--json", "--scores", str(user_csvs["scores"]), "--n-permutations", "50")
    b = user_csvs["base"]
    opt = b[b.family == "OPT"]
    f = opt.d_model / 512
    got = next(x for x in out["families"] if x["family"] == "OPT")
    assert got["r_after"] == pytest.approx(stats.pearsonr(opt.HS / f, opt.TQA / f).statistic)


def test_frontier_json(capsys, user_csvs):
    out = run_json(capsys, "frontier", "--json")
    assert out["n"] == 34 and out["n_lolo_labs"] == 4
    assert out["slope"] == pytest.approx(0.5131, abs=1e-4)
    out = run_json(capsys, "frontier", "--json", "--frontier", str(user_csvs["frontier"]))
    main_ = user_csvs["fr"][user_csvs["fr"].cohort == "main"]
    assert out["n"] == len(main_) and out["slope"] == pytest.approx(np.polyfit(main_.SWE, main_.GPQA, 1)[0])
    assert "Google" not in {lab["lab"] for lab in out["labs"]}


def test_loss_json(capsys, user_csvs):
    out = run_json(capsys, "loss", "--json")
    assert out["r2"] > 0.999 and out["provenance"]["options"]["n_scale"] == 1e9
    out2 = run_json(capsys, "loss", "--json", "--loss", str(user_csvs["loss"]))
    assert out2["E"] == pytest.approx(out["E"] + 0.05, abs=1e-3)  # a constant shift moves E only


def test_other_commands_print(capsys):
    for argv in (["phases"], ["population", "--group-by", "phase"], ["hfield", "--panel", "frontier"],
                 ["isocline", "--rule", "above-negative"], ["fixedpoint"], ["eigen", "--mode", "sliding"],
                 ["diagnose", "--name", "Pythia-1B"], ["diagnose", "--params", "3B", "--family", "OPT",
                                                         "--score", "HS=62", "--score", "TQA=36"]):
        assert main(argv) == 0, argv
        assert capsys.readouterr().out.strip()


def test_bad_options_exit_2(capsys, tmp_path):
    assert main(["coupling", "--pair", "HS", "NOPE"]) == 2
    assert "pair" in capsys.readouterr().err
    assert main(["nc", "--n-resamples", "0"]) == 2
    assert "'--n-resamples'" in capsys.readouterr().err
    assert main(["isocline", "--calibration", "-3"]) == 2
    assert "'--calibration'" in capsys.readouterr().err
    assert main(["phases", "--tax-below", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "'--tax-below'" in err and len(err.strip().splitlines()) == 1
    assert main(["coupling", "--scores", str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["diagnose"]) == 2


def test_analyze_out_refuses_different_content(capsys, tmp_path, monkeypatch):
    # the code version (git commit) is part of every result's provenance: pin it, so that a commit
    # landing between the runs of this test cannot change the content
    import cape_hpc.schema as prov

    monkeypatch.setattr(prov, "git_commit", lambda: "0" * 40)
    out = tmp_path / "results.h5"
    argv = ["analyze", "--n-resamples", "200", "--n-permutations", "100", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for needle in ("Local coupling", "Phases", "N_c [quadratic]", "d_eff", "Width normalisation",
                   "LOLO MAE mean"):
        assert needle in text
    tree = read_results(out)
    assert {"coupling", "phases", "nc", "deff", "width", "hfield", "isocline", "loss", "eigen", "frontier",
            "fixedpoint", "diagnose_model"} <= set(tree["analysis"])
    assert tree["analysis"]["nc"]["quadratic_pooled"]["provenance"]["n_resamples"] == 200
    assert tree["scores"]["base"]["sha256"] and tree["scores"]["frontier"]["n_rows"] == 39
    stamp = (out.stat().st_mtime_ns, out.read_bytes())
    assert main(argv) == 0                                   # same content: fine, file untouched
    capsys.readouterr()
    assert out.stat().st_mtime_ns == stamp[0]
    assert main(argv[:-2] + ["--seed", "1", "--out", str(out)]) == 2   # different content refused
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == stamp[1]
    assert main(argv[:-2] + ["--seed", "1", "--out", str(out), "--force"]) == 0
    assert read_results(out, "/analysis/deff")["provenance"]["seed"] == 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp.h5")]


def test_units_flag_reaches_every_threshold(capsys):
    """One unit rule through the CLI: --min-delta in --units, for isocline and diagnose too."""
    pct = run_json(capsys, "isocline", "--json", "--min-delta", "3")
    frac = run_json(capsys, "isocline", "--json", "--units", "fraction", "--min-delta", "0.03")
    assert (pct["units"], pct["min_delta"], frac["units"], frac["min_delta"]) == ("percent", 3.0, "fraction", 0.03)
    assert [i["model"] for i in pct["intervals"]] == [i["model"] for i in frac["intervals"]]
    assert frac["provenance"]["options"] == IsoclineOptions(units="fraction", min_delta=0.03).to_dict()
    d = run_json(capsys, "diagnose", "--json", "--units", "fraction", "--params", "5B", "--family", "Qwen2.5",
                 "--score", "HS=0.78", "--score", "TQA=0.52")
    assert d["units"] == "fraction" and d["phase"] == "bonus"
    assert d["gamma_prev"] == pytest.approx((52.0 - 48.9) / (78.0 - 74.6))
    text = main(["eigen", "--units", "fraction"]) == 0 and capsys.readouterr().out
    assert "scores in fraction" in text


def test_each_command_stores_a_result_that_reads_back(capsys, tmp_path):
    """--out of every single-analysis command: the stored group decodes into its result class."""
    from cape_hpc.schema import load_result

    for argv, group, cls in ((["phases"], "/analysis/phases", "PhaseResult"),
                             (["population", "--group-by", "family"], "/analysis/population", "PopulationResult"),
                             (["width", "--n-permutations", "50"], "/analysis/width", "WidthResult"),
                             (["hfield", "--panel", "frontier"], "/analysis/hfield", "HFieldResult"),
                             (["isocline"], "/analysis/isocline", "IsoclineResult"),
                             (["loss"], "/analysis/loss", "LossLawResult"),
                             (["fixedpoint"], "/analysis/fixedpoint", "FixedPointResult"),
                             (["eigen"], "/analysis/eigen", "EigenResult"),
                             (["frontier"], "/analysis/frontier", "FrontierResult"),
                             (["diagnose", "--name", "OPT-1.3B"], "/analysis/diagnose", "Diagnosis"),
                             (["diagnose", "--name", "OPT-1.3B"], "/analysis/diagnose_model", "DiagnoseModel")):
        out = tmp_path / f"{argv[0]}.h5"
        assert main([*argv, "--json", "--out", str(out), "--force"]) == 0, argv
        printed = json.loads(capsys.readouterr().out)
        r = load_result(read_results(out, group), where=group)
        assert type(r).__name__ == cls
        if cls != "DiagnoseModel":
            assert r.provenance.method == printed["provenance"]["method"]
            assert r.provenance.options == printed["provenance"]["options"]
    tree = read_results(tmp_path / "hfield.h5")
    assert tree["analysis"]["hfield"]["group_by"] == "lab" and "frontier" in tree["scores"]


def test_analyze_rows_take_their_flags(capsys):
    """cape analyze: each row's options are the analyze flags it declares, plus its fixed ones."""
    import argparse

    from cape_hpc.commands.analysis import analyses, analysis_options

    args = argparse.Namespace(pair=["HS", "ARC"], families=None, units="fraction", min_delta=0.01, tax_below=-0.2,
                              bonus_above=0.2, n_resamples=100, seed=4, stratify=False, ci_method="bca",
                              levels=[0.9], n_permutations=50, calibration="OLMo", rule="above-negative",
                              fixedpoint_family="Pythia", eigen_family="OPT")
    rows = {a.name: analysis_options(a, args) for a in analyses()}
    assert rows["population_phase"].group_by == "phase" and rows["population"].group_by == "family"
    assert rows["isocline"].units == "fraction" and rows["isocline"].min_delta == 0.01
    assert rows["isocline"].rule == "above-negative" and rows["diagnose_model"].rule == "above-negative"
    assert rows["nc"].n_resamples == 100 and rows["nc"].levels == (0.9,) and rows["deff"].ci_method == "bca"
    assert rows["width"].n_permutations == 50 and rows["width"].seed == 4 and rows["width"].pair == ("HS", "ARC")
    assert rows["fixedpoint"].family == "Pythia" and rows["eigen"].family == "OPT"
    assert rows["frontier"].pair == ("SWE", "GPQA") and rows["frontier"].units == "fraction"  # its own pair
    assert rows["frontier_hfield"].resolved_pair == ("SWE", "GPQA") and rows["frontier_hfield"].fit_cohort == "main"
    assert rows["loss"].to_dict() == rows["loss"].__class__().to_dict()                      # no shared flag
