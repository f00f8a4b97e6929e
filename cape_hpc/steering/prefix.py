"""Shared-prefix scoring (docs/METHODS.md §4.3, §4.5): the question's KV cache is computed once and
every row that begins with it continues from it.

A scored row is ``prefix + suffix``: the suffix is the last question token and the answer tokens
(the positions that predict the answer and, with ``score_positions answer``, the only ones steered),
the prefix everything before.  Rows with the same prefix tokens and the same prefix steering (none
in ``answer`` mode; the row's (layer, alpha, direction) in ``all`` mode) share one prefix pass.

Layout of one batch: the prefixes of several items, left-padded, run once with a KV cache
(``prefix_batch``, the pass stopped at the final norm); the cache is expanded to the suffix rows
with ``index_select`` on the device (``expand_cache``); the suffixes are right-padded after it, so
the distance between any two real tokens is the one of the full row (sliding-window layers see the
same window) and each suffix token sits at position (its prefix length + j).  Every tensor is built
on the host from the token lists and moved once (non-blocking): no host synchronisation.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Hashable, Iterator, Sequence

import numpy as np
import torch

from cape_hpc.models.batching import pad_id, plan_batches
from cape_hpc.models.tracing import Batch, make_batch

__all__ = ["PREFIX", "LAST", "SELECT", "SharedRows", "split_rows", "plan_shared", "prefix_batch", "suffix_batch",
           "expand_cache", "new_cache", "cache_kwargs", "iter_shared"]

#: ``Batch.extra`` slots: a prefix pass (nothing is scored or captured), the index of each row's
#: last real token [B] (right-padded suffixes), the positions a row may be steered at [B, S] bool
PREFIX, LAST, SELECT = "prefix", "last", "select"


@dataclass
class SharedRows:
    """The rows split at their prefixes: ``prefixes`` (distinct token lists), ``prefix_row`` [n_prefixes]
    one row that has each (its steering is the prefix's), ``row_prefix`` [R] the prefix of each row
    (-1: no prefix, the row is scored whole), ``suffix`` [R] the tokens after the prefix."""

    prefixes: list[list[int]]
    prefix_row: np.ndarray
    row_prefix: np.ndarray
    suffix: list[list[int]]

    @property
    def full_rows(self) -> list[int]:
        return [int(r) for r in np.flatnonzero(self.row_prefix < 0)]


def split_rows(ids: Sequence[Sequence[int]], n_answer: Sequence[int],
               steer_key: Sequence[Hashable] | None = None) -> SharedRows:
    """Split each row after its question minus the last token (``len - n_answer - 1`` tokens; a row
    whose prefix would be empty is scored whole).  ``steer_key[r]``: what besides the tokens the
    row's prefix depends on (None: nothing); rows with equal tokens and keys share a prefix."""
    seen: dict = {}
    prefixes, prefix_row, row_prefix, suffix = [], [], np.full(len(ids), -1, dtype=np.int64), []
    for r, (row, n) in enumerate(zip(ids, n_answer)):
        P = len(row) - int(n) - 1
        if P < 1:
            suffix.append(list(row))
            continue
        key = (tuple(row[:P]), None if steer_key is None else steer_key[r])
        if key not in seen:
            seen[key] = len(prefixes)
            prefixes.append(list(row[:P]))
            prefix_row.append(r)
        row_prefix[r] = seen[key]
        suffix.append(list(row[P:]))
    return SharedRows(prefixes, np.asarray(prefix_row, dtype=np.int64), row_prefix, suffix)


def plan_shared(shared: SharedRows, *, batch_size: int, token_budget: int | None = None
                ) -> list[tuple[list[int], list[list[int]]]]:
    """Prefix batches (at most ``batch_size`` prefixes and ``token_budget`` padded prefix tokens),
    each with the batches of the rows that continue them.  A row batch computes about as many new
    tokens as ``batch_size`` whole rows (rows <= batch_size x (P + S) / S for the longest prefix P and
    suffix S of the prefix batch) and holds at most ``token_budget`` cached plus new tokens."""
    users: dict[int, list[int]] = {}
    for r, p in enumerate(shared.row_prefix.tolist()):
        if p >= 0:
            users.setdefault(p, []).append(r)
    out = []
    for chunk in plan_batches([len(p) for p in shared.prefixes], batch_size=batch_size, token_budget=token_budget):
        P = max(len(shared.prefixes[p]) for p in chunk)
        rows = [r for p in chunk for r in users[p]]
        S = max(len(shared.suffix[r]) for r in rows)
        per = batch_size * max(1, (P + S) // S)
        plan = plan_batches([P + len(shared.suffix[r]) for r in rows], batch_size=per, token_budget=token_budget)
        out.append((chunk, [[rows[k] for k in b] for b in plan]))
    return out


def prefix_batch(loaded, shared: SharedRows, chunk: Sequence[int]) -> Batch:
    """The left-padded prefixes ``chunk`` (``Batch.rows``: prefix indices), marked as a prefix pass."""
    batch = make_batch(loaded, shared.prefixes, chunk)
    batch.extra[PREFIX] = True
    return batch


def suffix_batch(loaded, shared: SharedRows, pb: Batch, rows: Sequence[int]) -> tuple[Batch, torch.Tensor]:
    """The rows ``rows`` continuing prefix batch ``pb``: suffix ids right-padded [B, S], the attention
    mask [B, P + S] (the prefix's, then the suffix's), positions (prefix length + j), the index of
    each row's last token and its steerable positions (the suffix) in ``extra``.  Returns the batch
    and the index [B] (on the device) of each row's prefix in ``pb``."""
    device = pb.input_ids.device
    where = {int(p): k for k, p in enumerate(pb.rows.tolist())}
    k = [where[int(shared.row_prefix[r])] for r in rows]
    P, lp = pb.input_ids.shape[1], [pb.lengths[j] for j in k]
    ls = [len(shared.suffix[r]) for r in rows]
    S = max(ls)
    ids = torch.full((len(rows), S), pad_id(loaded), dtype=torch.long)
    smask = torch.zeros((len(rows), S), dtype=torch.long)
    pmask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :ls[i]] = torch.as_tensor(shared.suffix[r], dtype=torch.long)
        smask[i, :ls[i]] = 1
        pmask[i, P - lp[i]:] = 1
    # a pad slot repeats its row's last position (masked, after every real token): positions never pass
    # the row's own end, so a row at the model's full context stays inside absolute position tables
    last = torch.as_tensor(ls, dtype=torch.long)[:, None] - 1
    pos = torch.as_tensor(lp, dtype=torch.long)[:, None] + torch.minimum(torch.arange(S)[None, :], last)
    rows_t = torch.as_tensor(list(rows), dtype=torch.long)
    nb = device.type != "cpu"

    def dev(t):
        return t.to(device, non_blocking=nb)
    batch = Batch(rows=rows_t, rows_device=dev(rows_t), input_ids=dev(ids),
                  attention_mask=dev(torch.cat([pmask, smask], 1)), position_ids=dev(pos),
                  lengths=[a + b for a, b in zip(lp, ls)])
    batch.extra[LAST] = dev(torch.as_tensor(ls, dtype=torch.long) - 1)
    batch.extra[SELECT] = dev(smask.to(torch.bool))
    return batch, dev(torch.as_tensor(k, dtype=torch.long))


def new_cache(loaded):
    """An empty KV cache of the model's layer types (sliding-window layers included)."""
    from transformers import DynamicCache

    return DynamicCache(config=loaded.model.config)


def expand_cache(cache, index: torch.Tensor):
    """A copy of ``cache`` whose batch row i is ``cache``'s row ``index[i]`` (``index_select`` on each
    layer's device); ``cache`` itself is unchanged (its per-layer lengths are kept, and a layer object
    that stands for several layers stays one object)."""
    out = copy.copy(cache)
    out.layers = []
    done: dict[int, object] = {}                     # a layer named twice (resume's aliases) is copied once
    for layer in cache.layers:
        if id(layer) not in done:
            new = done[id(layer)] = copy.copy(layer)
            if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel():
                new.keys = layer.keys.index_select(0, index.to(layer.keys.device))
                new.values = layer.values.index_select(0, index.to(layer.values.device))
        out.layers.append(done[id(layer)])
    return out


def cache_kwargs(loaded, cache) -> dict:
    """The forward keywords that pass ``cache`` to the model (``past_key_values`` or ``cache``)."""
    import inspect

    params = inspect.signature(loaded.model.forward).parameters
    return {"use_cache": True, ("cache" if "cache" in params else "past_key_values"): cache}


def iter_shared(loaded, shared: SharedRows, *, batch_size: int, token_budget: int | None = None
                ) -> Iterator[tuple[Batch, Iterator[tuple[Batch, torch.Tensor]]]]:
    """Each prefix batch with (lazily) its row batches and their prefix indices (:func:`plan_shared`,
    :func:`suffix_batch`): run the prefix batch before taking its row batches."""
    for chunk, row_batches in plan_shared(shared, batch_size=batch_size, token_budget=token_budget):
        pb = prefix_batch(loaded, shared, chunk)
        yield pb, (suffix_batch(loaded, shared, pb, rows) for rows in row_batches)
