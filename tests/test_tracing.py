"""The tracing primitive (cape_hpc.models.tracing) and length-bucketed batching, against the
model's own output_hidden_states and a hand count."""
from __future__ import annotations

import pytest
import torch

from cape_hpc.errors import OptionError
from cape_hpc.models import load_model
from cape_hpc.models.batching import StopForward, plan_batches, tokenize
from cape_hpc.models.tracing import Trace, point_names

TEXTS = ["a b c", "the quick brown fox jumps", "x", "hello there, general", "one two three four five six"]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def lm(request):
    return load_model(request.param)


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_block_points_equal_output_hidden_states(lm):
    ids, _ = tokenize(lm, TEXTS)
    L = lm.adapter.n_layers
    before = _n_hooks(lm.model)
    got: dict[int, torch.Tensor] = {}

    def keep(i):
        def fn(h, batch):
            got.setdefault(i, {})
            for k, r in enumerate(batch.rows.tolist()):
                got[i][r] = h[k, -1].clone()
        return fn

    with Trace(lm, {f"block.{i}": keep(i) for i in range(L)}) as tr:
        for b in tr.batches(ids, batch_size=2):
            assert tr.forward(b) is None         # stopped after the last block: no logits
    assert _n_hooks(lm.model) == before
    for r, row in enumerate(ids):
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([row]), output_hidden_states=True)
        for i in range(L):
            ref = out.hidden_states[i + 1][0, -1]
            if i == L - 1:       # HF applies the final norm to the last hidden state of some models
                continue
            torch.testing.assert_close(got[i][r], ref, rtol=1e-4, atol=1e-5)


def test_stop_after_last_point_and_hooks_removed_on_error(lm):
    ids, _ = tokenize(lm, TEXTS[:2])
    before = _n_hooks(lm.model)   # transformers may keep hooks of its own
    seen = []
    with Trace(lm, {"block.0": lambda h, b: seen.append("block.0"),
                    "block.1": lambda h, b: seen.append("block.1")}) as tr:
        for b in tr.batches(ids, batch_size=8):
            tr.forward(b)
    assert seen == ["block.0", "block.1"]

    def boom(h, b):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with Trace(lm, {"block.0": boom}) as tr:
            for b in tr.batches(ids, batch_size=8):
                tr.forward(b)
    assert _n_hooks(lm.model) == before


def test_replacement_and_no_stop(lm):
    ids, _ = tokenize(lm, TEXTS[:3])
    with Trace(lm, {}, stop=False) as tr:
        b = next(tr.batches(ids, batch_size=8))
        base = tr.forward(b).logits
    with Trace(lm, {"block.0": lambda h, b: torch.zeros_like(h)}, stop=False) as tr:
        zeroed = tr.forward(b).logits
    with Trace(lm, {"block.0": lambda h, b: None}, stop=False) as tr:
        same = tr.forward(b).logits
    assert torch.equal(base, same)
    assert not torch.allclose(base, zeroed)


def test_several_callbacks_at_one_point_run_in_order(lm):
    """A list at one point: each callback sees what the one before left (a capture before a
    replacement sees the block's own output, one after sees the replacement), and the model goes on
    with the last replacement (here the same as a single replacing callback)."""
    ids, _ = tokenize(lm, TEXTS[:3])
    seen = []
    with Trace(lm, {"block.0": lambda h, b: h + 1.0}, stop=False) as tr:
        b = next(tr.batches(ids, batch_size=8))
        want = tr.forward(b).logits
    with Trace(lm, {"block.0": [lambda h, b: seen.append(h.clone()), lambda h, b: h + 1.0,
                                lambda h, b: seen.append(h.clone())]}, stop=False) as tr:
        got = tr.forward(b).logits
    torch.testing.assert_close(seen[1], seen[0] + 1.0, atol=0, rtol=0)
    assert torch.equal(got, want)
    with Trace(lm, {"block.0": [lambda h, b: seen.append(1)], "block.1": []}) as tr:   # an empty list: no-op
        assert tr.forward(b) is None


def test_point_names_and_bad_point(lm):
    names = point_names(lm)
    assert names[0] == "heads.0" and names[-1] == "final" and len(names) == 2 * lm.adapter.n_layers + 1
    with pytest.raises(OptionError, match="block.99"):
        Trace(lm, {"block.99": lambda h, b: None})


def test_plan_batches_by_length_and_budget():
    lengths = [5, 1, 50, 3, 3, 2]
    assert plan_batches(lengths, batch_size=2) == [[1, 5], [3, 4], [0, 2]]
    # budget 12 padded tokens: [1,2,3,3] is 4 x 3 = 12; 5 alone would make 5 x 5 = 25
    assert plan_batches(lengths, batch_size=8, token_budget=12) == [[1, 5, 3, 4], [0], [2]]
    # the long one runs alone and nobody else is padded to it
    for b in plan_batches(lengths, batch_size=8, token_budget=12):
        assert 50 not in [lengths[j] for j in b] or len(b) == 1
    assert sorted(j for b in plan_batches(lengths, batch_size=3) for j in b) == list(range(6))
    assert plan_batches([], batch_size=3) == []


def test_tokenize_truncates_from_the_left_to_max_tokens(lm):
    full, _ = tokenize(lm, TEXTS)
    with pytest.warns(UserWarning, match="maximum prompt length of 4 tokens"):
        ids, truncated = tokenize(lm, TEXTS, max_tokens=4)
    assert truncated == [i for i, r in enumerate(full) if len(r) > 4]
    assert all(ids[i] == full[i][-4:] for i in truncated)
    assert all(ids[i] == full[i] for i in range(len(TEXTS)) if i not in truncated)
