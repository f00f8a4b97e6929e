"""The extraction's streaming state on each block's own device (issue 24 item 2).

``execution_devices`` maps an accelerate ``device_map`` to the device each block runs on (checked
by hand against accelerate's rule, and against the hooks accelerate really attaches); the
extraction keeps one state per device and gathers once at the end.  A CPU machine has one device
type, so the per-device path is forced by giving two groups of blocks two distinct device keys
(``cpu`` and ``cpu:0``): its results equal the one-state run bit for bit, and the CPU + disk split
of tests/test_models_offload.py equals the unsplit run.  On a machine with a GPU the same path runs
over cuda:0 + cuda:1 (a real device map) or cuda:0 + cpu."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cape_hpc.internals.extract as extract
from cape_hpc.internals import extract_internals, load_prompts
from cape_hpc.models import load_model
from cape_hpc.models.loading import split_map
from cape_hpc.models.tracing import execution_devices, layer_devices

CPU, CPU0 = torch.device("cpu"), torch.device("cpu", 0)
ALL_TAPS = ("residual", "heads", "final", "logits")


def test_execution_devices_follow_accelerates_rule():
    """GPU entries run in place; "cpu" and "disk" entries are offloaded to the main device (the
    lowest GPU of the map), or run on the CPU when the map has no GPU."""
    dm = {"model.embed_tokens": 1, "model.layers.0": 1, "model.layers.1": "cpu", "model.layers.2": 0,
          "model.layers.3": "disk", "model.norm": 0, "lm_head": "cpu"}
    names = [f"model.layers.{i}" for i in range(4)] + ["model.norm", "lm_head"]
    cuda = [torch.device("cuda", i) for i in (0, 1)]
    assert execution_devices(dm, names) == [cuda[1], cuda[0], cuda[0], cuda[0], cuda[0], cuda[0]]
    dm = {"model.embed_tokens": "cuda:1", "model.layers.0": "cuda:1", "model.layers.1": "cuda:0",
          "model.layers.2": "disk"}
    assert execution_devices(dm, names[:3]) == [cuda[1], cuda[0], cuda[0]]
    dm = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "lm_head": "disk"}
    assert execution_devices(dm, names[:2] + ["lm_head"]) == [CPU, CPU, CPU]
    # a coarser key places everything inside it; a block split further takes its first part's device
    assert execution_devices({"model": "cuda:1", "lm_head": "cpu"}, names[:2]) == [cuda[1], cuda[1]]
    dm = {"model.layers.0": "cuda:1", "model.layers.1.self_attn": "cuda:0", "model.layers.1.mlp": "cuda:1"}
    assert execution_devices(dm, names[:2]) == [cuda[1], cuda[0]]
    assert execution_devices({"": 0}, names[:1]) == [cuda[0]]


def test_layer_devices_match_the_hooks_accelerate_attaches(tmp_path):
    """On the CPU + disk split every block runs on the CPU, as accelerate's hooks say; a model
    without a device map runs every block on the default device."""
    one = load_model("tiny-llama")
    assert layer_devices(one, CPU) == [CPU] * one.adapter.n_layers
    split = load_model("tiny-llama", device_map=split_map(one, 2), offload_folder=str(tmp_path / "off"))
    got = layer_devices(split, CPU)
    hooks = [torch.device(blk._hf_hook.execution_device) for blk in split.adapter.layers]
    assert got == hooks == [CPU] * one.adapter.n_layers


def _forced(monkeypatch, n_first: int, first=CPU, rest=CPU0):
    """Blocks 0 .. n_first-1 on ``first``, the others on ``rest`` (two states)."""
    monkeypatch.setattr(extract, "layer_devices",
                        lambda loaded, default: [first if i < n_first else rest
                                                 for i in range(loaded.adapter.n_layers)])


def _equal_blocks(b, a):
    for name in ("layer_sums", "layer_unit_sums", "head_sums", "final_sums", "pairs_below", "pair_counts"):
        np.testing.assert_array_equal(getattr(b.blocks, name), getattr(a.blocks, name), err_msg=name)
    np.testing.assert_array_equal(b.d_rep, a.d_rep)
    np.testing.assert_array_equal(b.layer_coupling, a.layer_coupling)
    np.testing.assert_array_equal(b.layer_competing_fraction, a.layer_competing_fraction)


@pytest.mark.parametrize("mode", [dict(), dict(pair_budget_mb=0.01), dict(d_rep_mode="sketch", d_rep_sketch=16)],
                         ids=["exact", "reservoir", "sketch"])
def test_per_device_state_equals_one_state(monkeypatch, mode):
    """Two states (blocks 0-1 and 2-3 on distinct devices) give bit-identical block statistics; the
    pair counts' reservoir draws are the same on every device; each device holds its own copy of
    the pair rows' block labels (the only state that grows with the devices)."""
    lm = load_model("tiny-llama")
    ps = load_prompts().subset(16)
    kw = dict(batch_size=5, block_resamples=50, taps=ALL_TAPS, **mode)
    a = extract_internals(lm, ps, **kw)
    _forced(monkeypatch, 2)
    b = extract_internals(lm, ps, **kw)
    _equal_blocks(b, a)
    assert b.pairs_mode == a.pairs_mode == ("reservoir" if "pair_budget_mb" in mode else "exact")
    extra = 8 * (a.reservoir_size * 2 if a.pairs_mode == "reservoir" else a.n_r + a.n_t)
    if mode.get("d_rep_mode") == "sketch":
        extra += 8 * lm.adapter.d_model * 16              # the sketch matrix on the second device
    assert b.state_bytes == a.state_bytes + extra


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_offload_split_with_per_device_state_equals_unsplit(monkeypatch, tmp_path, arch):
    """The CPU + disk split of tests/test_models_offload.py with the per-device path forced on (the
    CPU blocks and the offloaded blocks in two states) equals the unsplit one-state run."""
    ps = load_prompts().subset(16)
    one = load_model(f"tiny-{arch}")
    split = load_model(f"tiny-{arch}", device_map=split_map(one, 1), offload_folder=str(tmp_path / "off"))
    kw = dict(batch_size=5, block_resamples=50, taps=ALL_TAPS)
    a = extract_internals(one, ps, **kw)
    _forced(monkeypatch, 1)
    b = extract_internals(split, ps, **kw)
    assert b.state_bytes > a.state_bytes                   # two states ran
    for name in ("layer_sums", "layer_unit_sums", "head_sums", "final_sums"):
        np.testing.assert_allclose(getattr(b.blocks, name), getattr(a.blocks, name), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(b.blocks.pairs_below, a.blocks.pairs_below)
    np.testing.assert_allclose(b.layer_coupling, a.layer_coupling, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.head_coupling, a.head_coupling, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.d_rep, a.d_rep, rtol=1e-6)
    np.testing.assert_allclose(b.layer_coupling_ci, a.layer_coupling_ci, rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_cuda_per_device_state_equals_one_device(monkeypatch):
    """On 2+ GPUs: tiny-llama split by a real device map over cuda:0 / cuda:1 (each block's state on
    its GPU) equals the model on cuda:0.  On one GPU: blocks 0-1 reduced on cuda:0 and 2-3 on the
    CPU (their tensors copied there) equal the one-device run."""
    ps = load_prompts().subset(24)
    kw = dict(batch_size=8, block_resamples=50, taps=ALL_TAPS)
    one = load_model("tiny-llama")
    one.model.to("cuda:0")
    a = extract_internals(one, ps, **kw)
    if torch.cuda.device_count() >= 2:
        other = load_model("tiny-llama", device_map=split_map(one, 2, "cuda:0", "cuda:1"))
        assert {str(d) for d in layer_devices(other, "cuda:0")} == {"cuda:0", "cuda:1"}
    else:
        other = one
        _forced(monkeypatch, 2, torch.device("cuda", 0), CPU)
    b = extract_internals(other, ps, **kw)
    assert b.state_bytes > a.state_bytes
    for name in ("layer_sums", "layer_unit_sums", "head_sums", "final_sums"):
        np.testing.assert_allclose(getattr(b.blocks, name), getattr(a.blocks, name), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b.layer_coupling, a.layer_coupling, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b.d_rep, a.d_rep, rtol=1e-5)
