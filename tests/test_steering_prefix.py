"""Shared-prefix scoring (docs/METHODS.md §4.3, §4.5; ``steering.prefix``) against the whole-row
path (``score_rows(shared_prefix=False)``, the reference: every row's full forward pass), on tiny
random llama and gemma3 models (gemma3: sliding-window layers of 8 tokens, shorter than the rows) in
float64 and float32: odd lengths, several items per prefix batch, token budgets that split batches,
truncated rows (max_prompt_tokens), rows without a prefix, both injection position modes, a layer
scan and per-fold directions, and the calibration states.  An off-by-one position in the
continuation is caught by the same comparison."""
import numpy as np
import pytest
import torch

from cape_hpc.models import load_model
from cape_hpc.steering import Injection, load_items, score_rows, tokenize_rows
from cape_hpc.steering import prefix as prefix_mod

#: float64: the two paths differ only by summation order; float32: by the same at float32 rounding
#: over a few layers of width 64 (mean log-probs of about -5.6, so 2e-5 is a relative 4e-6)
TOL = {"float64": 1e-10, "float32": 2e-5}


@pytest.fixture(scope="module", params=[("llama", "float64"), ("llama", "float32"), ("gemma3_text", "float64"),
                                        ("gemma3_text", "float32")], ids=lambda p: f"{p[0]}-{p[1]}")
def model(request):
    arch, dtype = request.param
    return load_model(f"tiny-{arch}", dtype=dtype), dtype


def _rows(lm, n_items=7, max_tokens=None, seed=3):
    its = load_items().subset(n_items, seed=seed).items
    ids, n_ans, where = tokenize_rows(lm, [it.context for it in its], [it.scored_answers for it in its],
                                      max_tokens=max_tokens)
    return ids, n_ans, np.array([w[0] for w in where])


def _grid_injection(lm, R, item, positions, n_dirs=3, seed=0):
    """Every row at a 4-point alpha grid (0 included) x two layers, each item its own fold direction:
    the rows of ``evaluate_steering``'s steered pass."""
    alphas, layers = [0.0, 0.4, -1.1, 2.5], [0, 2]
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(len(layers), n_dirs, lm.adapter.d_model, generator=g), dim=-1)
    grid = [(li, a) for li in range(len(layers)) for a in alphas]
    inj = Injection(layers=layers, directions=dirs, alpha=np.repeat([a for _, a in grid], R),
                    layer_index=np.repeat([li for li, _ in grid], R), dir_index=np.tile(item % n_dirs, len(grid)),
                    positions=positions, backend="torch")
    return inj, len(grid)


def _both(lm, ids, n_ans, inj_of, **kw):
    whole = score_rows(lm, ids, n_ans, inj_of(), shared_prefix=False, **kw)
    shared = score_rows(lm, ids, n_ans, inj_of(), shared_prefix=True, **kw)
    return whole, shared


@pytest.mark.parametrize("positions", ["answer", "all"])
@pytest.mark.parametrize("batch_size,token_budget", [(3, None), (16, 150)])
def test_shared_prefix_equals_whole_rows(model, positions, batch_size, token_budget):
    lm, dtype = model
    ids, n_ans, item = _rows(lm)
    assert len({len(r) for r in ids}) > 3 and any(len(r) % 2 for r in ids)         # odd, varied lengths
    R = len(ids)
    _, G = _grid_injection(lm, R, item, positions)
    rows = [ids[r] for _ in range(G) for r in range(R)]
    n = list(n_ans) * G
    whole, shared = _both(lm, rows, n, lambda: _grid_injection(lm, R, item, positions)[0], batch_size=batch_size,
                          token_budget=token_budget, backend="torch")
    np.testing.assert_allclose(shared.logprob, whole.logprob, rtol=0, atol=TOL[dtype])
    steered = np.abs(whole.logprob.reshape(G, R) - whole.logprob[:R]).max(1)
    assert (steered[1:4] > 1e-3).all()                               # the grid points do change the scores
    if positions == "answer":                                        # each steered position counted once
        assert shared.n_injected == whole.n_injected
    else:                                                            # a shared prefix position counts once
        assert 0 < shared.n_injected < whole.n_injected


def test_budget_splits_prefix_and_row_batches(model):
    """The token budget cuts both the prefix batches and the rows continuing them."""
    lm, _ = model
    ids, n_ans, _ = _rows(lm)
    shared = prefix_mod.split_rows(ids, n_ans)
    plan = prefix_mod.plan_shared(shared, batch_size=16, token_budget=150)
    assert len(plan) > 1 and any(len(b) > 1 for _, b in plan)
    for chunk, batches in plan:
        P = max(len(shared.prefixes[p]) for p in chunk)
        assert len(chunk) * P <= 150 or len(chunk) == 1
        for b in batches:
            assert len(b) * (P + max(len(shared.suffix[r]) for r in b)) <= 150 or len(b) == 1
    assert sorted(r for _, bs in plan for b in bs for r in b) == list(range(len(ids)))


@pytest.mark.parametrize("positions", ["answer", "all"])
def test_truncated_rows_and_rows_without_prefix(model, positions):
    """max_prompt_tokens cuts the question from the left by the answer's length, so the answers of
    one item have different prefixes; rows of answer + one token have no prefix (scored whole)."""
    lm, dtype = model
    limit = max(_rows(lm, n_items=5, seed=5)[1]) + 9         # the longest answer plus 9 question tokens
    ids, n_ans, item = _rows(lm, n_items=5, max_tokens=limit, seed=5)
    assert max(len(r) for r in ids) == limit
    ids = ids + [[5, 77, 78], [9, 40], [6, 41, 42, 43]]
    n_ans = list(n_ans) + [2, 1, 3]
    item = np.concatenate([item, [90, 91, 92]])
    shared = prefix_mod.split_rows(ids, n_ans)
    assert len(shared.full_rows) == 3 and len(shared.prefixes) > len(set(item.tolist())) - 3
    R = len(ids)
    whole, sh = _both(lm, ids * 4, n_ans * 4,
                      lambda: Injection(layers=[1], directions=torch.ones(1, 1, lm.adapter.d_model) / 8,
                                        alpha=np.repeat([0.0, 0.3, -0.7, 1.9], R),
                                        layer_index=np.zeros(4 * R, dtype=np.int64),
                                        dir_index=np.zeros(4 * R, dtype=np.int64), positions=positions,
                                        backend="torch"),
                      batch_size=4, backend="torch")
    np.testing.assert_allclose(sh.logprob, whole.logprob, rtol=0, atol=TOL[dtype])


def test_rows_at_the_full_context_of_absolute_positions():
    """GPT-2 (absolute position table of 256): an item truncated to exactly 256 tokens with a short
    answer shares a batch with an item whose answer is long; the short row's right-padding slots must
    not step past position 255 (they repeat the row's last position), and the scores equal the whole
    rows'."""
    lm = load_model("tiny-gpt2", dtype="float64")
    n_ctx = lm.model.config.n_positions
    ids = [list(range(3, 3 + n_ctx - 1)) + [7], list(range(3, 30)) + [8, 9, 10, 11, 12, 13, 14, 15]]
    n_ans = [1, 8]
    assert len(ids[0]) == n_ctx
    whole, sh = _both(lm, ids, n_ans, lambda: None, batch_size=2, backend="torch")
    assert np.isfinite(sh.logprob).all()
    np.testing.assert_allclose(sh.logprob, whole.logprob, rtol=0, atol=TOL["float64"])


def test_calibration_states_and_unsteered_scores(model):
    """The baseline pass: scores and the pooled states at every candidate layer (last token: from the
    continuations; mean: the rows run whole) equal the whole-row pass."""
    lm, dtype = model
    ids, n_ans, _ = _rows(lm, n_items=6, seed=2)
    for pooling in ("last", "mean"):
        kw = dict(capture=(0, 1, 2), pooling=pooling, batch_size=5, backend="torch")
        whole = score_rows(lm, ids, n_ans, shared_prefix=False, **kw)
        shared = score_rows(lm, ids, n_ans, **kw)
        np.testing.assert_allclose(shared.logprob, whole.logprob, rtol=0, atol=TOL[dtype])
        for L in (0, 1, 2):
            np.testing.assert_allclose(shared.states[L], whole.states[L], rtol=0, atol=50 * TOL[dtype])


def test_off_by_one_continuation_is_caught(monkeypatch):
    """The comparison can fail: continuations placed one position late (or their prefix cache one
    row off) give scores far outside the float64 tolerance (the tiny random model's next-token
    distributions are nearly uniform, so any error is small in absolute terms)."""
    lm = load_model("tiny-llama", dtype="float64")
    ids, n_ans, _ = _rows(lm, n_items=4)
    whole = score_rows(lm, ids, n_ans, shared_prefix=False, batch_size=4)
    orig = prefix_mod.suffix_batch

    def late(*a, **k):
        batch, index = orig(*a, **k)
        batch.position_ids = batch.position_ids + 1
        return batch, index

    def wrong_row(*a, **k):
        batch, index = orig(*a, **k)
        return batch, index.flip(0)

    for bad in (late, wrong_row):
        monkeypatch.setattr(prefix_mod, "suffix_batch", bad)
        got = score_rows(lm, ids, n_ans, batch_size=4)
        assert np.abs(got.logprob - whole.logprob).max() > 1e3 * TOL["float64"]
    monkeypatch.setattr(prefix_mod, "suffix_batch", orig)
    np.testing.assert_allclose(score_rows(lm, ids, n_ans, batch_size=4).logprob, whole.logprob, rtol=0, atol=1e-10)


@pytest.mark.gpu
def test_shared_prefix_on_cuda_without_host_sync():
    """On a GPU: the same scores as the whole rows, and no host synchronisation inside the passes
    (torch's sync debug mode raises)."""
    from cape_hpc.models.tracing import sync_debug

    lm = load_model("tiny-llama", device_map="cuda")
    ids, n_ans, item = _rows(lm)
    R = len(ids)
    inj_of = lambda: _grid_injection(lm, R, item, "answer")[0]           # noqa: E731
    G = _grid_injection(lm, R, item, "answer")[1]
    rows, n = [ids[r] for _ in range(G) for r in range(R)], list(n_ans) * G
    whole = score_rows(lm, rows, n, inj_of(), shared_prefix=False, batch_size=4)
    with sync_debug("error"):
        shared = score_rows(lm, rows, n, inj_of(), batch_size=4)
    np.testing.assert_allclose(shared.logprob, whole.logprob, rtol=0, atol=1e-4)
