"""Loader validation: the shipped tables load; every bad-input case names file, row and column."""
import pytest

from cape_hpc.errors import DataError
from cape_hpc.io.scores import SCORE_COLUMNS, load_frontier, load_loss, load_scores


def test_shipped_tables_load():
    df = load_scores()
    assert len(df) == 61
    assert df["model"].is_unique
    assert set(df["tqa_variant"]) == {"mc2"}
    assert (df["source"].str.len() > 0).all()
    # SPEC section 1 fixes
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
    with pytest.raises(DataError, match="not UTF-8"):
        load_scores(p)
    with pytest.raises(DataError, match="file not found"):
        load_scores(tmp_path / "nope.csv")


def test_frontier_and_loss_validation(tmp_path):
    p = _write(tmp_path, "model,lab,date,SWE,GPQA,cohort,source\nX,L,,50,x,main,s\n", "fr.csv")
    with pytest.raises(DataError, match=r"row 2, column 'GPQA'"):
        load_frontier(p)
    p = _write(tmp_path, "model,family,params,val_loss,source\nP,Pythia,1e8,-1,s\n", "loss.csv")
    with pytest.raises(DataError, match=r"row 2, column 'val_loss'"):
        load_loss(p)
