"""Extraction (docs/METHODS.md §3): bad input, options, the command and the store."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from cape_hpc.errors import DataError, OptionError
from cape_hpc.internals import InternalsResult, extract_internals, load_prompts
from cape_hpc.internals.prompts import Prompt, PromptSet
from cape_hpc.models import load_model


# The statistics against a float64 reference from output_hidden_states (SmolLM2-135M and every tiny
# architecture, batch sizes 1, 7, 32) and the streaming state's size: tests/test_internals_streaming.py.


# ------------------------------------------------------------------ bad input
def test_empty_prompt_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n  \n")
    with pytest.raises(DataError, match="empty.jsonl.*empty"):
        load_prompts(f)


def test_non_utf8_file(tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"id": "a", "text": "ok", "set": "x"}\n{"id": "b", "text": "caf\xe9", "set": "y"}\n')
    with pytest.raises(DataError, match="latin1.jsonl: line 2: not valid UTF-8"):
        load_prompts(f)


def test_missing_field_and_bad_json(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "text": "ok", "set": "x"}\n{"id": "b", "set": "y"}\n')
    with pytest.raises(DataError, match="line 2: missing field 'text'"):
        load_prompts(f)
    f.write_text('{"id": "a", "text": "ok", "set": "x"}\n{"id": "b", "text": \n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_prompts(f)


def test_over_long_prompt_is_truncated_with_a_warning():
    lm = load_model("tiny-llama")
    ctx = lm.adapter.context_length
    ps = PromptSet([Prompt("0", "x" * (ctx + 50), "a"), Prompt("1", "short", "b"), Prompt("2", "also short", "a")],
                   path="<t>", sha256="0")
    with pytest.warns(UserWarning, match=f"truncated to their last {ctx} tokens"):
        res = extract_internals(lm, ps, batch_size=2)
    assert res.n_truncated == 1
    assert np.isfinite(res.layer_coupling).all()


def test_unknown_tap_and_pooling():
    lm = load_model("tiny-gpt2")
    ps = PromptSet([Prompt("0", "a", "r"), Prompt("1", "b", "t")], path="<t>", sha256="0")
    with pytest.raises(OptionError, match="--taps.*'attn_pattern' is not one of residual, heads, final, logits"):
        extract_internals(lm, ps, taps=["residual", "attn_pattern"])
    with pytest.raises(OptionError, match="--pooling"):
        extract_internals(lm, ps, pooling="max")


def test_a_single_set_is_an_error():
    lm = load_model("tiny-gpt2")
    ps = PromptSet([Prompt("0", "a", "r"), Prompt("1", "b", "r")], path="one.jsonl", sha256="0")
    with pytest.raises(DataError, match="one.jsonl: coupling needs two prompt sets"):
        extract_internals(lm, ps)


def test_residual_only_taps_stop_early_and_agree():
    lm = load_model("tiny-mistral")
    ps = load_prompts().subset(12)
    full = extract_internals(lm, ps, backend="torch")
    part = extract_internals(lm, ps, taps=["residual"], backend="torch")
    np.testing.assert_allclose(part.layer_coupling, full.layer_coupling, atol=1e-6)
    assert not part.bottleneck.measured and math.isnan(part.bottleneck.hidden) and part.bottleneck.pca == []
    assert np.isnan(part.head_coupling).all() and part.head_summary.n_heads_total == 0
    assert part.taps == ["residual"] and len(part.heads) == part.n_layers * part.n_heads


# ------------------------------------------------------------------ CLI and store
def test_cli_internals_writes_and_merges(tmp_path, capsys):
    from cape_hpc.cli import main
    from cape_hpc.io.store import read_results

    out = tmp_path / "r.h5"
    assert main(["internals", "--model", "tiny-qwen2", "--max-prompts", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Per-layer coupling" in text and "Per-head coupling" in text and "caveat: k = 1" in text
    assert main(["internals", "--model", "tiny-phi", "--max-prompts", "20", "--out", str(out)]) == 0
    tree = read_results(out, "/internals")
    assert set(tree) == {"tiny-qwen2", "tiny-phi"}
    g = InternalsResult.from_tree(tree["tiny-qwen2"], where="/internals/tiny-qwen2")
    for key in ("source", "revision", "dtype", "prompt_set_sha256", "backend"):
        assert getattr(g, key)
    assert g.complete is True and len(g.layers) == 3 and g.head_coupling.shape == (3, 4)
    assert g.provenance.options["max_prompts"] == 20 and g.provenance.inputs["prompts"] == g.prompt_set_sha256
    capsys.readouterr()
    # same content: unchanged; different content: refused, kept; --force: written
    assert main(["internals", "--model", "tiny-qwen2", "--max-prompts", "20", "--out", str(out)]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert main(["internals", "--model", "tiny-qwen2", "--max-prompts", "10", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert read_results(out, "/internals/tiny-qwen2")["n_prompts"] == 20
    assert main(["internals", "--model", "tiny-qwen2", "--max-prompts", "10", "--out", str(out), "--force"]) == 0
    assert read_results(out, "/internals/tiny-qwen2")["n_prompts"] == 10
    assert "tiny-phi" in read_results(out, "/internals")


def test_cli_bad_prompt_file_is_one_line(tmp_path, capsys):
    from cape_hpc.cli import main

    f = tmp_path / "empty.jsonl"
    f.write_text("")
    assert main(["internals", "--model", "tiny-gpt2", "--prompts", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty.jsonl" in err


def test_cli_json(capsys):
    from cape_hpc.cli import main

    assert main(["internals", "--model", "tiny-gemma", "--max-prompts", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_layers"] == 3 and [r["layer"] for r in data["layers"]] == [0, 1, 2]
    assert data["provenance"]["options"]["pooling"] == "last"


# ------------------------------------------------------------------ schema
def test_result_round_trips_and_is_torch_free(tmp_path):
    """A real extraction (tiny model, every tap) survives HDF5 + from_tree field by field, and the
    result module imports without torch (what the report reads)."""
    from roundtrip import assert_roundtrip

    lm = load_model("tiny-gemma")
    res = extract_internals(lm, load_prompts(), max_prompts=8, batch_size=3)
    assert res.bottleneck.measured and len(res.bottleneck.pca) == res.n_prompts - 1
    assert res.head_summary.n_heads_total == res.n_layers * res.n_heads
    back = assert_roundtrip(res, tmp_path, res.group)
    np.testing.assert_array_equal(back.head_coupling, res.head_coupling)
    with pytest.raises(AttributeError, match="no field 'pooled'"):
        res.pooled = {}
    code = ("import sys, cape_hpc.internals.results, cape_hpc.internals.options, cape_hpc.steering.results, "
            "cape_hpc.steering.options; print('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr[-2000:]


def test_d_rep_is_the_participation_ratio_of_the_covariance():
    """d_rep through the Gram matrix (N <= D) equals (tr C)^2 / ||C||_F^2 of the covariance (numpy)."""
    from cape_hpc.internals.extract import participation_ratio

    rng = np.random.default_rng(3)
    for n, d in ((5, 40), (40, 6)):
        X = rng.normal(size=(n, d)) * rng.uniform(0.1, 3, d)
        Xc = X - X.mean(0)
        C = Xc.T @ Xc / (n - 1)
        assert participation_ratio(torch.as_tensor(X)) == pytest.approx(np.trace(C) ** 2 / (C * C).sum(), rel=1e-12)
    assert math.isnan(participation_ratio(torch.ones(1, 4)))


def test_options_are_validated_and_stored(capsys):
    from cape_hpc.internals import ExtractOptions

    with pytest.raises(OptionError, match="--batch-size.*>= 1"):
        ExtractOptions(batch_size=0)
    with pytest.raises(OptionError, match="--max-prompts.*>= 2"):
        ExtractOptions(max_prompts=1)
    assert ExtractOptions(taps=("final,residual", "final")).taps == ("final", "residual")
    lm = load_model("tiny-gpt2")
    res = extract_internals(lm, load_prompts(), ExtractOptions(pooling="mean", max_prompts=6), batch_size=2)
    assert res.provenance.options == ExtractOptions(pooling="mean", max_prompts=6, batch_size=2).to_dict()
    assert res.n_prompts == 6 and res.pooling == "mean"
