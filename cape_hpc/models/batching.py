"""Tokenising and left-padded batching shared by extraction and steering (docs/METHODS.md §3, §4)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from cape_hpc.errors import DataError

__all__ = ["StopForward", "TokenLimit", "TokenRows", "token_limit", "tokenize", "left_pad", "forward_kwargs", "pad_id",
           "plan_batches"]


class StopForward(Exception):
    """Raised from a forward hook once the last module a computation needs has run."""


@dataclass(frozen=True)
class TokenLimit:
    """The most tokens a row may have (``tokens``; None: no limit) and what sets it (``source``)."""

    tokens: int | None
    source: str

    def message(self, n: int, what: str) -> str:
        """The warning for ``n`` rows of kind ``what`` cut to this limit."""
        return (f"{n} {what}(s) longer than {self.source} of {self.tokens} tokens were truncated to their last "
                f"{self.tokens} tokens")


def token_limit(loaded, max_tokens: int | None = None) -> TokenLimit:
    """The effective token limit of a row: the smaller of the model's context and ``max_tokens``
    (the maximum prompt length when it is set and not above the context)."""
    ctx = loaded.adapter.context_length
    if max_tokens is not None and (not ctx or int(max_tokens) <= int(ctx)):
        return TokenLimit(int(max_tokens), "the maximum prompt length")
    return TokenLimit(int(ctx) if ctx else None, "the model's context")


def tokenize(loaded, texts: Sequence[str], *, what: str = "prompt", add_special_tokens: bool = True,
             max_tokens: int | None = None, labels: Sequence[str] | None = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of each text (special tokens as the tokenizer adds them), truncated from the left to
    the effective token limit (``token_limit``) with one warning for all of them, naming the first by
    its label (``labels[i]``, e.g. ``items.jsonl: line 7``; else ``#i``).  The tokenizer's own
    "sequence length is longer" log line is not printed.  Returns (ids, indices of truncated texts)."""
    tok = loaded.tokenizer
    limit = token_limit(loaded, max_tokens)
    ctx = limit.tokens
    ids = _token_ids(tok, texts, add_special_tokens)
    name = (lambda i: labels[i]) if labels is not None else (lambda i: f"{what} #{i}")
    truncated = []
    for i, row in enumerate(ids):
        if not row:
            raise DataError(f"{name(i)}: the {what} tokenises to nothing")
        if ctx and len(row) > ctx:
            truncated.append(i)
            ids[i] = row[-ctx:]
    if truncated:
        warnings.warn(f"{limit.message(len(truncated), what)} (first: {name(truncated[0])})", stacklevel=3)
    return ids, truncated


def _token_ids(tok, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of each text through one batched call (a fast tokenizer encodes the list in Rust, not
    one Python call per text; the same ids), chunked so the tokenizer's per-text encodings held by
    one call stay small; nothing of the tokenizer's output is kept but the id lists."""
    out: list[list[int]] = []
    for i in range(0, len(texts), _TOKENIZE_CHUNK):
        enc = tok(list(texts[i:i + _TOKENIZE_CHUNK]), add_special_tokens=add_special_tokens, verbose=False)
        out += [list(r) for r in enc["input_ids"]]
        del enc
    return out


#: texts per call of the tokenizer in ``tokenize``
_TOKENIZE_CHUNK = 256


class TokenRows(Sequence):
    """Token id rows held flat: one int64 array ``flat`` [total tokens] and the row bounds ``starts``
    [n + 1]; ``rows[i]`` is a view of row i.  Thousands of rows kept alive while their batches run
    (an extraction window) are two allocations instead of a list per row, which the heap would
    interleave with the forward passes' temporaries (docs/METHODS.md §3.2)."""

    def __init__(self, rows: Sequence[Sequence[int]]):
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        self.starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.starts[1:])
        self.flat = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(self.starts[-1]))

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        return self.flat[self.starts[i]:self.starts[i + 1]]

    def lengths(self) -> np.ndarray:
        """Tokens per row [n]."""
        return np.diff(self.starts)


def plan_batches(lengths: Sequence[int], *, batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Split sequences into batches of similar length: indices sorted by (length, index), cut so that
    a batch has at most ``batch_size`` rows and, with ``token_budget``, at most that many padded
    tokens (rows x longest length; a single sequence longer than the budget runs alone).  One long
    prompt therefore pads only its own batch.  Returns lists of indices into ``lengths``."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(lengths)), key=lambda j: (int(lengths[j]), j))
    out: list[list[int]] = []
    cur: list[int] = []
    for j in order:
        n = int(lengths[j])        # sorted ascending: the newest row is the longest of the batch
        if cur and (len(cur) >= batch_size or (token_budget is not None and (len(cur) + 1) * n > token_budget)):
            out.append(cur)
            cur = []
        cur.append(j)
    if cur:
        out.append(cur)
    return out


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) of a left-padded batch."""
    S = max(len(r) for r in rows)
    ids = torch.full((len(rows), S), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), S), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, S - len(r):] = torch.as_tensor(r, dtype=torch.long)
            mask[i, S - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids, mask, pos


def forward_kwargs(loaded, ids, mask, pos) -> dict[str, Any]:
    """Keyword arguments of one forward pass on the model's device (position ids when it takes them)."""
    device = next(loaded.model.parameters()).device
    kw: dict[str, Any] = dict(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    if loaded.adapter.accepts_position_ids:
        kw["position_ids"] = pos.to(device)
    return kw


def pad_id(loaded) -> int:
    tok = loaded.tokenizer
    for v in (tok.pad_token_id, tok.eos_token_id, 0):
        if v is not None:
            return int(v)
    return 0
