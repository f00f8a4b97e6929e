"""Greedy generation (docs/METHODS.md §4.7) against transformers' own ``generate``, the independent
reference: unsteered rows give ``generate``'s greedy tokens and steered rows those of a plain
forward hook with ``generate``, with mixed prompt lengths (left padding) and rows that end early at
EOS; the loop stops once every row has ended, and the injection hook does not run during decoding
when no row is steered."""

import itertools

import pytest
import torch

from cape_hpc.models import TINY_ARCHS, load_model
from cape_hpc.models.batching import left_pad, pad_id, tokenize
from cape_hpc.steering import Steering, greedy_generate
from cape_hpc.steering.steer import chat_texts
from cape_hpc.steering.generate import eos_ids

TEXTS = ["Is glass a liquid?", "ok", "Why do cats purr at night, and is it always contentment?", "The sky at dusk"]
LAYER = 1


def _direction(lm, seed=1):
    v = torch.randn(lm.adapter.d_model, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _reference(lm, ids, new, eos, add=None):
    """transformers' greedy ``generate`` of the left-padded ``ids``, with ``add`` [N, D] (or None)
    added to block LAYER's output at every position by a plain forward hook: each row's tokens
    before its first token in ``eos``."""
    x, m, _ = left_pad(ids, pad_id(lm))

    def hook(module, args, out):
        h = out[0] if isinstance(out, tuple) else out
        h.add_(add[:, None, :].to(h.dtype))

    handle = None if add is None else lm.adapter.layers[LAYER].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            out = lm.model.generate(input_ids=x, attention_mask=m, max_new_tokens=new, do_sample=False,
                                    pad_token_id=pad_id(lm), eos_token_id=list(eos))
    finally:
        if handle is not None:
            handle.remove()
    rows = out[:, x.shape[1]:].tolist()
    return [r[:next((i for i, t in enumerate(r) if t in eos), len(r))] for r in rows]


def _with_eos(lm, monkeypatch, tokens):
    """Make ``tokens`` end-of-sequence tokens for ``lm`` (its generation config, which ``eos_ids``
    reads); returns the whole EOS set."""
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", sorted(set(tokens)))
    return set(eos_ids(lm))


def _decoding_calls(lm):
    """A counter of forward passes (prefill + decoding steps) of ``lm``: (calls list, handle)."""
    calls = []
    return calls, lm.adapter.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_unsteered_and_steered_equal_generate_with_early_eos(arch, monkeypatch):
    """Every tiny architecture: EOS is a token some rows emit early (chosen from a free run), so
    rows end at different steps; the unsteered loop equals ``generate``, the per-row steered loop
    (alpha 0 on half the rows) equals a plain hook adding alpha * v with ``generate``."""
    lm = load_model(f"tiny-{arch}")
    ids, _ = tokenize(lm, TEXTS)
    new = 10
    free = greedy_generate(lm, ids, new, stop_at_eos=False)
    eos = _with_eos(lm, monkeypatch, [free[1][2], free[3][5]])        # row 1 ends by step 2, row 3 by step 5
    ours = greedy_generate(lm, ids, new)
    assert ours == _reference(lm, ids, new, eos)
    assert min(map(len, ours)) <= 2 < new and len(ours[1]) <= 2       # some rows did end early
    v = _direction(lm)
    alpha = torch.tensor([0.0, 3.0, 0.0, -2.0])
    steered = greedy_generate(lm, ids, new, Steering(LAYER, v, alpha, scale="absolute", backend="torch"))
    assert steered == _reference(lm, ids, new, eos, add=alpha[:, None] * v)
    assert steered[0] == ours[0] and steered[2] == ours[2]             # alpha 0 rows: the unsteered tokens


def _staggered_eos(free, new):
    """One to three tokens of the free runs ``free`` such that every row ends (at its first token in
    the set) before the last step, at two or more different steps; the most different steps win."""
    best, key = None, None
    cands = sorted({t for r in free for t in r})
    for size in (1, 2, 3):
        for eos in itertools.combinations(cands, size):
            ends = [next((i for i, t in enumerate(r) if t in eos), new) for r in free]
            k = (len(set(ends)), -max(ends))
            if max(ends) < new - 1 and len(set(ends)) > 1 and (key is None or k > key):
                best, key = eos, k
    assert best is not None, "no EOS set makes the rows end at different steps"
    return list(best)


@pytest.mark.parametrize("arch", ["gptj", "gpt_neox", "gemma3_text", "gpt_neo"])
def test_loop_stops_once_every_row_has_ended(arch, monkeypatch):
    """EOS = tokens the rows emit at different steps: the loop makes exactly one forward pass per
    token up to the last row's EOS (not ``max_new_tokens``), and the tokens are ``generate``'s (the
    rows that ended first are not cut short by the others, nor the others by them).
    ``stop_at_eos=False`` still runs every step (fixed work)."""
    lm = load_model(f"tiny-{arch}")
    ids, _ = tokenize(lm, TEXTS)
    new = 16
    free = greedy_generate(lm, ids, new, stop_at_eos=False)
    eos = _with_eos(lm, monkeypatch, _staggered_eos(free, new))
    calls, handle = _decoding_calls(lm)
    try:
        ours = greedy_generate(lm, ids, new)
        n_stop = len(calls)
        calls.clear()
        fixed = greedy_generate(lm, ids, new, stop_at_eos=False)
    finally:
        handle.remove()
    assert ours == _reference(lm, ids, new, eos)
    assert len({len(r) for r in ours}) > 1            # the rows ended at different steps
    last = max(len(r) for r in ours)                  # the step at which the last row produced EOS
    assert n_stop == last + 1 < new                   # prefill + one pass per step up to it, no more
    assert len(calls) == new and fixed == free        # fixed work: every step, EOS ignored


def test_no_hook_runs_while_decoding_when_no_row_is_steered():
    """alpha 0 for every row: the hook runs once (the prefill, recording cos) and the tokens are the
    unsteered ones; a nonzero alpha: once per model call, on the new token only ([B, 1, D])."""
    lm = load_model("tiny-llama")
    ids, _ = tokenize(lm, TEXTS)
    new = 6
    plain = greedy_generate(lm, ids, new, stop_at_eos=False)
    for alpha, n_calls in ((torch.zeros(len(ids)), 1), (0.0, 1), (torch.tensor([0.0, 1.0, 0.0, 0.0]), new)):
        st = Steering(LAYER, _direction(lm), alpha, backend="torch")
        seen = []
        hook = st.hook
        st.hook = lambda x, batch: seen.append(tuple(x.shape)) or hook(x, batch)
        out = greedy_generate(lm, ids, new, st, stop_at_eos=False)
        assert len(seen) == n_calls and st.last_cos is not None and st.last_cos.shape == (len(ids),)
        assert all(s[1] == 1 for s in seen[1:])      # decoding steps: the new token only
        if n_calls == 1:
            assert out == plain and hook.n_injected == 0


@pytest.mark.realmodel
def test_smollm2_equals_generate_and_plain_hook():
    """SmolLM2-135M, four prompts of different lengths: greedy tokens equal ``generate``'s
    (unsteered) and a plain forward hook's with ``generate`` (steered, absolute coefficient)."""
    lm = load_model("smollm2-135m")
    ids, _ = tokenize(lm, chat_texts(lm, TEXTS), add_special_tokens=False)   # the instruct model answers
    assert len({len(r) for r in ids}) == len(ids)
    new = 8
    eos = set(eos_ids(lm))
    ours = greedy_generate(lm, ids, new)
    assert ours == _reference(lm, ids, new, eos) and min(map(len, ours)) > 0
    v = _direction(lm)
    steered = greedy_generate(lm, ids, new, Steering(LAYER, v, 4.0, scale="absolute"))
    assert steered == _reference(lm, ids, new, eos, add=4.0 * v.expand(len(ids), -1))


def test_preallocated_cache_layer_equals_the_dynamic_layer_and_never_reallocates():
    """``models.kv_cache.PreallocatedLayer`` returns what transformers' ``DynamicLayer`` returns (a
    prefill then single steps), from one backing tensor allocated at the first update, and refuses
    to write past its slots."""
    from transformers.cache_utils import DynamicLayer

    from cape_hpc.models.kv_cache import PreallocatedLayer

    g = torch.Generator().manual_seed(0)
    ours, theirs = PreallocatedLayer(slots=7), DynamicLayer()
    for n in (4, 1, 1, 1):
        k, v = torch.randn(3, 2, n, 5, generator=g), torch.randn(3, 2, n, 6, generator=g)
        got, want = ours.update(k, v), theirs.update(k, v)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        if n == 4:
            backing = ours.keys.untyped_storage().data_ptr()
        assert ours.keys.untyped_storage().data_ptr() == backing
        assert ours.get_seq_length() == theirs.get_seq_length()
    with pytest.raises(RuntimeError, match="8 positions written into 7 slots"):
        ours.update(k, v)
