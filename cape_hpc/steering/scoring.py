"""Length-normalised log-probability scoring through ``Trace`` with a per-row injection
(docs/METHODS.md §4.2, §4.3, §4.6).

A *row* is one token sequence: a context followed by ``n_answer`` answer tokens (the answer is the
last ``n_answer`` tokens).  Rows are batched by length and left-padded (``Trace.batches``); each
row carries its own alpha, probe layer and direction in ``batch.extra``, so an alpha grid, a layer
scan and per-fold directions all run in the same forward passes.  The pass stops at the final
norm: the unembedding is applied only at the positions that predict an answer token (never the
[tokens, vocabulary] logits of the whole batch), except in :func:`next_token_logprobs` (fluency),
which needs every position.  Results stay on the device until one transfer at the end.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from cape_hpc import progress
from cape_hpc.errors import DataError, OptionError
from cape_hpc.models.batching import token_limit, tokenize
from cape_hpc.models.tracing import Batch, Trace, on_device
from cape_hpc.steering.hooks import INJECT, InjectionHook, RowInjection, pooled_capture
from cape_hpc.steering.prefix import (LAST, PREFIX, SELECT, SharedRows, cache_kwargs, expand_cache, iter_shared,
                                      new_cache, split_rows)
from cape_hpc.steering.resume import BlockStates, Span, StateCollector, alias_skipped_cache, resumed_at

__all__ = ["Injection", "ScoreOutput", "tokenize_rows", "score_rows", "fluency_pass", "FluencyOutput"]


@dataclass
class Injection:
    """Per-row injection plan (host side).  ``layers``: the probe layers that may be steered;
    ``directions``: [len(layers), n_dirs, D]; row r is steered at ``layers[layer_index[r]]`` with
    ``alpha[r]`` along ``directions[layer_index[r], dir_index[r]]`` (layer_index -1 or alpha 0:
    not steered).  ``positions``: 'answer' (the positions that predict the answer tokens: the
    last context token and the answer tokens) or 'all' (every non-pad token)."""

    layers: list[int]
    directions: torch.Tensor
    alpha: np.ndarray
    layer_index: np.ndarray
    dir_index: np.ndarray
    scale: str = "relative"
    tau: float | None = None
    positions: str = "answer"
    backend: str | None = None

    def __post_init__(self):
        self.alpha = np.asarray(self.alpha, dtype=np.float64)
        self.layer_index = np.asarray(self.layer_index, dtype=np.int64)
        self.dir_index = np.asarray(self.dir_index, dtype=np.int64)
        if self.positions not in ("answer", "all"):
            raise OptionError(f"--score-positions: {self.positions!r} is not one of answer, all")
        if self.directions.dim() != 3 or self.directions.shape[0] != len(self.layers):
            raise ValueError(f"directions must be [len(layers), n_dirs, D], got {tuple(self.directions.shape)}")


@dataclass
class ScoreOutput:
    logprob: np.ndarray                  # [R] mean log-prob of the answer tokens (float64)
    states: dict[int, np.ndarray] = field(default_factory=dict)   # layer -> [R, D] pooled, before injection
    n_injected: int = 0                  # (row, position) pairs steered (counted on the device)
    block_states: dict[int, BlockStates] = field(default_factory=dict)  # layer -> every computed token's
    #                                      block output before injection (``keep_states``; ``steering.resume``)


def tokenize_rows(loaded, contexts: Sequence[str], answers: Sequence[Sequence[str]], *,
                  max_tokens: int | None = None,
                  labels: Sequence[str] | None = None) -> tuple[list[list[int]], list[int], list[tuple[int, int]]]:
    """Token ids of every (context, answer) row: the context tokenised as a prompt (special tokens
    as the tokenizer adds them) followed by the answer tokenised alone, so the answer positions are
    exact.  ``max_tokens``: the context is cut from the left so a row has at most that many tokens
    (one warning, as for prompts); an answer that alone exceeds the limit is a DataError.  ``labels``
    name each item in messages (``items.jsonl: line 7``).  Returns (ids, n_answer, (context index,
    answer index) of each row)."""
    tok = loaded.tokenizer
    labels = list(labels) if labels is not None else [f"item #{i}" for i in range(len(contexts))]
    ctx_ids, _ = tokenize(loaded, list(contexts), what="item", labels=labels)
    lim = token_limit(loaded, max_tokens)
    limit = lim.tokens
    ids, n_ans, where = [], [], []
    for i, (c, alist) in enumerate(zip(ctx_ids, answers)):
        for j, a in enumerate(alist):
            a_ids = list(tok(a, add_special_tokens=False, verbose=False)["input_ids"])
            if not a_ids:
                raise DataError(f"{labels[i]}: answer {j}: {a!r:.60} tokenises to nothing")
            row = c + a_ids
            if limit and len(row) > limit:
                keep = limit - len(a_ids)
                if keep < 1:
                    raise DataError(f"{labels[i]}: answer {j} alone has {len(a_ids)} tokens, more than "
                                    f"{lim.source} of {limit} (it can never be scored)")
                row = c[-keep:] + a_ids
            ids.append(row)
            n_ans.append(len(a_ids))
            where.append((i, j))
    return ids, n_ans, where


def _selection(batch: Batch, n_ans: torch.Tensor, positions: str) -> torch.Tensor:
    """[B, S] bool: the positions a row is steered at (a continuation batch: its suffix, ``SELECT``)."""
    if SELECT in batch.extra:
        return batch.extra[SELECT]
    S = batch.input_ids.shape[1]
    if positions == "all":
        return batch.attention_mask.to(torch.bool)
    pos = torch.arange(S, device=batch.input_ids.device)
    return pos[None, :] >= (S - 1 - n_ans)[:, None]


def _prepare(batch: Batch, inj: Injection | None, n_ans_all: torch.Tensor) -> None:
    """Host side of one batch: its answer lengths and, per steered layer, its rows' alpha (0 for rows
    of other layers), selection and direction index (``batch.extra``, moved to the device)."""
    rows = batch.rows.numpy()
    dev = batch.input_ids.device
    n_ans = n_ans_all.index_select(0, batch.rows_device)
    batch.extra["n_ans"] = n_ans
    if inj is None:
        return
    a = inj.alpha[rows]
    li = inj.layer_index[rows]
    active = [int(k) for k in np.unique(li[(a != 0) & (li >= 0)])]
    if not active:
        return
    nb = dev.type != "cpu"
    sel = _selection(batch, n_ans, inj.positions)
    direction = torch.as_tensor(inj.dir_index[rows]).to(dev, non_blocking=nb)
    batch.extra[INJECT] = {
        f"block.{inj.layers[k]}": RowInjection(
            torch.as_tensor(np.where(li == k, a, 0.0), dtype=torch.float32).to(dev, non_blocking=nb), sel, direction)
        for k in active}


def _scored_only(fn: Callable) -> Callable:
    """A read-only callback that skips prefix passes and sees a continuation batch's suffix mask as
    its attention mask (what pooling reads)."""
    def run(x: torch.Tensor, batch: Batch) -> None:
        if batch.extra.get(PREFIX):
            return None
        sel = batch.extra.get(SELECT)
        fn(x, batch if sel is None else dataclasses.replace(batch, attention_mask=sel))
    return run


def _callbacks(inj: Injection | None, capture: Sequence[int], pooling: str, backend: str | None,
               states: dict[int, torch.Tensor], keep: Sequence[StateCollector] = ()
               ) -> tuple[dict[str, list[Callable]], list[InjectionHook]]:
    """The trace callbacks of a scoring pass (the kept states, then the captures, then the injection at
    the same point) and the injection hooks (their counts)."""
    cbs: dict[str, list[Callable]] = {}
    for col in keep:
        cbs.setdefault(f"block.{col.layer}", []).append(col)
    for L in capture:
        cbs.setdefault(f"block.{L}", []).append(_scored_only(pooled_capture(states[L], pooling, backend)))
    hooks = []
    if inj is not None:
        for li, L in enumerate(inj.layers):
            hooks.append(InjectionHook(inj.directions[li], f"block.{L}", scale=inj.scale, tau=inj.tau,
                                       backend=inj.backend))
            cbs.setdefault(f"block.{L}", []).append(hooks[-1])
    return cbs, hooks


def _answer_logprob(loaded, lp: torch.Tensor, n_answer: Sequence[int]) -> Callable:
    """The ``final`` callback: the mean log-prob of each row's answer tokens into ``lp[batch.rows]``.
    A row's last token is at S - 1 (left-padded rows) or at ``batch.extra[LAST]`` (continuations).
    Only the M answer positions of the batch are unembedded ([M, V] logits, not [B, max answer, V]:
    half the work at the item set's answer lengths); their (row, answer token) index is built on the
    host from ``n_answer`` and moved once (no device sync).  (torch's fused log-softmax over [M, V]
    measured faster on a CPU than logit - logsumexp.)"""
    ad = loaded.adapter

    def final(h, batch):
        B, S, _ = h.shape
        n_host = [int(n_answer[r]) for r in batch.rows.tolist()]
        A = max(n_host)
        b_host = np.repeat(np.arange(B), n_host)
        j_host = np.concatenate([np.arange(n) for n in n_host])
        nb = h.device.type != "cpu"
        bj = torch.from_numpy(np.stack([b_host, j_host])).to(h.device, non_blocking=nb)
        b, j = bj[0], bj[1]
        n_ans = batch.extra["n_ans"]
        first = batch.extra[LAST] - n_ans if LAST in batch.extra else S - 1 - n_ans
        pos = (first[b] + j).clamp_min(0)                            # [M] predicting positions
        logits = ad.unembed(h[b, pos]).to(h.device, torch.float32)  # [M, V]
        tgt = batch.input_ids[b, (pos + 1).clamp_max(S - 1)]
        got = torch.log_softmax(logits, dim=-1).gather(-1, tgt[:, None])[:, 0].to(torch.float64)
        per = torch.zeros(B, A, dtype=torch.float64, device=h.device)
        per[b, j] = got                                              # summed in answer order, as one row
        lp.index_copy_(0, batch.rows_device, per.sum(1) / n_ans.to(torch.float64))
    return final


def _steer_keys(inj: Injection | None, R: int) -> list | None:
    """What a row's prefix depends on besides its tokens: nothing when the prefix is never steered
    (``answer`` positions, or no injection), else the row's (layer, alpha, direction) (None: unsteered)."""
    if inj is None or inj.positions != "all":
        return None
    return [(int(li), float(a), int(d)) if (a != 0 and li >= 0) else None
            for li, a, d in zip(inj.layer_index, inj.alpha, inj.dir_index)]


def _spans_of(ids: Sequence[Sequence[int]], shared: SharedRows | None) -> Callable[[Batch], list[Span]]:
    """``spans_of(batch)`` (``steering.resume``): a prefix pass holds its prefixes (left-padded), a
    continuation its rows' suffixes (from index 0), a whole-row batch its rows (left-padded)."""
    rows = [tuple(r) for r in ids]
    pre = [] if shared is None else [tuple(p) for p in shared.prefixes]
    start = [0] * len(ids) if shared is None else [len(r) - len(x) for r, x in zip(ids, shared.suffix)]

    def spans_of(batch: Batch) -> list[Span]:
        S = batch.input_ids.shape[1]
        if batch.extra.get(PREFIX):
            return [((pre[p], 0), b, S - len(pre[p])) for b, p in enumerate(batch.rows.tolist())]
        if SELECT in batch.extra:
            return [((rows[r], start[r]), b, 0) for b, r in enumerate(batch.rows.tolist())]
        return [((rows[r], 0), b, S - len(rows[r])) for b, r in enumerate(batch.rows.tolist())]
    return spans_of


def _span_keys(ids: Sequence[Sequence[int]], shared: SharedRows) -> list:
    """Every span key a shared-prefix pass over ``ids`` reads (its prefixes, suffixes and whole rows)."""
    return ([(tuple(p), 0) for p in shared.prefixes] +
            [(tuple(r), len(r) - len(x) if p >= 0 else 0) for r, x, p in zip(ids, shared.suffix, shared.row_prefix)])


def _run_shared(tr: Trace, shared: SharedRows, inj: Injection | None, n_ans_all: torch.Tensor, batch_size: int,
                token_budget: int | None, advance: Callable, start: int | None = None) -> None:
    """The prefix passes (steered like the row that has the prefix, in ``all`` mode) and the
    continuations of every row from the expanded cache (``steering.prefix``); ``start``: the pass is
    resumed after that block (``steering.resume``), whose cache layers then name the ones above."""
    loaded = tr.loaded
    pinj = None
    if inj is not None and inj.positions == "all":
        k = shared.prefix_row
        pinj = dataclasses.replace(inj, alpha=inj.alpha[k], layer_index=inj.layer_index[k],
                                   dir_index=inj.dir_index[k])
    no_answers = torch.zeros(len(shared.prefixes), dtype=torch.long, device=n_ans_all.device)
    for pb, continuations in iter_shared(loaded, shared, batch_size=batch_size, token_budget=token_budget):
        cache = new_cache(loaded)
        _prepare(pb, pinj, no_answers)
        tr.forward(pb, **cache_kwargs(loaded, cache))
        if start is not None:
            alias_skipped_cache(cache, start)
        for sb, index in continuations:
            _prepare(sb, inj, n_ans_all)
            with torch.inference_mode():
                grown = expand_cache(cache, index)
            tr.forward(sb, **cache_kwargs(loaded, grown))
            advance(sb.size)


@dataclass
class _Pass:
    """The options of one scoring pass (:func:`score_rows`' keywords)."""

    capture: Sequence[int]
    pooling: str
    batch_size: int
    token_budget: int | None
    backend: str | None
    shared_prefix: bool
    keep_states: Sequence[int] = ()


def _score(loaded, ids: Sequence[Sequence[int]], n_answer: Sequence[int], injection: Injection | None, o: _Pass,
           advance: Callable, start: BlockStates | None = None) -> ScoreOutput:
    """One scoring pass over ``ids`` (:func:`score_rows`); ``start``: resumed after block ``start.layer``
    from its stored states (shared-prefix path, no captures)."""
    device = next(loaded.model.parameters()).device
    R = len(ids)
    D = loaded.adapter.d_model
    n_ans_all = torch.as_tensor(list(n_answer), dtype=torch.long, device=device)
    lp = torch.zeros(R, dtype=torch.float64, device=device)
    states = {L: torch.zeros(R, D, dtype=torch.float32, device=device) for L in o.capture}
    if injection is not None:
        injection.directions = injection.directions.to(device=device, dtype=torch.float32)
    shared = None
    if o.shared_prefix and (not o.capture or o.pooling == "last"):
        shared = split_rows(ids, n_answer, _steer_keys(injection, R))
    spans_of = _spans_of(ids, shared)
    keep = [StateCollector(L, spans_of) for L in o.keep_states]
    cbs, hooks = _callbacks(injection, o.capture, o.pooling, o.backend, states, keep)
    # the final norm may run on another device
    cbs["final"] = [on_device(_scored_only(_answer_logprob(loaded, lp, n_answer)), device)]
    with contextlib.ExitStack() as stack:
        tr = stack.enter_context(Trace(loaded, cbs))
        for col in keep:
            stack.enter_context(col.watching(loaded.adapter.layers[col.layer]))
        if start is not None:
            stack.enter_context(resumed_at(loaded, start, spans_of, lambda: tr.batch))
        whole = range(R) if shared is None else shared.full_rows
        for batch in tr.batches(ids, batch_size=o.batch_size, token_budget=o.token_budget, order=whole):
            _prepare(batch, injection, n_ans_all)
            tr.forward(batch)
            advance(batch.size)
        if shared is not None:
            _run_shared(tr, shared, injection, n_ans_all, o.batch_size, o.token_budget, advance,
                        None if start is None else start.layer)
    dtype = next(loaded.model.parameters()).dtype
    return ScoreOutput(logprob=lp.cpu().numpy(), states={L: s.cpu().numpy() for L, s in states.items()},
                       n_injected=sum(h.n_injected for h in hooks),
                       block_states={c.layer: c.states(device, dtype, D) for c in keep})


def _resume_groups(loaded, ids, n_answer, inj: Injection, resume: Mapping[int, BlockStates]
                   ) -> list[tuple[np.ndarray, BlockStates | None]]:
    """The rows of each steered layer with the stored states they resume from (None: the layer has no
    states, or they lack a span of the rows, or it is the last block: those rows run whole).  Unsteered
    rows ride with the highest stored layer."""
    steered = (inj.alpha != 0) & (inj.layer_index >= 0)
    layer = np.where(steered, np.asarray(inj.layers)[np.maximum(inj.layer_index, 0)], max(resume, default=-1))
    out = []
    for L in np.unique(layer).tolist():
        rows = np.flatnonzero(layer == L)
        st = resume.get(L) if L < loaded.adapter.n_layers - 1 else None
        if st is not None:
            sub = [ids[r] for r in rows]
            if not st.has(_span_keys(sub, split_rows(sub, [n_answer[r] for r in rows]))):
                st = None
        out.append((rows, st))
    return out


def score_rows(loaded, ids: Sequence[Sequence[int]], n_answer: Sequence[int], injection: Injection | None = None,
               *, capture: Sequence[int] = (), pooling: str = "last", batch_size: int = 16,
               token_budget: int | None = None, backend: str | None = None, shared_prefix: bool = True,
               keep_states: Sequence[int] = (), resume: Mapping[int, BlockStates] | None = None,
               desc: str = "scoring") -> ScoreOutput:
    """Mean log-probability of each row's answer tokens given what precedes them (length-normalised),
    with the per-row injection of ``injection``; ``capture``: layers whose pooled block output (before
    any injection) is returned per row (calibration states).  ``shared_prefix``: each distinct
    question prefix runs once and its rows continue from its KV cache (``steering.prefix``; the same
    numbers to dtype tolerance; ``mean`` pooling captures need whole rows and run whole); False:
    one forward pass per batch of whole rows (the reference).  ``keep_states``: layers whose block
    output of every computed token is returned (``ScoreOutput.block_states``); ``resume``: such states
    (of an unsteered pass over the same token sequences): the rows steered at layer L skip blocks 0..L
    (``steering.resume``; the same numbers to dtype tolerance; shared-prefix path, no ``capture``).
    Progress: ``desc``, in rows."""
    o = _Pass(capture, pooling, batch_size, token_budget, backend, shared_prefix, keep_states)
    with progress.task(desc, total=len(ids), unit="row") as advance:
        if not (resume and injection is not None and shared_prefix and not capture and not keep_states):
            return _score(loaded, ids, n_answer, injection, o, advance)
        lp = np.zeros(len(ids))
        n_inj = 0
        for rows, start in _resume_groups(loaded, ids, n_answer, injection, resume):
            sub = dataclasses.replace(injection, alpha=injection.alpha[rows], layer_index=injection.layer_index[rows],
                                      dir_index=injection.dir_index[rows])
            out = _score(loaded, [ids[r] for r in rows], [n_answer[r] for r in rows], sub, o, advance, start)
            lp[rows] = out.logprob
            n_inj += out.n_injected
    return ScoreOutput(logprob=lp, n_injected=n_inj)


@dataclass
class FluencyOutput:
    kl: np.ndarray          # [G] mean next-token KL(steered || unsteered) per grid point, nats
    nll: np.ndarray         # [G] mean next-token negative log-likelihood (perplexity = exp)
    base_nll: float         # the same, unsteered
    n_tokens: int           # predicted positions averaged over


def _next_token_logp(loaded, device) -> Callable:
    """``logp_of(h, batch)``: the next-token log-probabilities [B, S-1, V] (float32, on ``device``) of
    every position but the last from the final norm's output."""
    ad = loaded.adapter

    def logp_of(h, batch):
        return torch.log_softmax(ad.unembed(h[:, :-1]).to(device, torch.float32), dim=-1)
    return logp_of


def fluency_pass(loaded, ids: Sequence[Sequence[int]], grid: Sequence[tuple[int, float]], layers: list[int],
                 directions: torch.Tensor, *, scale: str = "relative", tau: float | None = None,
                 batch_size: int = 16, token_budget: int | None = None,
                 backend: str | None = None) -> FluencyOutput:
    """Fluency cost of each grid point (layer index, alpha) on neutral texts (docs/METHODS.md §4.6):
    the unsteered next-token distributions first (kept on the device), then every (text, point) row
    steered at every token with ``directions[layer index]`` [len(layers), D]."""
    device = next(loaded.model.parameters()).device
    N = len(ids)
    G = len(grid)
    base: dict[int, torch.Tensor] = {}
    kl = torch.zeros(G, dtype=torch.float64, device=device)
    nll = torch.zeros(G, dtype=torch.float64, device=device)
    n_tok = sum(len(r) - 1 for r in ids)

    logp_of = _next_token_logp(loaded, device)
    base_nll = torch.zeros((), dtype=torch.float64, device=device)

    def final_base(h, batch):
        lp = logp_of(h, batch)
        S = h.shape[1]
        for k, r in enumerate(batch.rows.tolist()):
            n = len(ids[r])
            base[r] = lp[k, S - n:]                    # its own non-pad positions [len-1, V]
            base_nll.sub_(base[r].gather(-1, batch.input_ids[k, S - n + 1:, None]).sum().to(torch.float64))

    with progress.task("fluency", total=N * (G + 1), unit="row") as advance:
        with Trace(loaded, {"final": final_base}) as tr:
            for batch in tr.batches(ids, batch_size=batch_size, token_budget=token_budget):
                tr.forward(batch)
                advance(batch.size)
        _fluency_steered(loaded, ids, grid, layers, directions, base, kl, nll, scale=scale, tau=tau,
                         batch_size=batch_size, token_budget=token_budget, backend=backend, advance=advance)
    n = max(n_tok, 1)
    return FluencyOutput(kl=(kl / n).cpu().numpy(), nll=(nll / n).cpu().numpy(), base_nll=float(base_nll) / n,
                         n_tokens=int(n_tok))


def _fluency_steered(loaded, ids, grid, layers, directions, base, kl, nll, *, scale, tau, batch_size,
                     token_budget, backend, advance) -> None:
    """The steered (text, grid point) rows of :func:`fluency_pass`: KL against ``base`` [len-1, V] per
    text and the next-token NLL, summed into ``kl`` and ``nll`` [G] on the device."""
    device = next(loaded.model.parameters()).device
    N, G = len(ids), len(grid)
    logp_of = _next_token_logp(loaded, device)
    # steered rows: (text, grid point)
    rows = [(t, g) for g in range(G) for t in range(N)]
    rids = [ids[t] for t, _ in rows]
    li = np.array([grid[g][0] for _, g in rows])
    al = np.array([grid[g][1] for _, g in rows])
    inj = Injection(layers=layers, directions=directions.to(device, torch.float32)[:, None, :], alpha=al,
                    layer_index=li, dir_index=np.zeros(len(rows), dtype=np.int64), scale=scale, tau=tau,
                    positions="all", backend=backend)
    n_ans_all = torch.ones(len(rows), dtype=torch.long, device=device)

    def final(h, batch):
        lp = logp_of(h, batch)
        S = h.shape[1]
        for k, r in enumerate(batch.rows.tolist()):
            t, g = rows[r]
            n = len(ids[t])
            mine = lp[k, S - n:]
            b = base[t]
            kl[g] += (mine.exp() * (mine - b)).sum().to(torch.float64)
            tgt = batch.input_ids[k, S - n + 1:]
            nll[g] -= mine.gather(-1, tgt[:, None]).sum().to(torch.float64)

    cbs, _ = _callbacks(inj, (), "last", backend, {})
    cbs["final"] = [final]
    if rows:
        with Trace(loaded, cbs) as tr:
            for batch in tr.batches(rids, batch_size=batch_size, token_budget=token_budget):
                _prepare(batch, inj, n_ans_all)
                tr.forward(batch)
                advance(batch.size)
