"""Greedy generation with and without the injection (docs/METHODS.md §4.7): batched, left-padded,
with a preallocated KV cache, through ``Trace`` (``stop=False``).  The steering state of each model
call (which positions of which rows are injected) travels in the call's
:class:`~cape_hpc.models.tracing.Batch` (``steering.hooks.RowInjection``).

Nothing grows per step: the KV cache is allocated once for prompt + new tokens and attention reads
the positions written so far (``models.kv_cache``), the attention mask and the positions of every
step are written once before the loop and each step reads a view of them.  The generated
tokens and the finished mask stay on the device; the loop stops once every row has finished (on a
GPU the finished flag is copied to the host without blocking and read when it has arrived, so no
step waits for the device) and the host reads the tokens once, at the end.  Without steering (or
with alpha 0 for every row) no hook runs during decoding: the plain model."""
from __future__ import annotations

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

    @property
    def steers(self) -> bool:
        """Whether any row has a nonzero alpha (one host read of a tensor alpha, before any model call)."""
        a = self.alpha
        return bool(a.ne(0).any()) if isinstance(a, torch.Tensor) else float(a) != 0.0

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
        """A decoding step's injection: the new token (all, generated) or none (last).  The same for
        every step: built once per generation."""
        if self.positions == "last":
            return None
        n = batch.size
        return RowInjection(self._alpha(n, batch.input_ids.device),
                            torch.ones((n, 1), dtype=torch.bool, device=batch.input_ids.device))


def eos_ids(loaded) -> list[int]:
    eos = loaded.tokenizer.eos_token_id
    out = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
    gc = getattr(loaded.model, "generation_config", None)
    if gc is not None and gc.eos_token_id is not None:
        e = gc.eos_token_id
        out |= set(e if isinstance(e, (list, tuple)) else [e])
    return sorted(int(x) for x in out)


def _cache_of(res):
    for name in ("cache", "past_key_values"):
        c = getattr(res, name, None)
        if c is not None:
            return c
    raise RuntimeError("the model returned no KV cache")


def _decoding_cache(model, slots: int):
    """The KV cache of one generation: ``models.kv_cache.preallocated_cache`` of ``slots`` positions
    (the model's own dynamic cache where transformers cannot build one from the config: None)."""
    from cape_hpc.models.kv_cache import preallocated_cache

    try:
        return preallocated_cache(model.config, slots)
    except (TypeError, ValueError, KeyError, AttributeError):      # a config the cache layers do not describe
        return None


class _Steps:
    """What the decoding steps read, allocated once: the attention mask [N, S0 + T - 1] (the prompt's
    padding, then ones), the positions [T - 1, N], the KV cache (preallocated, S0 + T - 1 slots; each
    step's mask is the view of the columns seen so far, as ``generate`` passes it) and the steps'
    ``Batch.extra`` (the injection, the same each step)."""

    def __init__(self, loaded, batch: Batch, max_new_tokens: int, extra: dict):
        N, S0 = batch.input_ids.shape
        slots = S0 + max_new_tokens - 1
        dev = batch.input_ids.device
        self.batch, self.S0, self.extra = batch, S0, extra
        self.mask = torch.ones((N, slots), dtype=batch.attention_mask.dtype, device=dev)
        self.mask[:, :S0] = batch.attention_mask
        ahead = torch.arange(1, max_new_tokens, dtype=batch.position_ids.dtype, device=dev)
        self.positions = (batch.position_ids[:, -1][None, :] + ahead[:, None]).contiguous()      # [T - 1, N]
        self.cache = _decoding_cache(loaded.model, slots)

    def batch_of(self, k: int, nxt: torch.Tensor) -> Batch:
        """The Batch of decoding step k: the token ``nxt`` [N] chosen after step k - 1 (0: the prefill)."""
        b = self.batch
        return Batch(rows=b.rows, rows_device=b.rows_device, input_ids=nxt[:, None],
                     attention_mask=self.mask[:, :self.S0 + k + 1],
                     position_ids=self.positions[k][:, None], lengths=b.lengths, extra=self.extra)


class _StopCheck:
    """Whether every row has finished, read without making a step wait: on the CPU the flag the step
    just wrote is read at once (no device to wait for, and no step is wasted); on a GPU every
    ``every`` steps ``finished.all()`` is copied to pinned host memory without blocking and read once
    its event has completed (a later step), so decoding goes on a few masked steps past the end."""

    def __init__(self, device: torch.device, every: int = 8):
        self.cuda, self.every = device.type == "cuda", every
        self.flag = torch.zeros((), dtype=torch.bool, pin_memory=self.cuda)
        self.event = None

    def done(self, finished: torch.Tensor, k: int) -> bool:
        if not self.cuda:
            return bool(finished.all())
        if self.event is not None and self.event.query():
            self.event = None
            if bool(self.flag):
                return True
        if self.event is None and k % self.every == self.every - 1:
            with torch.cuda.device(finished.device):
                self.flag.copy_(finished.all(), non_blocking=True)
                self.event = torch.cuda.Event()
                self.event.record()
        return False


def _record(tokens: torch.Tensor, finished: torch.Tensor, k: int, nxt: torch.Tensor, eos: torch.Tensor | None):
    """Column k of ``tokens`` <- ``nxt``, -1 where the row has produced EOS (now or before; ``eos``
    None: no stop); updates ``finished`` in place."""
    col = tokens[:, k]
    col.copy_(nxt)
    if eos is not None:
        finished |= torch.isin(nxt, eos)
        col.masked_fill_(finished, -1)


def greedy_generate(loaded, rows: Sequence[Sequence[int]], max_new_tokens: int, steering: Steering | None = None,
                    stop_at_eos: bool = True, *, return_device: bool = False):
    """Batched greedy decoding of left-padded prompts with a preallocated KV cache, with ``steering``
    (None: the plain model).  Tokens [N, max_new_tokens] and the finished mask [N] live on the device
    for the whole loop; it stops once every row has produced EOS (``stop_at_eos=False``: always
    ``max_new_tokens`` steps) and a row that finished before the others keeps decoding, its later
    tokens masked; one transfer at the end.  With steering the hook runs in the prefill (it records
    ``steering.last_cos``) and, where some row has a nonzero alpha, at each step on the new token only.
    Returns each row's tokens before its first EOS (``stop_at_eos=False``: every token), or with
    ``return_device=True`` the device tensors (tokens with -1 after EOS, finished mask)."""
    model = loaded.model
    device = next(model.parameters()).device
    eos = torch.as_tensor(eos_ids(loaded) or [-2], dtype=torch.long, device=device) if stop_at_eos else None
    params = inspect.signature(model.forward).parameters
    call = {"use_cache": True, **({"logits_to_keep": 1} if "logits_to_keep" in params else {})}
    cache_arg = "cache" if "cache" in params else "past_key_values"
    N = len(rows)
    tokens = torch.full((N, max_new_tokens), -1, dtype=torch.long, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    batch = make_batch(loaded, rows, range(N))
    step_inj = steering.step(batch) if steering is not None and steering.steers else None
    steps = _Steps(loaded, batch, max_new_tokens, {} if step_inj is None else {INJECT: {steering.point: step_inj}})
    stop = _StopCheck(device) if stop_at_eos else None
    with torch.inference_mode():
        nxt, cache = _prefill(loaded, batch, steering, {**call, **({cache_arg: steps.cache} if steps.cache else {})})
        with Trace(loaded, {} if step_inj is None else {steering.point: steering.hook}, stop=False) as tr:
            for k in range(max_new_tokens):
                _record(tokens, finished, k, nxt, eos)
                if k == max_new_tokens - 1 or (stop is not None and stop.done(finished, k)):
                    break
                res = tr.forward(steps.batch_of(k, nxt), **call, **{cache_arg: cache})
                nxt = res.logits[:, -1].argmax(-1)
                del res
    if return_device:
        return tokens, finished
    host = tokens.cpu().tolist()                     # the one transfer
    return [[t for t in row[:row.index(-1)]] if -1 in row else row for row in host]


def _prefill(loaded, batch: Batch, steering: Steering | None, call: dict):
    """The prompt pass (with the injection of ``steering.prefill`` where steering is given): the
    first generated token [N] and the KV cache."""
    callbacks = {} if steering is None else {steering.point: steering.hook}
    with Trace(loaded, callbacks, stop=False) as tr:
        if steering is not None:
            batch.extra[INJECT] = {steering.point: steering.prefill(batch)}
        res = tr.forward(batch, **call)
    if steering is not None:
        steering.last_cos = batch.extra[INJECT][steering.point].last_cos
    return res.logits[:, -1].argmax(-1), _cache_of(res)
