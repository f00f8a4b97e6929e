"""Greedy generation with and without the injection (docs/METHODS.md §4.7): batched, left-padded,
with a KV cache, through ``Trace`` (``stop=False``).  The generated tokens and the finished mask
stay on the device; the host reads them once, at the end (no per-token synchronisation)."""
from __future__ import annotations

import contextlib
import inspect
from typing import Iterator, Sequence

import torch

from cape_hpc.models.batching import forward_kwargs, left_pad, pad_id
from cape_hpc.models.tracing import Trace

__all__ = ["Injector", "steering_hook", "greedy_generate", "eos_ids"]


class Injector:
    """Trace callback for the probe block: ``steer_inject_`` on the selected positions, one alpha per
    row (a number, or a [N] tensor: baseline and steered rows in one batch), cos(h, v) recorded at
    the last prompt token; the injected-position count is kept on the device (``n_injected``)."""

    def __init__(self, v: torch.Tensor, alpha, scale: str, positions: str, tau: float | None,
                 backend: str | None):
        self.v, self.alpha, self.scale, self.positions, self.tau, self.backend = v, alpha, scale, positions, tau, backend
        self.mask: torch.Tensor | None = None        # [N, S] attention mask of the prefill call
        self.prefill = True
        self.cos_last_device: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    @property
    def cos_last(self) -> torch.Tensor | None:
        """[N] cos(h, v) at the last prompt token before injection (float64, CPU)."""
        return None if self.cos_last_device is None else self.cos_last_device.to("cpu", torch.float64)

    @property
    def n_injected(self) -> int:
        return 0 if self._count is None else int(self._count)

    def __call__(self, h: torch.Tensor, batch=None):
        import cape_kernels as ck

        N, S, D = h.shape
        dev = h.device
        a = self.alpha
        a = (a.to(dev, torch.float32) if isinstance(a, torch.Tensor)
             else torch.full((N,), float(a), dtype=torch.float32, device=dev))
        if self.prefill:
            sel = self.mask.to(device=dev, dtype=torch.bool)
            if self.positions == "last":
                sel = sel & (torch.arange(S, device=dev) == S - 1)[None, :]
            elif self.positions == "generated":
                sel = torch.zeros_like(sel)
        else:
            on = self.positions in ("all", "generated")
            sel = torch.full((N, S), on, dtype=torch.bool, device=dev)
        alpha = (a[:, None] * sel).reshape(-1)
        y = h if h.is_contiguous() else h.contiguous()
        proj = ck.steer_inject_(y.view(N * S, D), self.v.to(device=dev, dtype=h.dtype), alpha, scale=self.scale,
                                tau=self.tau, backend=self.backend)
        if self.prefill:
            self.cos_last_device = proj.view(N, S)[:, -1].detach().clone()
        hit = alpha != 0
        if self.tau is not None:
            hit = hit & (proj < self.tau)
        cnt = hit.sum()
        self._count = cnt if self._count is None else self._count + cnt
        return None if y is h else y


@contextlib.contextmanager
def steering_hook(loaded, layer: int, injector: Injector) -> Iterator[Injector]:
    """The injector on ``block.<layer>`` for the duration (a ``Trace`` with stop=False; removed on
    exit, also when generation raises)."""
    with Trace(loaded, {f"block.{layer}": injector}, stop=False):
        yield injector


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


def greedy_generate(loaded, rows: Sequence[Sequence[int]], max_new_tokens: int, injector: Injector | None = None,
                    stop_at_eos: bool = True, *, return_device: bool = False):
    """Batched greedy decoding of left-padded prompts with a KV cache.  Tokens [N, max_new_tokens] and
    the finished mask [N] live on the device for the whole loop (``max_new_tokens`` steps; a row
    that produced EOS keeps decoding but its later tokens are masked); one transfer at the end.
    Returns each row's tokens before its first EOS (``stop_at_eos=False``: every token), or with
    ``return_device=True`` the device tensors (tokens with -1 after EOS, finished mask)."""
    model = loaded.model
    device = next(model.parameters()).device
    eos = torch.as_tensor(eos_ids(loaded) or [-2], dtype=torch.long, device=device)
    input_ids, mask, pos = left_pad(rows, pad_id(loaded))
    kw = forward_kwargs(loaded, input_ids, mask, pos)
    kw["use_cache"] = True
    params = inspect.signature(model.forward).parameters
    keep = "logits_to_keep" in params
    cache_arg = "cache" if "cache" in params else "past_key_values"
    if keep:
        kw["logits_to_keep"] = 1
    N = len(rows)
    tokens = torch.full((N, max_new_tokens), -1, dtype=torch.long, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    mask = mask.to(device)
    ones = torch.ones(N, 1, dtype=mask.dtype, device=device)
    last_pos = pos[:, -1:].to(device)
    with torch.inference_mode():
        if injector is not None:
            injector.prefill, injector.mask = True, mask
        res = model(**kw)
        for step in range(max_new_tokens):
            nxt = res.logits[:, -1, :].argmax(-1)
            if stop_at_eos:
                finished = finished | torch.isin(nxt, eos)
                tokens[:, step] = torch.where(finished, -1, nxt)
            else:
                tokens[:, step] = nxt
            if step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, ones], dim=1)
            last_pos = last_pos + 1
            kw = dict(input_ids=nxt[:, None], attention_mask=mask, use_cache=True)
            kw[cache_arg] = _cache_of(res)
            if loaded.adapter.accepts_position_ids:
                kw["position_ids"] = last_pos
            if keep:
                kw["logits_to_keep"] = 1
            if injector is not None:
                injector.prefill, injector.mask = False, None
            res = model(**kw)
    if return_device:
        return tokens, finished
    host = tokens.cpu().tolist()                     # the one transfer
    return [[t for t in row[:row.index(-1)]] if -1 in row else row for row in host]
