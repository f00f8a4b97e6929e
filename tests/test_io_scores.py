"""Loader validation (docs/METHODS.md §1.1): the shipped tables load; every bad-input case names file,
row and column.  The curation script (docs/METHODS.md §1.4) applies its fixes to a small synthetic
copy of the public tables and names a missing input file."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from cape_hpc.errors import DataError
from cape_hpc.io.scores import SCORE_COLUMNS, load_frontier, load_loss, load_scores


def test_shipped_tables_load():
    df = load_scores()
    assert len(df) == 61
    assert df["model"].is_unique
    assert set(df["tqa_variant"]) == {"mc2"}
    assert (df["source"].str.len() > 0).all()
    # the curation fixes of docs/METHODS.md §1.4
    assert not {"Llama3-8B", "Llama3-70B"} & set(df["model"])
    fam = dict(zip(df["model"], df["family"]))
    assert fam["GPT-J-6B"] == "GPT-J" and fam["GPT-NeoX-20B"] == "GPT-NeoX"
    assert fam["Gemma-3-4B"] != fam["Gemma-4-E4B"]
    assert (df["params"] > 1e7).all()  # a count, not billions
    pythia = df[df.family == "Pythia"].sort_values("params")
    assert list(pythia["d_model"]) == [512, 768, 1024, 2048, 2048, 2560, 4096, 5120]
    assert df[list(SCORE_COLUMNS)].loc[:, ["HS", "TQA"]].notna().all().all()
    fr = load_frontier()
    assert (fr.cohort == "main").sum() == 34 and (fr.cohort == "post_cutoff").sum() == 5
    assert len(load_loss()) == 8


HEADER = "model,family,params,d_model,n_layers,n_heads,HS,TQA,ARC,WG,MMLU,tqa_variant,source\n"
GOOD = "A-1B,A,1000000000,2048,,,50,40,30,60,25,mc2,test\nA-2B,A,2000000000,2560,,,55,39,31,61,26,mc2,test\n"


def _write(tmp_path, text, name="scores.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_user_table_loads(tmp_path):
    df = load_scores(_write(tmp_path, HEADER + GOOD))
    assert list(df["model"]) == ["A-1B", "A-2B"]
    assert df.attrs["sha256"] and df.attrs["path"].endswith("scores.csv")


@pytest.mark.parametrize("text, row, col", [
    (HEADER.replace(",TQA", "") + "A-1B,A,1e9,2048,,,50,30,60,25,mc2,t\n", None, "TQA"),         # missing column
    (HEADER + "A-1B,A,1e9,2048,,,fifty,40,30,60,25,mc2,t\n", 2, "HS"),                          # non-numeric
    (HEADER + GOOD + "A-3B,A,3e9,2048,,,NaN,40,30,60,25,mc2,t\n", 4, "HS"),                      # explicit NaN
    (HEADER + GOOD + "A-3B,A,3e9,2048,,,60,,30,60,25,mc2,t\n", 4, "TQA"),                         # missing required
    (HEADER + GOOD + "A-1B,A,3e9,2048,,,60,40,30,60,25,mc2,t\n", 4, "model"),                     # duplicate
    (HEADER + "A-1B,A,0,2048,,,50,40,30,60,25,mc2,t\n", 2, "params"),                            # non-positive
    (HEADER + "A-1B,A,-5,2048,,,50,40,30,60,25,mc2,t\n", 2, "params"),
    (HEADER + GOOD + "A-3B,A,3e9,2048,,,60,40,30,60,25,mc1,t\n", 4, "tqa_variant"),               # mixed variants
    (HEADER + "A-1B,A,1e9,2048,,,50,40,30,60,25,mc3,t\n", 2, "tqa_variant"),
    (HEADER + "A-1B,A,1e9,2048,,,150,40,30,60,25,mc2,t\n", 2, "HS"),                             # not a percentage
    (HEADER + "A-1B,A,1e9,2048,,,50,40,30,60,25,mc2,\n", 2, "source"),                           # no source
])
def test_bad_input_names_file_row_column(tmp_path, text, row, col):
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_scores(p)
    msg = str(err.value)
    assert str(p) in msg and f"'{col}'" in msg
    if row is not None:
        assert f"row {row}" in msg


def test_non_utf8_and_missing_file(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes((HEADER + "Caf\xe9-1B,A,1e9,2048,,,50,40,30,60,25,mc2,t\n").encode("latin-1"))
    with pytest.raises(DataError, match="latin1.csv: line 2: not valid UTF-8"):
        load_scores(p)
    with pytest.raises(DataError, match="nope.csv: CSV table not found"):
        load_scores(tmp_path / "nope.csv")


def test_frontier_and_loss_validation(tmp_path):
    p = _write(tmp_path, "model,lab,date,SWE,GPQA,cohort,source\nX,L,,50,x,main,s\n", "fr.csv")
    with pytest.raises(DataError, match=r"row 2, column 'GPQA'"):
        load_frontier(p)
    p = _write(tmp_path, "model,family,params,val_loss,source\nP,Pythia,1e8,-1,s\n", "loss.csv")
    with pytest.raises(DataError, match=r"row 2, column 'val_loss'"):
        load_loss(p)


# ------------------------------------------------------------------------------------ curation
def _curate_module():
    path = Path(__file__).resolve().parents[1] / "scripts" / "curate_data.py"
    spec = importlib.util.spec_from_file_location("curate_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _public_tables(d: Path) -> Path:
    """A miniature of the public tables, with each defect the curation fixes (one case each)."""
    d.mkdir()
    m = lambda name, fam, nb, hs, tqa, src="leaderboard", **kw: dict(  # noqa: E731
        name=name, family=fam, N_B=nb, HS=hs, TQA=tqa, source=src, gamma12=0.123, **kw)
    models = [
        m("Llama-3-8B", "Llama-3", 8.0, 82.1, 43.9, ARC=60.2, WG=77.6, MMLU=66.6),
        m("Llama3-8B", "Llama-3", 8.0, 82.0, 44.0, "cape_26"),                    # duplicate name
        m("Llama1-7B", "Llama-1", 6.7, 76.2, 34.3, "cape_26"),                    # unhyphenated name
        m("Pythia-1B", "Pythia", 1.0, 47.2, 38.9, ARC=29.1, WG=53.5, MMLU=25.9),
        m("Pythia-6.9B", "Pythia", 6.9, 64.0, 32.0),                               # partly estimated
        m("GPT-J-6B", "Pythia", 6.0, 66.3, 35.9),                                  # filed under Pythia
        m("Gemma-3-4B", "Gemma", 4.0, 70.0, 45.0, "gemma3_results"),
        m("Gemma-4-E4B", "Gemma", 4.0, 72.0, 50.0, "gemma4_results"),              # other generation
        m("Falcon-1B", "Falcon", 1.0, 63.0, 35.0),                                 # d_model via alias
    ]
    (d / "base_models_consolidated.json").write_text(json.dumps({"metadata": {}, "models": models}))
    (d / "architectures.csv").write_text("family,model,d_model\nPythia,Pythia-1B,2048\nPythia,Pythia-6.9B,4096\n"
                                         "Falcon,Falcon-RW-1B,2048\nLlama,Llama-1-7B,4096\n")
    (d / "ai_free_energy_data.json").write_text(json.dumps({"pythia_models": {
        "names": ["1B", "6.9B"], "n_layers": [16, 32], "n_heads": [8, 32]}}))
    (d / "frontier_34models.json").write_text(json.dumps({"models": [
        {"name": "M1", "lab": "L", "swe": 49.0, "gpqa": 59.4, "subset": "Core"}]}))
    (d / "post_cutoff_april2026.json").write_text(json.dumps({"models": [
        {"name": "M2", "lab": "L", "swe": 80.0, "gpqa": 90.0, "date": "2026-04-16"}]}))
    (d / "pythia_validation_loss.csv").write_text("model,params,val_loss\nPythia-1B,1000000000,2.66\n")
    return d


def test_curation_fixes_the_public_tables(tmp_path):
    mod = _curate_module()
    out = tmp_path / "out"
    assert mod.main(["--source", str(_public_tables(tmp_path / "public")), "--out", str(out)]) == 0
    df = load_scores(out / "base_models.csv")       # the curated table passes the project's loader
    assert sorted(df["model"]) == sorted(["Llama-3-8B", "Llama-1-7B", "Pythia-1B", "Pythia-6.9B", "GPT-J-6B",
                                          "Gemma-3-4B", "Gemma-4-E4B", "Falcon-1B"])
    row = df.set_index("model")
    assert row.loc["Llama-3-8B", "HS"] == 82.1                  # the leaderboard row is the one kept
    assert row.loc["GPT-J-6B", "family"] == "GPT-J"
    assert (row.loc["Gemma-3-4B", "family"], row.loc["Gemma-4-E4B", "family"]) == ("Gemma-3", "Gemma-4")
    assert row.loc["Falcon-1B", "d_model"] == 2048 and row.loc["Llama-1-7B", "d_model"] == 4096
    assert (row.loc["Pythia-6.9B", "n_layers"], row.loc["Pythia-6.9B", "n_heads"]) == (32, 32)
    assert "estimated" in row.loc["Pythia-6.9B", "source"]
    assert row.loc["Llama-1-7B", "params"] == 6.7e9            # billions -> a count
    assert set(df["tqa_variant"]) == {"mc2"}
    with open(out / "base_models.csv") as f:
        assert "gamma12" not in next(csv.reader(f))             # the stored coupling is not copied
    fr = load_frontier(out / "frontier.csv")
    assert list(fr["cohort"]) == ["main", "post_cutoff"] and list(fr["GPQA"]) == [59.4, 90.0]
    assert list(load_loss(out / "pythia_loss.csv")["val_loss"]) == [2.66]


def test_curation_names_a_missing_file(tmp_path, capsys):
    mod = _curate_module()
    src = _public_tables(tmp_path / "public")
    (src / "architectures.csv").unlink()
    assert mod.main(["--source", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "architectures.csv" in err and str(src) in err
    assert not (tmp_path / "out" / "base_models.csv").exists()
    with pytest.raises(SystemExit):                              # --source is required
        mod.parse_args([])
