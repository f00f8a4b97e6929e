"""A model split over devices with an accelerate ``device_map`` (``load_model(device_map=...)``) gives
the same results as the same model on one device: a tiny model with its first blocks on the CPU and
the rest offloaded to disk (weights loaded per forward, on the meta device between passes), placed by
an explicit map and by a ``max_memory`` plan.  Extraction (every tap, all couplings, d_rep, the pair
counts) and the steering scores (per-row injection at an offloaded block, calibration states from
another) equal the unsplit run.  On a GPU machine scripts/gpu_check.sh splits a model between the
GPU and the CPU the same way."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cape_hpc.errors import OptionError
from cape_hpc.internals import extract_internals, load_prompts
from cape_hpc.models import load_model
from cape_hpc.models.batching import tokenize
from cape_hpc.models.loading import model_device, split_map
from cape_hpc.steering import Injection, score_rows

ARCHS = ["llama", "gpt_neox"]   # tied and untied unembedding


def offloaded(lm) -> list[str]:
    return sorted(k for k, v in lm.info["device_map"].items() if v == "disk")


@pytest.mark.parametrize("arch", ARCHS)
def test_split_extraction_equals_unsplit(arch, tmp_path):
    ps = load_prompts().subset(16)
    one = load_model(f"tiny-{arch}")
    split = load_model(f"tiny-{arch}", device_map=split_map(one, 1), offload_folder=str(tmp_path / "off"))
    assert offloaded(split) and any(p.device.type == "meta" for p in split.model.parameters())
    assert model_device(split.model) == torch.device("cpu")
    kw = dict(batch_size=5, block_resamples=50, taps=("residual", "heads", "final"))
    a, b = extract_internals(one, ps, **kw), extract_internals(split, ps, **kw)
    np.testing.assert_allclose(b.layer_coupling, a.layer_coupling, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.head_coupling, a.head_coupling, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.layer_pairwise_mean, a.layer_pairwise_mean, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(b.layer_competing_fraction, a.layer_competing_fraction)
    np.testing.assert_allclose(b.d_rep, a.d_rep, rtol=1e-6)
    np.testing.assert_allclose(b.layer_coupling_ci, a.layer_coupling_ci, rtol=0, atol=1e-6)


def test_split_steering_scores_equal_unsplit(tmp_path):
    one = load_model("tiny-llama")
    split = load_model("tiny-llama", device_map=split_map(one, 1), offload_folder=str(tmp_path / "off"))
    ctx, _ = tokenize(one, ["Is glass a liquid?", "Why do cats purr?", "ok", "Water boils at"])
    ids = [c + a for c in ctx for a in ([70, 71], [72])]
    n_ans = [2, 1] * len(ctx)
    R, D = len(ids), one.adapter.d_model
    v = torch.randn(1, 1, D, generator=torch.Generator().manual_seed(3))
    inj = Injection(layers=[2], directions=v, alpha=np.linspace(0.0, 2.0, R), layer_index=np.zeros(R, np.int64),
                    dir_index=np.zeros(R, np.int64))
    kw = dict(capture=(0, 2), batch_size=3)
    a, b = score_rows(one, ids, n_ans, inj, **kw), score_rows(split, ids, n_ans, inj, **kw)
    assert a.n_injected == b.n_injected > 0
    np.testing.assert_allclose(b.logprob, a.logprob, rtol=0, atol=1e-6)
    for L in (0, 2):
        np.testing.assert_allclose(b.states[L], a.states[L], rtol=0, atol=1e-6)
    plain = score_rows(one, ids, n_ans, None, **kw)
    assert np.abs(plain.logprob - a.logprob).max() > 1e-4          # the injection did something


def test_max_memory_plan_offloads_and_equals_unsplit(tmp_path):
    """A "sequential" plan with a CPU budget of about two blocks: accelerate fills the CPU, then disk."""
    one = load_model("tiny-gpt_neox")
    block = sum(p.numel() * p.element_size() for p in one.adapter.layers[0].parameters())
    emb = one.model.get_input_embeddings().weight
    budget = emb.numel() * emb.element_size() + 2 * block
    split = load_model("tiny-gpt_neox", device_map="sequential", max_memory={"cpu": budget},
                       offload_folder=str(tmp_path / "off"))
    assert offloaded(split), split.info
    ps = load_prompts().subset(12)
    a, b = extract_internals(one, ps, batch_size=4), extract_internals(split, ps, batch_size=4)
    np.testing.assert_allclose(b.layer_coupling, a.layer_coupling, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.d_rep, a.d_rep, rtol=1e-6)


def test_placement_errors(tmp_path):
    with pytest.raises(OptionError, match="need --device-map"):
        load_model("tiny-llama", max_memory={"cpu": 10**9})
    with pytest.raises(OptionError, match="--max-memory: no block"):
        load_model("tiny-llama", device_map="sequential", max_memory={"cpu": 1000},
                   offload_folder=str(tmp_path / "off"))


def test_cli_device_map_flags(tmp_path, capsys):
    """`cape internals --device-map sequential --max-memory cpu=... --offload-folder` prints the same
    couplings as the unsplit run; a malformed --max-memory is one line naming the flag, exit 2."""
    import json

    from cape_hpc.cli import main

    one = load_model("tiny-gpt_neox")
    block = sum(p.numel() * p.element_size() for p in one.adapter.layers[0].parameters())
    emb = one.model.get_input_embeddings().weight
    budget = emb.numel() * emb.element_size() + 2 * block
    base = ["internals", "--model", "tiny-gpt_neox", "--max-prompts", "12", "--batch-size", "4", "--json"]
    assert main(base) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(base + ["--device-map", "sequential", "--max-memory", f"cpu={budget}",
                        "--offload-folder", str(tmp_path / "off")]) == 0
    b = json.loads(capsys.readouterr().out)
    ca = [r["coupling"] for r in a["layers"]]
    cb = [r["coupling"] for r in b["layers"]]
    np.testing.assert_allclose(cb, ca, rtol=0, atol=1e-6)
    assert main(base + ["--device-map", "auto", "--max-memory", "gpu0=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-memory" in err[0] and "gpu0=1" in err[0]
