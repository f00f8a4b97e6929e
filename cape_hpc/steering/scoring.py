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

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from cape_hpc import progress
from cape_hpc.errors import DataError, OptionError
from cape_hpc.models.batching import token_limit, tokenize
from cape_hpc.models.tracing import Batch, Trace, on_device
from cape_hpc.steering.hooks import INJECT, InjectionHook, RowInjection, pooled_capture
from cape_hpc.steering.prefix import (LAST, PREFIX, SELECT, SharedRows, cache_kwargs, expand_cache, iter_shared,
                                      new_cache, split_rows)

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
               states: dict[int, torch.Tensor]) -> tuple[dict[str, list[Callable]], list[InjectionHook]]:
    """The trace callbacks of a scoring pass (the captures before the injection at the same point)
    and the injection hooks (their counts)."""
    cbs: dict[str, list[Callable]] = {}
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
    A row's last token is at S - 1 (left-padded rows) or at ``batch.extra[LAST]`` (continuations)."""
    ad = loaded.adapter

    def final(h, batch):
        B, S, _ = h.shape
        n_ans = batch.extra["n_ans"]
        A = int(max(n_answer[r] for r in batch.rows.tolist()))
        j = torch.arange(A, device=h.device)
        valid = j[None, :] < n_ans[:, None]                          # [B, A]
        first = batch.extra[LAST] - n_ans if LAST in batch.extra else S - 1 - n_ans
        pos = first[:, None] + j[None, :]                            # predicting positions
        pos = torch.where(valid, pos, first[:, None]).clamp_min(0)
        hs = h.gather(1, pos[..., None].expand(B, A, h.shape[-1]))
        logp = torch.log_softmax(ad.unembed(hs).to(h.device, torch.float32), dim=-1)
        tgt = batch.input_ids.gather(1, (pos + 1).clamp_max(S - 1))
        got = logp.gather(-1, tgt[..., None])[..., 0].to(torch.float64) * valid
        lp.index_copy_(0, batch.rows_device, got.sum(1) / n_ans.to(torch.float64))
    return final


def _steer_keys(inj: Injection | None, R: int) -> list | None:
    """What a row's prefix depends on besides its tokens: nothing when the prefix is never steered
    (``answer`` positions, or no injection), else the row's (layer, alpha, direction) (None: unsteered)."""
    if inj is None or inj.positions != "all":
        return None
    return [(int(li), float(a), int(d)) if (a != 0 and li >= 0) else None
            for li, a, d in zip(inj.layer_index, inj.alpha, inj.dir_index)]


def _run_shared(tr: Trace, shared: SharedRows, inj: Injection | None, n_ans_all: torch.Tensor, batch_size: int,
                token_budget: int | None, advance: Callable) -> None:
    """The prefix passes (steered like the row that has the prefix, in ``all`` mode) and the
    continuations of every row from the expanded cache (``steering.prefix``)."""
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
        for sb, index in continuations:
            _prepare(sb, inj, n_ans_all)
            with torch.inference_mode():
                grown = expand_cache(cache, index)
            tr.forward(sb, **cache_kwargs(loaded, grown))
            advance(sb.size)


def score_rows(loaded, ids: Sequence[Sequence[int]], n_answer: Sequence[int], injection: Injection | None = None,
               *, capture: Sequence[int] = (), pooling: str = "last", batch_size: int = 16,
               token_budget: int | None = None, backend: str | None = None, shared_prefix: bool = True,
               desc: str = "scoring") -> ScoreOutput:
    """Mean log-probability of each row's answer tokens given what precedes them (length-normalised),
    with the per-row injection of ``injection``; ``capture``: layers whose pooled block output (before
    any injection) is returned per row (calibration states).  ``shared_prefix``: each distinct
    question prefix runs once and its rows continue from its KV cache (``steering.prefix``; the same
    numbers to dtype tolerance; ``mean`` pooling captures need whole rows and run whole); False:
    one forward pass per batch of whole rows (the reference).  Progress: ``desc``, in rows."""
    device = next(loaded.model.parameters()).device
    R = len(ids)
    D = loaded.adapter.d_model
    n_ans_all = torch.as_tensor(list(n_answer), dtype=torch.long, device=device)
    lp = torch.zeros(R, dtype=torch.float64, device=device)
    states = {L: torch.zeros(R, D, dtype=torch.float32, device=device) for L in capture}
    if injection is not None:
        injection.directions = injection.directions.to(device=device, dtype=torch.float32)
    cbs, hooks = _callbacks(injection, capture, pooling, backend, states)
    # the final norm may run on another device
    cbs["final"] = [on_device(_scored_only(_answer_logprob(loaded, lp, n_answer)), device)]
    shared = None
    if shared_prefix and (not capture or pooling == "last"):
        shared = split_rows(ids, n_answer, _steer_keys(injection, R))
    with progress.task(desc, total=R, unit="row") as advance, Trace(loaded, cbs) as tr:
        whole = range(R) if shared is None else shared.full_rows
        for batch in tr.batches(ids, batch_size=batch_size, token_budget=token_budget, order=whole):
            _prepare(batch, injection, n_ans_all)
            tr.forward(batch)
            advance(batch.size)
        if shared is not None:
            _run_shared(tr, shared, injection, n_ans_all, batch_size, token_budget, advance)
    return ScoreOutput(logprob=lp.cpu().numpy(), states={L: s.cpu().numpy() for L, s in states.items()},
                       n_injected=sum(h.n_injected for h in hooks))


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
