"""The pandas-free table of `cape nc` (cape_hpc.io.scores.ScoreColumns): the same columns, checks,
error lines and N_c results as the DataFrame the other commands read."""
import numpy as np
import pytest

from cape_hpc.analysis.nc import estimate_nc
from cape_hpc.analysis.options import NcOptions
from cape_hpc.errors import DataError, OptionError
from cape_hpc.io.data import data_file
from cape_hpc.io.scores import ScoreColumns, load_scores

HEADER = "model,family,params,d_model,n_layers,n_heads,HS,TQA,ARC,WG,MMLU,tqa_variant,source\n"
GOOD = "A-1B,A,1000000000,2048,,,50,40,30,60,25,MC2,test\nA-2B,A,2000000000,2560,,,55,39,31,61,26,mc2,test\n"


def _write(tmp_path, text):
    p = tmp_path / "scores.csv"
    p.write_text(text)
    return p


def _same_table(cols, df):
    assert isinstance(cols, ScoreColumns) and cols.columns == list(df.columns) and len(cols) == len(df)
    assert cols.attrs == df.attrs
    for c in df.columns:
        want = df[c].to_numpy()
        assert cols[c].dtype == want.dtype, c
        np.testing.assert_array_equal(cols[c], want)


def test_shipped_and_user_tables_read_as_the_dataframe(tmp_path):
    _same_table(load_scores(frame=False), load_scores())
    # lower-cased variant, a blank optional score, equal N twice in a family (attrs), an extra text column
    text = (HEADER.replace("source\n", "source,note\n") + GOOD.replace("test\n", "test,x\n")
            + "A-2Bb,A,2000000000,2560,,,56,38,,61,26,mc2,test,y\n")
    p = _write(tmp_path, text)
    cols, df = load_scores(p, frame=False), load_scores(p)
    _same_table(cols, df)
    assert cols.attrs["same_n_in_family"] == ["A-2B", "A-2Bb"] and list(cols["tqa_variant"]) == ["mc2"] * 3


@pytest.mark.parametrize("text", [
    HEADER + GOOD + "A-3B,A,3e9,2048,,,60,40,30,60,25,mc1,t\n",       # mixed variants
    HEADER + "A-1B,A,1e9,2048,,,50,40,30,60,25,mc3,t\n",              # unknown variant
    HEADER + GOOD + "A-3B,A,3e9,2048,,,NaN,40,30,60,25,mc2,t\n",       # explicit NaN
    HEADER.replace(",TQA", "") + "A-1B,A,1e9,2048,,,50,30,60,25,mc2,t\n",  # missing column
])
def test_bad_tables_fail_with_the_same_line(tmp_path, text):
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as frame:
        load_scores(p)
    with pytest.raises(DataError) as cols:
        load_scores(p, frame=False)
    assert str(cols.value) == str(frame.value)


@pytest.mark.parametrize("estimator", ["quadratic", "sign-change", "gamma-fit"])
@pytest.mark.parametrize("pooled", [False, True])
def test_estimate_nc_is_the_same_on_both_tables(estimator, pooled):
    """Every number of the result (and its provenance) is the same; the families option, a blank
    optional score (ARC: models dropped) and the window go through both."""
    path = data_file("base_models.csv")
    for kw in ({}, {"families": ("OPT", "Pythia", "Qwen3", "Gemma-3"), "pair": ("HS", "ARC"), "window": (8.0, 10.5)}):
        opts = NcOptions(estimator=estimator, pooled=pooled, n_resamples=500, seed=3, **kw)
        want = estimate_nc(load_scores(path), opts)
        got = estimate_nc(load_scores(path, frame=False), opts)
        assert got.to_json() == want.to_json()
    assert want.dropped, "ARC is blank for some models of these families"


def test_option_errors_are_the_same_on_both_tables():
    for kw in ({"families": ("OPT", "Nope")}, {"pair": ("HS", "source")}, {"pair": ("HS", "nope")}):
        msgs = []
        for frame in (True, False):
            with pytest.raises(OptionError) as err:
                estimate_nc(load_scores(frame=frame), NcOptions(n_resamples=10, **kw))
            msgs.append(str(err.value))
        assert msgs[0] == msgs[1]
