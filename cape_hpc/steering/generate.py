"""Greedy generation with and without the injection (docs/METHODS.md §4.7): batched, left-padded,
with a KV cache, through ``Trace`` (``stop=False``).  The steering state of each model call (which
positions of which rows are injected) travels in the call's :class:`~cape_hpc.models.tracing.Batch`
(``steering.hooks.RowInjection``).  The generated tokens and the finished mask stay on the device;
the host reads them once, at the end (no per-token synchronisation)."""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Sequence

import torch

from cape_hpc.errors import OptionError
from cape_hpc.models.tracing import Batch, Trace, make_batch
from cape_hpc.steering.hooks import INJECT, InjectionHook, RowInjection
from cape_hpc.steering.results import POSITIONS

__all__ = ["Steering", "greedy_generate", "eos_ids"]


@dataclass
class Steering:
    """The injection of one generation: ``direction`` [D] at block ``layer`` with ``alpha`` per row (a
    number, or a [N] tensor: baseline and steered rows in one batch), ``scale`` relative (s = |h|) or
    absolute, gate ``tau`` (None: none), at ``positions``: all (prompt and generated tokens), last
    (the last prompt token), generated (generated tokens only).  After a run: ``last_cos`` [N]
    cos(h, v) at the last prompt token before the injection (on the device) and ``n_injected``."""

    layer: int
    direction: torch.Tensor
    alpha: float | torch.Tensor
    scale: str = "relative"
    positions: str = "all"
    tau: float | None = None
    backend: str | None = None
    last_cos: torch.Tensor | None = None
    hook: InjectionHook = field(init=False)

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise OptionError(f"--positions: {self.positions!r} is not one of {', '.join(POSITIONS)}")
        self.hook = InjectionHook(self.direction, self.point, scale=self.scale, tau=self.tau, backend=self.backend)

    @property
    def point(self) -> str:
        return f"block.{self.layer}"

    @property
    def n_injected(self) -> int:
        return self.hook.n_injected

    def _alpha(self, n: int, device) -> torch.Tensor:
        a = self.alpha
        return (a.to(device, torch.float32) if isinstance(a, torch.Tensor)
                else torch.full((n,), float(a), dtype=torch.float32, device=device))

    def prefill(self, batch: Batch) -> RowInjection:
        """The prefill call's injection: every prompt token (all), the last one (last) or none."""
        sel = batch.attention_mask.to(torch.bool)
        if self.positions == "last":
            sel = sel & (torch.arange(sel.shape[1], device=sel.device) == sel.shape[1] - 1)[None, :]
        elif self.positions == "generated":
            sel = torch.zeros_like(sel)
        return RowInjection(self._alpha(batch.size, sel.device), sel, record_last_cos=True)

    def step(self, batch: Batch) -> RowInjection | None:
        """A decoding step's injection: the new token (all, generated) or none (last)."""
        if self.positions == "last":
            return None
        n = batch.size
        return RowInjection(self._alpha(n, batch.input_ids.device),
                            torch.ones((n, 1), dtype=torch.bool, device=batch.input_ids.device))


def _cache_of(res):
    for name in ("cache", "past_key_values"):
        c = getattr(res, name, None)
        if c is not None:
            return c
    raise RuntimeError("the model returned no KV cache")


def eos_ids(loaded) -> list[int]:
    eos = loaded.tokenizer.eos_token_id
    out = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
    gc = getattr(loaded.model, "generation_config", None)
    if gc is not None and gc.eos_token_id is not None:
        e = gc.eos_token_id
        out |= set(e if isinstance(e, (list, tuple)) else [e])
    return sorted(int(x) for x in out)


def greedy_generate(loaded, rows: Sequence[Sequence[int]], max_new_tokens: int, steering: Steering | None = None,
                    stop_at_eos: bool = True, *, return_device: bool = False):
    """Batched greedy decoding of left-padded prompts with a KV cache, with ``steering`` (None: the
    plain model).  Tokens [N, max_new_tokens] and the finished mask [N] live on the device for the
    whole loop (``max_new_tokens`` steps; a row that produced EOS keeps decoding but its later tokens
    are masked); one transfer at the end.  Returns each row's tokens before its first EOS
    (``stop_at_eos=False``: every token), or with ``return_device=True`` the device tensors (tokens
    with -1 after EOS, finished mask)."""
    model = loaded.model
    device = next(model.parameters()).device
    eos = torch.as_tensor(eos_ids(loaded) or [-2], dtype=torch.long, device=device)
    params = inspect.signature(model.forward).parameters
    call = {"use_cache": True, **({"logits_to_keep": 1} if "logits_to_keep" in params else {})}
    cache_arg = "cache" if "cache" in params else "past_key_values"
    N = len(rows)
    tokens = torch.full((N, max_new_tokens), -1, dtype=torch.long, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    callbacks = {} if steering is None else {steering.point: steering.hook}
    with Trace(loaded, callbacks, stop=False) as tr, torch.inference_mode():
        batch = make_batch(loaded, rows, range(N))
        if steering is not None:
            batch.extra[INJECT] = {steering.point: steering.prefill(batch)}
        res = tr.forward(batch, **call)
        if steering is not None:
            steering.last_cos = batch.extra[INJECT][steering.point].last_cos
        for step in range(max_new_tokens):
            nxt = res.logits[:, -1, :].argmax(-1)
            if stop_at_eos:
                finished = finished | torch.isin(nxt, eos)
                tokens[:, step] = torch.where(finished, -1, nxt)
            else:
                tokens[:, step] = nxt
            if step == max_new_tokens - 1:
                break
            batch = _next_batch(batch, nxt)
            if steering is not None:
                batch.extra[INJECT] = {steering.point: steering.step(batch)}
            res = tr.forward(batch, **call, **{cache_arg: _cache_of(res)})
    if return_device:
        return tokens, finished
    host = tokens.cpu().tolist()                     # the one transfer
    return [[t for t in row[:row.index(-1)]] if -1 in row else row for row in host]


def _next_batch(batch: Batch, nxt: torch.Tensor) -> Batch:
    """The decoding step after ``batch``: the new token [N, 1], the mask one column longer, the next
    positions (all on the device)."""
    ones = torch.ones(batch.size, 1, dtype=batch.attention_mask.dtype, device=batch.attention_mask.device)
    return dataclasses.replace(batch, input_ids=nxt[:, None], attention_mask=torch.cat([batch.attention_mask, ones], 1),
                               position_ids=batch.position_ids[:, -1:] + 1, extra={})
