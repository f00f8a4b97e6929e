"""`cape dynamics` / `cape predict`: JSON output, HDF5 output merged into an existing file, read back
through the result classes."""
import json

import numpy as np

from cape_hpc.cli import main
from cape_hpc.dynamics import DynamicsOptions, DynamicsResult, PredictResult, discover
from cape_hpc.io.scores import load_scores
from cape_hpc.io.store import read_results, write_results


def test_dynamics_json(capsys):
    rc = main(["dynamics", "--train", "Pythia", "--holdout", "Llama-2", "--model", "linear",
               "--n-resamples", "20", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "linear" and out["train"] == ["Pythia"] and out["holdout"] == ["Llama-2"]
    assert [b["degree"] for b in out["baselines"]] == [1, 2, 3, 4]
    assert len(out["equations"]) == 5 and out["provenance"]["n_resamples"] == 20
    assert 0 <= out["holdout_error"]["rel_mae"] < 10
    assert out["units"] == "fraction" and out["provenance"]["options"]["model"] == "linear"
    # the command prints what the library returns for the same options
    ref = discover(load_scores(), DynamicsOptions(model="linear", n_resamples=20))
    assert out["holdout_error"]["rel_mae"] == ref.holdout_error.rel_mae
    np.testing.assert_array_equal(np.array(out["coefficients"]), ref.coefficients)


def test_dynamics_text_and_bad_option(capsys):
    assert main(["dynamics", "--train", "Pythia", "--holdout", "Llama-2", "--n-resamples", "10"]) == 0
    text = capsys.readouterr().out
    assert "poly deg 2" in text and "d(HS)/dlog10N" in text and "inclusion probability" in text
    assert "fitted in fraction units" in text and "errors in percent" in text
    assert main(["dynamics", "--train", "Nope", "--holdout", "Llama-2"]) == 2
    err = capsys.readouterr().err
    assert "option '--train'" in err and len(err.strip().splitlines()) == 1


def test_out_merges_keeps_other_groups_and_refuses_changes(tmp_path, capsys):
    h5 = tmp_path / "r.h5"
    write_results(h5, {"/analysis/other": {"x": 1.0}})
    args = ["dynamics", "--train", "Pythia", "--holdout", "Llama-2", "--model", "linear", "--n-resamples", "10",
            "--out", str(h5)]
    assert main(args) == 0
    assert main(["predict", "--family", "Pythia", "--size", "70B", "--model", "linear", "--n-resamples", "10",
                 "--out", str(h5)]) == 0
    tree = read_results(h5)
    assert tree["analysis"]["other"]["x"] == 1.0
    assert "Pythia--Llama-2" in tree["dynamics"]["linear"]
    assert "Pythia" in tree["dynamics"]["predict"]
    dyn = DynamicsResult.from_tree(tree["dynamics"]["linear"]["Pythia--Llama-2"], where="/dynamics/linear/Pythia--Llama-2")
    assert dyn.model == "linear" and dyn.term_stability.n_resamples == 10
    pred = PredictResult.from_tree(tree["dynamics"]["predict"]["Pythia"]["7e+10"], where="/dynamics/predict/Pythia/7e+10")
    assert pred.size == 7e10 and pred.start_model == "Pythia-12B"
    assert main(args) == 0  # same content: unchanged
    changed = args[:-2] + ["--ridge", "0.5", "--out", str(h5)]
    assert main(changed) == 2 and "force" in capsys.readouterr().err
    assert main(changed + ["--force"]) == 0
    assert read_results(h5)["analysis"]["other"]["x"] == 1.0


def test_predict_json(capsys):
    rc = main(["predict", "--family", "Pythia", "--size", "30B", "--model", "linear", "--n-resamples", "30",
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["start_model"] == "Pythia-12B" and out["size"] == 3e10
    assert set(out["baselines"]) == {"poly1", "poly2", "poly3", "poly4"} and out["n_valid"] > 0
    assert [ci["level"] for ci in out["band"]["HS"]] == [0.95, 0.68]
    assert all(ci["low"] <= ci["high"] for b in out["benchmarks"] for ci in out["band"][b])
    assert main(["predict", "--family", "Pythia", "--size", "huge"]) == 2
    assert "option '--size'" in capsys.readouterr().err
    assert main(["predict", "--size", "7B"]) == 2
    assert "option '--family'" in capsys.readouterr().err


def test_results_without_holdout_or_term_stability_round_trip(tmp_path):
    from roundtrip import assert_roundtrip

    res = discover(load_scores(), DynamicsOptions(model="linear", holdout=(), n_resamples=0))
    assert res.holdout_error is None and res.term_stability is None and res.predictions == []
    assert res.phase_fits is not None and {f.phase for f in res.phase_fits.fits} == {"tax", "bonus"}
    back = assert_roundtrip(res, tmp_path, "/dynamics/linear/Pythia--none")
    assert back.holdout_error is None and back.phase_fits.units == "fraction"
