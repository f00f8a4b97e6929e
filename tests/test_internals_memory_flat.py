"""Extraction's host side stays flat and reports its progress (issue 22 items 3, 4, 6): one progress
task in prompts advanced once per batch by the batch's size (a count the host knows, so no device
synchronisation); nothing of a batch outlives it (its device indices, kept tensors); the tokenizer is
called on lists of texts and gives the ids of one call per text; torch's thread count survives the
numba kernels.  The memory figures themselves are
the benchmark's (benchmarks/bench_internals.py --ladders: fresh processes, peak RSS)."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from cape_hpc import progress
from cape_hpc.internals import extract_internals, load_prompts
from cape_hpc.models import load_model
from cape_hpc.models.batching import TokenRows, left_pad, plan_batches, tokenize
from cape_hpc.models.tracing import Trace


class _Recorder:
    """A progress display that records every bar's description, total, unit and updates."""

    def __init__(self):
        self.bars: list[dict] = []

    def __call__(self, desc, total, unit):
        bar = {"desc": desc, "total": total, "unit": unit, "updates": [], "closed": False}
        self.bars.append(bar)

        class _Bar:
            def update(self, n=1):
                bar["updates"].append(int(n))

            def close(self):
                bar["closed"] = True
        return _Bar()


def test_extraction_advances_one_prompt_task_per_batch():
    lm = load_model("tiny-llama")
    ps = load_prompts().subset(24)
    rec = _Recorder()
    with progress.shown(rec):
        res = extract_internals(lm, ps, batch_size=5, block_resamples=0)
    bars = [b for b in rec.bars if b["unit"] == "prompt"]
    assert len(bars) == 1 and bars[0]["closed"]
    bar = bars[0]
    assert bar["total"] == res.n_prompts == 24
    # independent: the batches are the length buckets of the tokenizer's own ids, R prompts first
    tok = lm.tokenizer
    texts = [p.text for p in ps.prompts if p.set == res.set_r] + [p.text for p in ps.prompts if p.set == res.set_t]
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    expected = [len(b) for b in plan_batches(lengths, batch_size=5, token_budget=8192)]
    assert bar["updates"] == expected


def test_no_batch_state_outlives_its_batch(monkeypatch):
    """Each batch's extras (its device indices and masks) are released once its pass is done, and no
    batch object is kept after the extraction."""
    seen: list = []
    orig = Trace.forward

    def spy(self, batch, **kw):
        if seen:
            prev = seen[-1]()
            assert prev is None or not prev.extra, "the previous batch's state is still held"
        out = orig(self, batch, **kw)
        seen.append(weakref.ref(batch))
        return out

    monkeypatch.setattr(Trace, "forward", spy)
    lm = load_model("tiny-llama")
    extract_internals(lm, load_prompts().subset(20), batch_size=4, block_resamples=0)
    assert len(seen) >= 5
    gc.collect()
    assert all(r() is None for r in seen)


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gpt2"])
def test_tokenize_equals_one_tokenizer_call_per_text(spec):
    """More texts than one tokenizer call takes (the chunk boundary), with and without special tokens."""
    lm = load_model(spec)
    base = [p.text for p in load_prompts().prompts]
    texts = [f"{t} ({k})" for k in range(4) for t in base][:600]
    for special in (True, False):
        got, truncated = tokenize(lm, texts, add_special_tokens=special)
        ref = [list(lm.tokenizer(t, add_special_tokens=special)["input_ids"]) for t in texts]
        assert got == ref and truncated == []


def test_token_rows_equal_the_lists_they_hold(monkeypatch):
    """A window's rows held flat (``TokenRows``) read back as the tokenizer's lists (an empty row,
    negative indices, slices, lengths) and pad into the same batch; extraction's batches see them."""
    lists = [[5, 6, 7], [], [9], [1, 2, 3, 4, 260]]
    rows = TokenRows(lists)
    assert len(rows) == 4 and rows.lengths().tolist() == [3, 0, 1, 5]
    assert [r.tolist() for r in rows] == lists and rows[-1].tolist() == lists[-1]
    assert [r.tolist() for r in rows[1:3]] == lists[1:3]
    with pytest.raises(IndexError):
        rows[4]
    for got, ref in zip(left_pad([rows[i] for i in (0, 2, 3)], 0), left_pad([lists[i] for i in (0, 2, 3)], 0)):
        assert torch.equal(got, ref)
    assert len(TokenRows([])) == 0

    kinds = []
    orig = Trace.batches

    def spy(self, ids, **kw):
        kinds.append(type(ids))
        return orig(self, ids, **kw)

    monkeypatch.setattr(Trace, "batches", spy)
    extract_internals(load_model("tiny-llama"), load_prompts().subset(12), batch_size=4, block_resamples=0)
    assert kinds == [TokenRows]


def test_extraction_keeps_torchs_thread_count():
    """numba's omp layer shares torch's OpenMP runtime: a parallel numba kernel (the statistics'
    participation ratio, large pooling calls) set torch's count to numba's, so a process that gave
    torch fewer threads than numba ran its next forward passes on a spinning OpenMP team."""
    import numba

    lm = load_model("tiny-llama")
    before = torch.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    torch.set_num_threads(1)
    try:
        extract_internals(lm, load_prompts().subset(16), batch_size=8, block_resamples=0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
