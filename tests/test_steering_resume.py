"""Resumed steered scoring (docs/METHODS.md §4.5; ``steering.resume``): the rows steered at layer L
start from the baseline's stored block-L outputs and skip blocks 0..L.  Checked against the same
rows scored with every block computed (``score_rows`` without ``resume``, itself checked against
whole-row passes in test_steering_prefix.py) on tiny random models of four position schemes
(llama: rotary; gemma3: sliding-window layers of 8 tokens, shorter than the rows; gpt2: an absolute
position table; gpt_neo: blocks that return tuples), in float64 and float32, both injection position
modes, a layer scan that includes the last block (never resumed), and token budgets that split the
batches differently from the baseline's.  That the skipped blocks really do not compute is counted
on their MLPs; the whole held-out evaluation gives the same table with the stored states as without."""
import numpy as np
import pytest
import torch

from cape_hpc.models import load_model
from cape_hpc.steering import Injection, evaluate_steering, load_items, score_rows, tokenize_rows
from cape_hpc.steering import evaluate as evaluate_mod
from cape_hpc.steering.resume import resumed_at

#: as in test_steering_prefix.py: summation order only (float64), float32 rounding over 3 layers
TOL = {"float64": 1e-10, "float32": 2e-5}
LAYERS = [0, 1, 2]                   # tiny models have 3 blocks: 2 is the last (computed whole)


@pytest.fixture(scope="module", params=[("llama", "float64"), ("llama", "float32"), ("gemma3_text", "float64"),
                                        ("gpt2", "float64"), ("gpt_neo", "float32")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def model(request):
    arch, dtype = request.param
    return load_model(f"tiny-{arch}", dtype=dtype), dtype


def _rows(lm, n_items=7, seed=3):
    its = load_items().subset(n_items, seed=seed).items
    ids, n_ans, where = tokenize_rows(lm, [it.context for it in its], [it.scored_answers for it in its])
    return ids, n_ans, np.array([w[0] for w in where])


def _grid(lm, R, item, positions, layers=LAYERS, alphas=(0.4, -1.1, 2.5), seed=0):
    """Every row at each (layer, alpha != 0), each item steered by its fold's direction (3 folds)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(len(layers), 3, lm.adapter.d_model, generator=g), dim=-1)
    grid = [(li, a) for li in range(len(layers)) for a in alphas]
    return Injection(layers=list(layers), directions=dirs, alpha=np.repeat([a for _, a in grid], R),
                     layer_index=np.repeat([li for li, _ in grid], R), dir_index=np.tile(item % 3, len(grid)),
                     positions=positions, backend="torch"), len(grid)


@pytest.mark.parametrize("positions", ["answer", "all"])
@pytest.mark.parametrize("batch_size,token_budget", [(4, None), (16, 120)])
def test_resumed_rows_equal_every_block_computed(model, positions, batch_size, token_budget):
    lm, dtype = model
    ids, n_ans, item = _rows(lm)
    R = len(ids)
    base = score_rows(lm, ids, n_ans, keep_states=LAYERS[:2], batch_size=5, backend="torch")
    assert sorted(base.block_states) == LAYERS[:2]
    plain = score_rows(lm, ids, n_ans, batch_size=5, backend="torch")
    assert np.array_equal(base.logprob, plain.logprob)               # keeping states changes nothing
    kinds = []                                                       # the blocks' own output kind
    hook = lm.adapter.layers[0].register_forward_hook(lambda m, a, out: kinds.append(isinstance(out, tuple)))
    lm.model(torch.tensor([ids[0]]))
    hook.remove()
    assert all(st.tuple_out == kinds[0] for st in base.block_states.values())
    inj, G = _grid(lm, R, item, positions)
    rows, n = [ids[r] for _ in range(G) for r in range(R)], list(n_ans) * G
    kw = dict(batch_size=batch_size, token_budget=token_budget, backend="torch")
    full = score_rows(lm, rows, n, inj, **kw)
    resumed = score_rows(lm, rows, n, _grid(lm, R, item, positions)[0], resume=base.block_states, **kw)
    np.testing.assert_allclose(resumed.logprob, full.logprob, rtol=0, atol=TOL[dtype])
    assert resumed.n_injected == full.n_injected
    effect = np.abs(full.logprob.reshape(G, R) - plain.logprob).max(1)
    assert (effect > 1e-3).all()                                     # every grid point does steer


def _mlp_calls(lm):
    """Per block, how many times its MLP ran (forward hooks; removed by the caller)."""
    calls = [0] * lm.adapter.n_layers
    handles = [blk.mlp.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, blk in enumerate(lm.adapter.layers)]
    return calls, handles


def test_blocks_up_to_the_steered_layer_do_not_compute():
    lm = load_model("tiny-llama", dtype="float64")
    ids, n_ans, item = _rows(lm)
    R = len(ids)
    base = score_rows(lm, ids, n_ans, keep_states=[1], batch_size=5, backend="torch")
    inj, G = _grid(lm, R, item, "answer", layers=[1])
    calls, handles = _mlp_calls(lm)
    try:
        score_rows(lm, [ids[r] for _ in range(G) for r in range(R)], list(n_ans) * G, inj, batch_size=8,
                   backend="torch", resume=base.block_states)
    finally:
        for h in handles:
            h.remove()
    assert calls[0] == calls[1] == 0 and calls[2] > 0
    assert all("forward" not in blk.__dict__ for blk in lm.adapter.layers)   # the blocks' forwards are back


def test_rows_without_stored_states_run_every_block():
    """States kept for other token sequences (a different item subset) cannot serve these rows: they
    run every block, with the same numbers."""
    lm = load_model("tiny-llama", dtype="float64")
    ids, n_ans, item = _rows(lm)
    other_ids, other_n, _ = _rows(lm, n_items=4, seed=11)
    base = score_rows(lm, other_ids, other_n, keep_states=[0, 1], batch_size=5, backend="torch")
    inj, G = _grid(lm, len(ids), item, "answer", layers=[0, 1])
    rows, n = [ids[r] for _ in range(G) for r in range(len(ids))], list(n_ans) * G
    calls, handles = _mlp_calls(lm)
    try:
        got = score_rows(lm, rows, n, inj, batch_size=8, backend="torch", resume=base.block_states)
    finally:
        for h in handles:
            h.remove()
    assert calls[0] > 0 and calls[1] > 0
    want = score_rows(lm, rows, n, _grid(lm, len(ids), item, "answer", layers=[0, 1])[0], batch_size=8,
                      backend="torch")
    np.testing.assert_allclose(got.logprob, want.logprob, rtol=0, atol=TOL["float64"])


def test_forwards_are_put_back_after_an_error():
    lm = load_model("tiny-llama")
    ids, n_ans, _ = _rows(lm, n_items=2)
    base = score_rows(lm, ids, n_ans, keep_states=[1], batch_size=5, backend="torch")
    with pytest.raises(RuntimeError, match="boom"):
        with resumed_at(lm, base.block_states[1], lambda b: [], lambda: None):
            assert "forward" in lm.adapter.layers[0].__dict__
            raise RuntimeError("boom")
    assert all("forward" not in blk.__dict__ for blk in lm.adapter.layers)


def test_evaluation_with_stored_states_equals_the_full_passes(monkeypatch):
    """The held-out table (choices and every dose-response point) with the baseline's states kept and
    resumed equals the one with every block computed (``RESUME_STATE_BYTES`` 0: nothing kept)."""
    lm = load_model("tiny-llama", dtype="float64")
    kw = dict(max_items=12, max_neutral=0, folds=3, layers=(0, 1, 2), alphas=(-0.5, 0.5, 1.5), backend="torch",
              generate=False)
    assert evaluate_mod._resume_layers(lm, evaluate_mod._Rows.of(lm, load_items().subset(4).items, None), [0, 1, 2],
                                       evaluate_mod.OutcomeOptions()) == [0, 1]
    resumed = evaluate_steering(lm, load_items(), **kw)
    monkeypatch.setattr(evaluate_mod, "RESUME_STATE_BYTES", 0)
    full = evaluate_steering(lm, load_items(), **kw)
    assert np.array_equal(resumed.choices, full.choices)
    for p, q in zip(resumed.points, full.points):
        assert (p.layer, p.alpha, p.n_corrected, p.n_damaged) == (q.layer, q.alpha, q.n_corrected, q.n_damaged)
        assert p.mc2 == pytest.approx(q.mc2, abs=1e-10)
