"""Steering invariants (docs/METHODS.md §4) on the real SmolLM2-135M and on tiny models:
alpha = 0 is byte-identical to the unsteered model, the gate with tau = -1 changes nothing,
batched equals unbatched, hooks are removed even when generation raises, the injection adds
exactly alpha * s * v at the probe layer, and bad options give clear errors."""

import numpy as np
import pytest
import torch

from cape_hpc.errors import OptionError
from cape_hpc.internals import load_prompts
from cape_hpc.internals.prompts import PromptSet
from cape_hpc.models import load_model
from cape_hpc.models.batching import tokenize
from cape_hpc.stats import wilson_interval
from cape_hpc.steering import (Steering, SteeringOutcomeResult, SteeringResult, SteerOptions, calibrate_direction,
                               greedy_generate, run_steering)


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def cal():
    return load_prompts(calibration=True)


@pytest.fixture(scope="module")
def prompts():
    ps = load_prompts()
    return PromptSet(ps.select("truthfulness")[:4], path=ps.path, sha256=ps.sha256)


@pytest.fixture(scope="module")
def direction(smol, cal):
    return calibrate_direction(smol, cal)


def _hooks(loaded):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in loaded.model.modules())


@pytest.mark.realmodel
def test_alpha_zero_is_byte_identical(smol, cal, prompts, direction):
    res = run_steering(smol, cal, prompts, alpha=0.0, max_new_tokens=8, direction=direction, chat_template="on")
    assert res.n_changed == 0 and res.rate == 0.0
    for r in res.per_prompt:
        assert r.steered.encode() == r.baseline.encode()
    assert _hooks(smol) == 0


@pytest.mark.realmodel
def test_gate_tau_minus_one_changes_nothing(smol, cal, prompts, direction):
    res = run_steering(smol, cal, prompts, alpha=2.0, tau=-1.0, max_new_tokens=8, direction=direction,
                       chat_template="on")
    assert res.n_changed == 0 and res.n_injected == 0
    assert all(r.steered == r.baseline for r in res.per_prompt)


@pytest.mark.realmodel
def test_steering_changes_text_and_batched_equals_unbatched(smol, cal, prompts, direction):
    a = run_steering(smol, cal, prompts, alpha=0.5, max_new_tokens=8, batch_size=4, direction=direction,
                     chat_template="on")
    b = run_steering(smol, cal, prompts, alpha=0.5, max_new_tokens=8, batch_size=1, direction=direction,
                     chat_template="on")
    assert a.n_changed >= 1                                   # the injection does something
    for x, y in zip(a.per_prompt, b.per_prompt):
        assert x.baseline == y.baseline
        assert x.steered == y.steered
        assert x.cos == pytest.approx(y.cos, abs=1e-5)
    assert a.rate_ci == wilson_interval(a.n_changed, a.n_prompts, 0.95)


@pytest.mark.realmodel
def test_greedy_baseline_matches_transformers_generate(smol, prompts):
    """Our batched KV-cache greedy loop equals transformers' own greedy generate, one prompt alone."""
    text = prompts.prompts[0].text
    ids, _ = tokenize(smol, [text])
    ours = greedy_generate(smol, ids, 8)[0]
    with torch.no_grad():
        ref = smol.model.generate(torch.tensor(ids), attention_mask=torch.ones(1, len(ids[0]), dtype=torch.long),
                                  max_new_tokens=8, do_sample=False, pad_token_id=smol.tokenizer.pad_token_id)
    ref = ref[0, len(ids[0]):].tolist()
    eos = smol.tokenizer.eos_token_id
    ref = ref[:ref.index(eos)] if eos in ref else ref
    assert ours == ref


@pytest.mark.realmodel
def test_hooks_removed_when_generation_raises(smol, direction, prompts):
    ids, _ = tokenize(smol, prompts.texts[:2])
    steering = Steering(direction.probe_layer, torch.as_tensor(direction.vector, dtype=torch.float32), 1.0)
    before = _hooks(smol)
    during = []
    boom = smol.adapter.layers[-1].register_forward_hook(
        lambda *a: during.append(_hooks(smol)) or (_ for _ in ()).throw(RuntimeError("boom")))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            greedy_generate(smol, ids, 4, steering)
        assert during == [before + 2]                 # the injection hook was there while it ran
    finally:
        boom.remove()
    assert _hooks(smol) == before


@pytest.mark.realmodel
def test_probe_layer_out_of_range(smol, cal, prompts):
    with pytest.raises(OptionError, match=r"--probe-layer 30 is out of range: smollm2-135m has layers 0..29"):
        run_steering(smol, cal, prompts, probe_layer=30)
    with pytest.raises(OptionError, match="--probe-layer -1"):
        calibrate_direction(smol, cal, probe_layer=-1)


def test_bad_options():
    lm = load_model("tiny-llama")
    cal = load_prompts(calibration=True)
    ps = PromptSet(load_prompts().prompts[:2], path="x", sha256="0")
    for kw, msg in [({"scale": "log"}, "--scale"), ({"positions": "first"}, "--positions"),
                    ({"method": "lda"}, "--direction"), ({"alpha": float("nan")}, "--alpha"),
                    ({"max_new_tokens": 0}, "--max-new-tokens"), ({"tau": float("inf")}, "--tau.*finite"),
                    ({"batch_size": 0}, "--batch-size"), ({"prompt_set": "nope"}, "--set.*'nope'"),
                    ({"chat_template": "on"}, "--chat-template.*no chat template")]:
        with pytest.raises(OptionError, match=msg):
            run_steering(lm, cal, ps, **kw)


@pytest.mark.parametrize("scale", ["absolute", "relative"])
def test_injection_adds_alpha_s_v_at_the_probe_layer(scale):
    """Algebra check (repeng style) on a tiny model: the probe block's output becomes
    h + alpha * s * v with s = 1 or |h|, at the selected positions only, and scales add."""
    lm = load_model("tiny-qwen3")
    ad = lm.adapter
    layer = 1
    D = ad.d_model
    v = torch.randn(D, generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    ids, _ = tokenize(lm, ["hello there", "a much longer prompt here"])
    seen = {}

    def grab(m, args, kwargs):                 # the next block's input: the probe block's output, steered
        seen["after"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    def run(alpha, positions="all"):
        h2 = ad.layers[layer + 1].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            greedy_generate(lm, ids, 1, Steering(layer, v, alpha, scale=scale, positions=positions,
                                                 backend="torch"))     # the prefill pass only
        finally:
            h2.remove()
        return seen["after"].to(torch.float64)

    base = run(0.0)
    mask = torch.tensor([[0] * (len(ids[1]) - len(ids[0])) + [1] * len(ids[0]), [1] * len(ids[1])], dtype=torch.bool)
    for alpha in (0.3, -0.7):
        got = run(alpha)
        s = base.norm(dim=-1, keepdim=True) if scale == "relative" else torch.ones_like(base[..., :1])
        want = base + alpha * s * v.to(torch.float64)
        want = torch.where(mask[..., None], want, base)            # pads are never injected
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    last = run(0.5, "last")
    torch.testing.assert_close(last[:, :-1], base[:, :-1], atol=0, rtol=0)
    assert not torch.allclose(last[:, -1], base[:, -1])


def test_wilson_interval_against_hand_values():
    # hand / textbook values (Newcombe 1998): 0/10 -> (0, 0.2775); 5/10 -> (0.2366, 0.7634)
    ci = wilson_interval(0, 10, 0.95)
    assert ci.low == 0.0 and ci.high == pytest.approx(0.27753, abs=1e-4)
    ci = wilson_interval(5, 10, 0.95)
    assert ci.low == pytest.approx(0.23659, abs=1e-4) and ci.high == pytest.approx(0.76341, abs=1e-4)
    assert ci.level == 0.95 and not wilson_interval(0, 0, 0.95).defined


def test_cli_steer_tiny_and_store(tmp_path, capsys):
    from cape_hpc.cli import main
    from cape_hpc.io.store import read_results

    out = tmp_path / "s.h5"
    assert main(["internals", "--model", "tiny-llama", "--max-prompts", "8", "--out", str(out)]) == 0
    assert main(["steer", "--model", "tiny-llama", "--max-prompts", "4", "--max-new-tokens", "4", "--max-items", "9",
                 "--folds", "3", "--max-neutral", "2", "--alphas", "100", "--alpha", "1.0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "intervention rate" in text and "Wilson" in text and "Dose-response" in text
    assert "operating-point rule: largest correction rate" in text
    tree = read_results(out)
    assert "tiny-llama" in tree["internals"]
    runs = dict(tree["steering"]["tiny-llama"])
    o = SteeringOutcomeResult.from_tree(runs.pop("outcome_mc_items"), where="/steering/tiny-llama/outcome_mc_items")
    assert o.alphas == [0.0, 100.0] and o.n_items == 9 and o.chosen_layer == -1   # KL at alpha 100 > 0.1
    assert "operating point: none" in text
    (run_name, t), = runs.items()
    g = SteeringResult.from_tree(t, where=f"/steering/tiny-llama/{run_name}")
    assert g.run_name == run_name and g.complete is True and len(g.direction) == 64
    assert abs(np.linalg.norm(g.direction) - 1) < 1e-6
    assert len(g.per_prompt) == 4 and g.provenance.options["max_prompts"] == 4 and g.alpha == 1.0
    assert g.rate_ci == wilson_interval(g.n_changed, 4, 0.95)
    assert main(["steer", "--model", "tiny-llama", "--probe-layer", "7"]) == 2
    assert "--probe-layer 7 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize("arch", sorted(__import__("cape_hpc.models", fromlist=["TINY_ARCHS"]).TINY_ARCHS))
def test_tiny_steered_generation_batched_equals_unbatched(arch):
    """The KV-cache greedy loop with left padding, steered, on every architecture: a padded batch
    gives the same tokens as each prompt alone, and alpha = 0 gives the unsteered tokens."""
    lm = load_model(f"tiny-{arch}")
    texts = ["Is glass a liquid?", "ok", "Why do cats purr at night, and is it always contentment?"]
    ids, _ = tokenize(lm, texts)
    v = torch.randn(lm.adapter.d_model, generator=torch.Generator().manual_seed(1))

    def gen(rows, alpha):
        return greedy_generate(lm, rows, 6, Steering(1, v, alpha, backend="torch"), stop_at_eos=False)

    plain = greedy_generate(lm, ids, 6, stop_at_eos=False)
    assert gen(ids, 0.0) == plain
    batched = gen(ids, 2.0)
    single = [gen([r], 2.0)[0] for r in ids]
    assert batched == single
    assert [greedy_generate(lm, [r], 6, stop_at_eos=False)[0] for r in ids] == plain


def test_result_round_trips_and_options_are_provenance(tmp_path):
    """A real steering run on a tiny model: the stored result reads back field by field, its
    options are SteerOptions.to_dict() unchanged, the prompts are the selected set."""
    from roundtrip import assert_roundtrip

    lm = load_model("tiny-llama")
    opts = SteerOptions(alpha=1.5, max_new_tokens=3, max_prompts=3, batch_size=2, tau=0.9)
    res = run_steering(lm, load_prompts(calibration=True), load_prompts(), opts)
    assert res.provenance.options == opts.to_dict() and res.tau == 0.9 and not res.chat_template
    assert res.n_prompts == 3 and all(r.id in {p.id for p in load_prompts().select("truthfulness")}
                                      for r in res.per_prompt)
    assert res.rate == res.n_changed / 3 and res.rate_ci.contains(res.rate)
    back = assert_roundtrip(res, tmp_path, res.group)
    assert back.run_name == res.run_name == "L0_mean-diff_a1.5_relative_all_tau0.9_n3"
    none = assert_roundtrip(res.replace(tau=None) if hasattr(res, "replace") else
                            __import__("dataclasses").replace(res, tau=None), tmp_path, res.group)
    assert none.tau is None
