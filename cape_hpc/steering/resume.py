"""A forward pass resumed at a decoder block from stored states (docs/METHODS.md §4.5).

A steered row is injected at the output of block L, so blocks 0..L compute the same for the baseline
and every grid point.  The baseline pass keeps the output of block L (before any injection) of every
token it computes (:class:`StateCollector`, a ``Trace`` callback); a steered pass then skips blocks
0..L (:func:`resumed_at`: blocks below L return their input untouched, block L returns the stored
states of the batch's tokens) and computes only blocks L+1.. and the answer positions' unembedding.
The block hooks of ``Trace`` still run on block L's (stored) output, so the injection and captures
see exactly what a full pass would give them.  Position embeddings, rotary angles, padding and the
KV cache of the blocks above L are those of the full pass: the model's own forward still runs (its
embedding, masks and position handling included), only the skipped blocks' work is gone.

A *span* is ``(key, b, s0)``: batch row b holds, from index s0 on, positions ``start..len(tokens)``
of the token sequence ``tokens`` (``key = (tokens, start)``), each computed from position 0 of that
sequence.  The states of a span depend on its key only, so any batch layout can read what any other
stored.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = ["Span", "BlockStates", "StateCollector", "resumed_at", "alias_skipped_cache"]

#: (key = (token tuple, start position), batch row, first batch index of the span)
Span = tuple[tuple[tuple[int, ...], int], int, int]

def _span_len(key) -> int:
    return len(key[0]) - key[1]


@dataclass
class BlockStates:
    """Output of block ``layer`` (before any injection) of stored spans: ``buffer`` [1 + T, D] in the
    model's dtype on its device (row 0: zeros, read by pad slots) and ``where`` {key: buffer row of the
    span's first position}; ``tuple_out``: the block returned a tuple (hidden, ...), as observed when
    the states were kept (the skipped blocks return the same kind)."""

    layer: int
    buffer: torch.Tensor
    where: dict = field(default_factory=dict)
    tuple_out: bool = False

    def has(self, keys) -> bool:
        return all(k in self.where for k in keys)

    def gather(self, spans: Sequence[Span], B: int, S: int) -> torch.Tensor:
        """[B, S, D]: each span's stored states at its batch slots, zeros elsewhere (one index built on
        the host, moved once, one ``index_select`` on the device)."""
        idx = np.zeros((B, S), dtype=np.int64)
        for key, b, s0 in spans:
            n = _span_len(key)
            at = self.where[key]
            idx[b, s0:s0 + n] = np.arange(at, at + n)
        dev = self.buffer.device
        index = torch.from_numpy(idx.reshape(-1)).to(dev, non_blocking=dev.type != "cpu")
        return self.buffer.index_select(0, index).view(B, S, -1)


class StateCollector:
    """``Trace`` callback at ``block.{layer}`` (placed before any injection there): stores the block's
    output at every span of every batch (prefix passes included; a key seen before is skipped).
    ``spans_of(batch)``: the batch's spans.  :meth:`states` returns the :class:`BlockStates`.
    :meth:`watching` records, around the pass, whether the block returns a tuple."""

    def __init__(self, layer: int, spans_of: Callable[[object], list[Span]]):
        self.layer, self.spans_of = layer, spans_of
        self.parts: list[torch.Tensor] = []
        self.where: dict = {}
        self.total = 1
        self.tuple_out = False

    @contextlib.contextmanager
    def watching(self, block: torch.nn.Module) -> Iterator[None]:
        """Inside: a forward hook on ``block`` notes the kind of its output."""
        def note(module, args, output):
            self.tuple_out = isinstance(output, tuple)
        handle = block.register_forward_hook(note)
        try:
            yield
        finally:
            handle.remove()

    def __call__(self, x: torch.Tensor, batch) -> None:
        bs, ss = [], []
        for key, b, s0 in self.spans_of(batch):
            if key in self.where:
                continue
            n = _span_len(key)
            self.where[key] = self.total + len(bs)
            bs += [b] * n
            ss += range(s0, s0 + n)
        if not bs:
            return
        nb = x.device.type != "cpu"
        bi = torch.as_tensor(bs, dtype=torch.long).to(x.device, non_blocking=nb)
        si = torch.as_tensor(ss, dtype=torch.long).to(x.device, non_blocking=nb)
        self.parts.append(x[bi, si])
        self.total += len(bs)

    def states(self, device: torch.device, dtype: torch.dtype, D: int) -> BlockStates:
        zero = torch.zeros(1, D, dtype=dtype, device=device)
        return BlockStates(self.layer, torch.cat([zero] + [p.to(device, dtype) for p in self.parts]), self.where,
                           self.tuple_out)


def _hidden_arg(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def resumed_at(loaded, states: BlockStates, spans_of: Callable[[object], list[Span]],
               current_batch: Callable[[], object]) -> Iterator[None]:
    """Inside: blocks 0..``states.layer`` of ``loaded`` do not compute; blocks below return their
    input, block ``states.layer`` returns the stored states of ``current_batch()``'s spans (its forward
    hooks, i.e. ``Trace``'s callbacks, still run on them).  The blocks' own forwards are put back on
    exit (an instance-level forward, e.g. accelerate's, is kept)."""
    ad = loaded.adapter
    blocks = ad.layers[:states.layer + 1]
    tup = states.tuple_out

    def wrap(h):
        return (h,) if tup else h

    def skip(*args, **kwargs):
        return wrap(_hidden_arg(args, kwargs))

    def start(*args, **kwargs):
        h = _hidden_arg(args, kwargs)
        batch = current_batch()
        B, S = batch.input_ids.shape
        return wrap(states.gather(spans_of(batch), B, S).to(h.device, h.dtype))

    saved = [m.__dict__.get("forward") for m in blocks]
    try:
        for m in blocks[:-1]:
            m.forward = skip
        blocks[-1].forward = start
        yield
    finally:
        for m, old in zip(blocks, saved):
            if old is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = old


def alias_skipped_cache(cache, layer: int) -> None:
    """Blocks 0..``layer`` left their cache layers empty in a resumed pass; each now names a cache layer
    above ``layer`` of the same kind (sliding or not; any kind when none), so the model's mask and
    position set-up (which read the first full / first sliding layer's length) see the prefix's length.
    The aliases are the same objects (nothing copied; :func:`steering.prefix.expand_cache` keeps them)."""
    above = cache.layers[layer + 1:]
    for i in range(layer + 1):
        kind = getattr(cache.layers[i], "is_sliding", False)
        same = [m for m in above if getattr(m, "is_sliding", False) == kind]
        cache.layers[i] = (same or above)[0]
