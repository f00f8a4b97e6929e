"""The two ``Trace`` callbacks of steering (docs/METHODS.md §4.1, §4.2), written once for
generation (``steering.generate``), scoring and the fluency cost (``steering.scoring``) and the
calibration states (``steering.steer``):

- :class:`InjectionHook`: h <- h + alpha * s * v at the selected positions of each row, through
  the fused ``cape_kernels.steer_inject_``, with the per-row alpha, selection and direction read
  from the batch (``batch.extra["inject"][key]``, a :class:`RowInjection`); the injected-position
  count stays on the device;
- :func:`pooled_capture`: the pooled point tensor of each row, into a caller's [R, D] buffer.

Neither synchronises with the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cape_hpc.models.tracing import Batch

__all__ = ["RowInjection", "InjectionHook", "pooled_capture", "INJECT"]

#: the ``Batch.extra`` slot of the injections: {hook key: RowInjection}
INJECT = "inject"


@dataclass
class RowInjection:
    """What one batch injects at one point.  ``alpha``: [B] float32 (0: the row is not steered);
    ``selection``: [B, S] bool, the positions steered (broadcastable, e.g. [B, 1] for a decoding
    step); ``direction``: [B] int64, the row's index into the hook's directions (None: direction 0);
    ``record_last_cos``: keep cos(h, v) at the last position before the injection in
    ``last_cos`` [B] (set by the hook, on the device)."""

    alpha: torch.Tensor
    selection: torch.Tensor
    direction: torch.Tensor | None = None
    record_last_cos: bool = False
    last_cos: torch.Tensor | None = None


class InjectionHook:
    """Trace callback of one point: ``cape_kernels.steer_inject_`` with the [B * S] alpha vector
    alpha x selection of ``batch.extra["inject"][key]`` (no entry: the batch is not steered here).
    ``directions``: [n_dirs, D] or [D]; ``scale``: relative (s = |h|) or absolute (s = 1); ``tau``:
    the gate (inject only where cos(h, v) < tau; None: no gate).  ``n_injected``: (row, position)
    pairs steered so far (one transfer when read)."""

    def __init__(self, directions: torch.Tensor, key: str, *, scale: str = "relative", tau: float | None = None,
                 backend: str | None = None):
        self.directions = directions if directions.dim() == 2 else directions[None, :]
        self.key, self.scale, self.tau, self.backend = key, scale, tau, backend
        self.count: torch.Tensor | None = None

    @property
    def n_injected(self) -> int:
        return 0 if self.count is None else int(self.count)

    def _vectors(self, x: torch.Tensor, rows: RowInjection) -> torch.Tensor:
        """[D] (one direction for every row) or [B * S, D] (each row its own) in x's device and dtype."""
        B, S, D = x.shape
        dirs = self.directions
        if dirs.shape[0] == 1 or rows.direction is None:
            return dirs[0].to(x.device, x.dtype)
        chosen = dirs.index_select(0, rows.direction.to(dirs.device)).to(x.device, x.dtype)
        return chosen[:, None, :].expand(B, S, D).reshape(B * S, D)

    def __call__(self, x: torch.Tensor, batch: Batch | None) -> torch.Tensor | None:
        import cape_kernels as ck

        rows = None if batch is None else batch.extra.get(INJECT, {}).get(self.key)
        if rows is None:                               # host-side: nothing to inject in this batch
            return None
        B, S, D = x.shape
        sel = rows.selection.to(x.device).expand(B, S)
        alpha = (rows.alpha.to(x.device, torch.float32)[:, None] * sel).reshape(-1)
        y = x if x.is_contiguous() else x.contiguous()
        proj = ck.steer_inject_(y.view(B * S, D), self._vectors(x, rows), alpha, scale=self.scale, tau=self.tau,
                                backend=self.backend)
        if rows.record_last_cos:
            rows.last_cos = proj.view(B, S)[:, -1].detach().clone()
        hit = alpha != 0
        if self.tau is not None:
            hit = hit & (proj < self.tau)
        n = hit.sum()
        self.count = n if self.count is None else self.count + n.to(self.count.device)
        return None if y is x else y


def pooled_capture(out: torch.Tensor, pooling: str, backend: str | None = None) -> Callable:
    """Trace callback writing the pooled point tensor of each row (``cape_kernels.pooled_tap``:
    the last non-pad token or the mean) into ``out[batch.rows]`` (``out``: [R, D] float32)."""
    import cape_kernels as ck

    def capture(x: torch.Tensor, batch: Batch) -> None:
        pooled = ck.pooled_tap(x, batch.attention_mask.to(x.device), pooling, backend=backend)
        out.index_copy_(0, batch.rows_device.to(out.device), pooled.to(out.device, torch.float32))
    return capture
