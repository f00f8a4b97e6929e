"""Streaming extraction (docs/METHODS.md §3): statistics against a direct float64 numpy computation on hidden states
taken with output_hidden_states=True from the same real model (SmolLM2-135M), streaming memory,
the store, and bad input."""
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from cape_hpc.errors import DataError, OptionError
from cape_hpc.internals import InternalsResult, extract_internals, load_prompts
from cape_hpc.internals.prompts import Prompt, PromptSet
from cape_hpc.models import load_model


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def small_set():
    ps = load_prompts()
    keep = ps.select("reasoning")[:5] + ps.select("truthfulness")[:5]
    return PromptSet(keep, path=ps.path, sha256=ps.sha256)


def _np_cos(a, b):
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _np_pairwise(R, T):
    Rn = R / np.linalg.norm(R, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    C = Rn @ Tn.T
    return C.mean(), (C < -0.5).mean()


def _np_pr(X):
    Xc = X - X.mean(0)
    lam = np.clip(np.linalg.eigvalsh(Xc.T @ Xc), 0, None)
    return lam.sum() ** 2 / (lam ** 2).sum()


@pytest.mark.realmodel
def test_statistics_match_numpy_on_output_hidden_states(smol, small_set):
    res = extract_internals(smol, small_set, batch_size=4)       # batches with left padding
    tok, model, ad = smol.tokenizer, smol.model, smol.adapter
    L, H, dh = ad.n_layers, ad.n_heads, ad.head_dim
    hs, logits, heads = [], [], []
    cap = {}
    hooks = [ad.out_proj(l).register_forward_pre_hook(
        (lambda l: lambda m, a: cap.__setitem__(l, a[0][0, -1].double().numpy()))(l)) for l in range(L)]
    try:
        for p in small_set.prompts:                                # one prompt per forward, no padding
            ids = tok(p.text, return_tensors="pt")
            with torch.no_grad():
                out = model(**ids, output_hidden_states=True)
            hs.append(np.stack([h[0, -1].double().numpy() for h in out.hidden_states]))
            logits.append(out.logits[0, -1].double().numpy())
            heads.append(np.stack([cap[l] for l in range(L)]))
    finally:
        for h in hooks:
            h.remove()
    hs = np.stack(hs)                      # [N, L+1, D]; hidden_states[l+1] = output of block l
    is_r = np.array([p.set == "reasoning" for p in small_set.prompts])
    for l in range(L - 1):                 # the last entry of hidden_states is after the final norm
        X = hs[:, l + 1]
        R, T = X[is_r], X[~is_r]
        assert res.layer_coupling[l] == pytest.approx(_np_cos(R.mean(0), T.mean(0)), abs=2e-5)
        m, f = _np_pairwise(R, T)
        assert res.layer_pairwise_mean[l] == pytest.approx(m, abs=2e-5)
        assert res.layer_competing_fraction[l] == pytest.approx(f, abs=1e-12)
        assert res.d_rep[l] == pytest.approx(_np_pr(np.concatenate([R, T])), rel=2e-4)
    # final norm output = the last hidden state
    F = hs[:, L]
    assert res.bottleneck.hidden == pytest.approx(_np_cos(F[is_r].mean(0), F[~is_r].mean(0)), abs=2e-5)
    lg = np.stack(logits)
    assert res.bottleneck.logits == pytest.approx(_np_cos(lg[is_r].mean(0), lg[~is_r].mean(0)), abs=2e-5)
    # top-k PCA subspaces of the stacked final states
    Fs = np.concatenate([F[is_r], F[~is_r]])
    U, s, Vt = np.linalg.svd(Fs - Fs.mean(0), full_matrices=False)
    a, b = Vt @ F[is_r].mean(0), Vt @ F[~is_r].mean(0)
    ref = np.cumsum(a * b) / np.sqrt(np.cumsum(a * a) * np.cumsum(b * b))
    k = len(res.bottleneck.pca_k)
    assert k == len(small_set) - 1
    np.testing.assert_allclose(res.bottleneck.pca_coupling, ref[:k], atol=5e-4)
    assert abs(res.bottleneck.pca_coupling[0]) == pytest.approx(1.0)
    # per head
    Hd = np.stack(heads).reshape(len(hs), L, H, dh)
    mr, mt = Hd[is_r].mean(0), Hd[~is_r].mean(0)
    ref_h = (mr * mt).sum(-1) / np.sqrt((mr * mr).sum(-1) * (mt * mt).sum(-1))
    np.testing.assert_allclose(res.head_coupling, ref_h, atol=5e-5)
    s = res.head_summary
    assert s.cooperative_share == pytest.approx(np.mean(ref_h > 0), abs=1 / ref_h.size)
    assert s.net == pytest.approx(ref_h.mean(), abs=5e-5)
    thirds = np.array_split(np.arange(L), 3)
    assert s.early == pytest.approx(ref_h[thirds[0]].mean(), abs=5e-5)
    assert s.late == pytest.approx(ref_h[thirds[2]].mean(), abs=5e-5)


_MEM_SCRIPT = textwrap.dedent("""
    import resource, sys, json, warnings
    import torch
    torch.set_num_threads(1)
    from cape_hpc.models.tiny import build_tiny
    from cape_hpc.models.loading import LoadedModel
    from cape_hpc.models.adapters import Adapter
    from cape_hpc.internals import extract_internals
    from cape_hpc.internals.prompts import Prompt, PromptSet
    n = int(sys.argv[1])
    model, tok = build_tiny("llama", hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                            num_key_value_heads=2, intermediate_size=256)
    lm = LoadedModel(model, tok, Adapter(model), "tiny", "seed=0", "float32", "tiny-llama")
    ps = PromptSet([Prompt(str(i), ("prompt %d " % i) * 4, "a" if i % 2 else "b") for i in range(n)],
                   path="<mem>", sha256="0")
    warm = PromptSet(ps.prompts[:32], path="<mem>", sha256="0")
    extract_internals(lm, warm, batch_size=32, backend="torch")
    res = extract_internals(lm, ps, batch_size=32, backend="torch")
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "L": res.n_layers, "D": res.d_model}))
""")


def test_streaming_peak_memory_does_not_grow_with_prompts(tmp_path):
    """Peak RSS over 1,024 prompts exceeds the one over 64 by a small multiple of the pooled vectors
    themselves; an activation cache of these prompts would be ~0.5-1 GB."""
    out = {}
    for n in (64, 1024):
        p = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, str(n)], capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        out[n] = json.loads(p.stdout.strip().splitlines()[-1])
    L, D = out[1024]["L"], out[1024]["D"]
    pooled_bytes = 1024 * (L + 1) * D * 4              # residual [L, N, D] + final [N, D], float32
    grow = (out[1024]["maxrss_kb"] - out[64]["maxrss_kb"]) * 1024
    # measured on 2 CPU cores: 14-24 MB of growth (token lists, per-batch buffers) for 11 MB of pooled
    # vectors; an activation cache would add 500+ MB
    assert grow < 3 * pooled_bytes, (grow, pooled_bytes)


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
