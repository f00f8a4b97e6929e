"""The one tracing primitive: hooks on named points of a model, removed on exit, and a forward pass
stopped right after the last point a computation needs (docs/METHODS.md §3, §4).

Points are named through the architecture adapter (so every architecture has the same names):

- ``"block.{i}"``: the output hidden state [B, S, D] of decoder block i (after the block);
- ``"heads.{i}"``: the input [B, S, H * head_dim] of block i's attention output projection (the
  per-head outputs before they are mixed);
- ``"final"``: the output [B, S, D] of the final norm (what the unembedding reads).

A callback ``fn(x, batch)`` receives the point's tensor and the current :class:`Batch`.  It may
modify ``x`` in place (steering) or return a tensor that replaces it (block and final outputs
only); returning None keeps it.  A point may have several callbacks (a list): they run in order,
each seeing what the one before left (a capture before an injection sees the state before it).  Callbacks must not synchronise with the host if the caller wants
a sync-free pass (no ``.item()``, ``.cpu()``, Python ``if`` on tensor values).

    with Trace(loaded, {"block.3": [capture3, steer3], "heads.3": fnh}) as tr:
        for batch in tr.batches(ids, batch_size=16, token_budget=8192):
            tr.forward(batch)      # stops after block 3 (StopForward), hooks see `batch`

``stop=False`` keeps the full forward pass (generation with a KV cache: ``tr.forward(batch,
use_cache=True, ...)`` once per step, each step's state in its own ``batch``).
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from cape_hpc.errors import OptionError
from cape_hpc.models.batching import StopForward, forward_kwargs, left_pad, pad_id, plan_batches

__all__ = ["Batch", "Trace", "point_names", "point_order", "make_batch", "on_device", "on_its_device", "sync_debug",
           "execution_devices", "layer_devices"]

_POINT = re.compile(r"^(block|heads)\.(\d+)$|^final$")


@dataclass
class Batch:
    """One left-padded batch on the model's device.

    ``rows``: [B] int64 CPU indices of the batch's sequences in the caller's list;
    ``rows_device``: the same on the model's device; ``input_ids``, ``attention_mask`` (int64,
    1 = token), ``position_ids``: [B, S] on the device; ``lengths``: [B] token counts (CPU list);
    ``extra``: free slots for the caller (per-row alpha, set labels, ...), read by callbacks."""

    rows: torch.Tensor
    rows_device: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.rows.numel())


def make_batch(loaded, ids: Sequence[Sequence[int]], rows: Sequence[int]) -> Batch:
    """Left-pad ``ids[r]`` for r in ``rows`` into a :class:`Batch` on the model's device."""
    device = next(loaded.model.parameters()).device
    seqs = [ids[r] for r in rows]
    input_ids, mask, pos = left_pad(seqs, pad_id(loaded))
    rows_t = torch.as_tensor(list(rows), dtype=torch.long)
    nb = device.type != "cpu"
    return Batch(rows=rows_t, rows_device=rows_t.to(device, non_blocking=nb),
                 input_ids=input_ids.to(device, non_blocking=nb), attention_mask=mask.to(device, non_blocking=nb),
                 position_ids=pos.to(device, non_blocking=nb), lengths=[len(s) for s in seqs])


def on_device(fn: Callable[[torch.Tensor, Batch], Any], device) -> Callable[[torch.Tensor, Batch], None]:
    """A read-only callback that sees the point's tensor on ``device`` (the device of its state):
    under a ``device_map`` a block may run on another GPU, the CPU or from disk offload, and its
    tensor is copied over (asynchronously to a GPU).  What ``fn`` returns is ignored."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())

    def run(x: torch.Tensor, batch: Batch) -> None:
        with on_its_device(dev):
            fn(x if x.device == dev else x.to(dev, non_blocking=dev.type == "cuda"), batch)
    return run


def on_its_device(device) -> contextlib.AbstractContextManager:
    """``torch.cuda.device(device)`` for a CUDA device (kernels launched inside run on it), else
    nothing."""
    dev = torch.device(device)
    return torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()


def _map_device(value) -> torch.device:
    """A ``device_map`` value as a device (an int is a CUDA index)."""
    return torch.device("cuda", value) if isinstance(value, int) else torch.device(str(value))


def _map_entry(device_map: Mapping[str, Any], name: str):
    """The ``device_map`` value that places module ``name``: its own key, else the longest key
    that contains it (``""`` is the whole model), else the first key inside it (a split block), else
    None."""
    if name in device_map:
        return device_map[name]
    outer = [k for k in device_map if k == "" or name.startswith(k + ".")]
    if outer:
        return device_map[max(outer, key=len)]
    return next((v for k, v in device_map.items() if k.startswith(name + ".")), None)


def execution_devices(device_map: Mapping[str, Any], names: Sequence[str]) -> list[torch.device]:
    """The device each module of ``names`` runs on under accelerate's ``dispatch_model`` with
    ``device_map`` ({module: int | "cuda:i" | "cpu" | "disk"}): a GPU entry runs where it is; a
    "cpu" or "disk" entry is offloaded and runs on the main device -- the lowest GPU index of the
    map (accelerate takes the first of its set of non-offloaded devices), or the CPU when the map
    has no GPU (then "cpu" entries run in place and "disk" ones on the CPU)."""
    placed = [v for v in device_map.values() if str(v) not in ("cpu", "disk")]
    if not placed:
        main = torch.device("cpu")
    elif all(isinstance(v, int) for v in placed):
        main = _map_device(min(placed))
    else:
        main = min((_map_device(v) for v in placed), key=lambda d: (d.type, d.index or 0))
    out = []
    for name in names:
        v = _map_entry(device_map, name)
        out.append(main if v is None or str(v) in ("cpu", "disk") else _map_device(v))
    return out


def layer_devices(loaded, default) -> list[torch.device]:
    """The device each block of ``loaded`` runs on: from its ``hf_device_map`` when it was loaded
    with a ``device_map`` (:func:`execution_devices`), else ``default`` for every block."""
    dm = getattr(loaded.model, "hf_device_map", None)
    L = loaded.adapter.n_layers
    if not dm:
        return [torch.device(default)] * L
    layers = loaded.adapter.spec.layers
    devs = execution_devices(dm, [f"{layers}.{i}" for i in range(L)])
    return [torch.device("cuda", torch.cuda.current_device()) if d.type == "cuda" and d.index is None else d
            for d in devs]                                  # "cuda": the current GPU, as torch places it


@contextlib.contextmanager
def sync_debug(mode: str = "error") -> Iterator[None]:
    """Inside: torch's CUDA sync debug mode ``mode`` ("warn" or "error") during every
    :meth:`Trace.forward` (the traced passes only; set-up and the final transfer may synchronise).
    Checks that callbacks never synchronise with the host (tests, scripts/gpu_check.sh)."""
    orig = Trace.forward

    def strict(self, batch, **kw):
        torch.cuda.set_sync_debug_mode(mode)
        try:
            return orig(self, batch, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    Trace.forward = strict
    try:
        yield
    finally:
        Trace.forward = orig


def point_names(loaded) -> list[str]:
    """Every traceable point of the model, in forward order."""
    names = []
    for i in range(loaded.adapter.n_layers):
        names += [f"heads.{i}", f"block.{i}"]
    return names + ["final"]


def point_order(name: str, n_layers: int) -> int:
    """The position of point ``name`` in forward order (heads.i, block.i, ..., final)."""
    if name == "final":
        return 2 * n_layers
    kind, i = name.split(".")
    return 2 * int(i) + (1 if kind == "block" else 0)


Callback = Callable[[torch.Tensor, Batch], "torch.Tensor | None"]


def _chain(fns: Sequence[Callback]) -> Callback:
    """One callback running ``fns`` in order; a returned tensor replaces the point's for the next."""
    if len(fns) == 1:
        return fns[0]

    def run(x: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        out = None
        for fn in fns:
            new = fn(x, batch)
            if new is not None:
                x = out = new
        return out
    return run


class Trace:
    """Context manager: register ``callbacks`` ({point name: fn(x, batch), or a list of them run in
    order}) on entry, remove every hook on exit (also when the body raises).  ``stop=True`` raises
    :class:`StopForward` after the last requested point in forward order and :meth:`forward`
    swallows it, so the rest of the model (the unembedding over all positions included) never runs."""

    def __init__(self, loaded, callbacks: Mapping[str, Callback | Sequence[Callback]], *, stop: bool = True):
        self.loaded = loaded
        ad = loaded.adapter
        L = ad.n_layers
        for name in callbacks:
            m = _POINT.match(name)
            if not m or (m.group(2) is not None and not 0 <= int(m.group(2)) < L):
                raise OptionError(f"trace point {name!r}: not one of block.<i>, heads.<i> (i in 0..{L - 1}) "
                                  f"or final for {loaded.name}")
        self.callbacks = {name: _chain(list(fn)) if isinstance(fn, (list, tuple)) else fn
                          for name, fn in callbacks.items()}
        self.stop = stop
        self.last = max(self.callbacks, key=lambda n: point_order(n, L)) if self.callbacks else None
        self.batch: Batch | None = None
        self.device = next(loaded.model.parameters()).device
        self._handles: list = []

    # -------------------------------------------------------------- hooks
    def _output_hook(self, name, fn):
        ad = self.loaded.adapter
        stop_here = self.stop and name == self.last

        def hook(module, args, output):
            h = ad.hidden_of(output)
            new = fn(h, self.batch)
            if stop_here:
                raise StopForward
            if new is not None and new is not h:
                if isinstance(output, torch.Tensor):
                    return new
                return (new,) + tuple(output[1:])
            return None
        return hook

    def _input_hook(self, name, fn):
        stop_here = self.stop and name == self.last

        def hook(module, args):
            fn(args[0], self.batch)
            if stop_here:
                raise StopForward
            return None
        return hook

    def __enter__(self) -> "Trace":
        ad = self.loaded.adapter
        try:
            for name, fn in self.callbacks.items():
                if name == "final":
                    self._handles.append(ad.final_module().register_forward_hook(self._output_hook(name, fn)))
                else:
                    kind, i = name.split(".")
                    if kind == "block":
                        self._handles.append(ad.layers[int(i)].register_forward_hook(self._output_hook(name, fn)))
                    else:
                        self._handles.append(ad.out_proj(int(i)).register_forward_pre_hook(self._input_hook(name, fn)))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.batch = None

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- running
    def batches(self, ids: Sequence[Sequence[int]], *, batch_size: int, token_budget: int | None = None,
                order: Sequence[int] | None = None) -> Iterator[Batch]:
        """Batches of ``ids`` bucketed by length (``plan_batches``); ``order`` restricts to those rows."""
        rows = list(range(len(ids))) if order is None else list(order)
        for chunk in plan_batches([len(ids[r]) for r in rows], batch_size=batch_size, token_budget=token_budget):
            yield make_batch(self.loaded, ids, [rows[k] for k in chunk])

    def forward(self, batch: Batch, **extra_kwargs: Any):
        """One forward pass of ``batch`` with the hooks seeing it; returns the model output, or None
        when the pass was stopped."""
        self.batch = batch
        kw = forward_kwargs(self.loaded, batch.input_ids, batch.attention_mask, batch.position_ids)
        kw.update(extra_kwargs)
        try:
            with torch.inference_mode():
                return self.loaded.model(**kw)
        except StopForward:
            return None
