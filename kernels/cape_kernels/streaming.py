"""Streaming coupling kernels: device-resident accumulators updated inside forward hooks.

Two ops, each a ``torch.library.custom_op`` in the ``cape`` namespace with a fake (meta)
implementation, so they can sit inside ``torch.compile``d code; the Python functions below check
their arguments and call them (plain eager tensors skip the dispatcher and call the backend at once,
as ``cape_kernels.ops``' ``_direct``: the same numbers, ~15-20 us less per call on a CPU).  Backends
as everywhere in ``cape_kernels``: ``torch`` (reference, any device), ``numba`` (CPU), ``triton`` and
``cupy`` (CUDA); ``backend=None`` chooses by device.
Neither op synchronises with the host (no ``.item()``, no ``.cpu()``, no branch on tensor values).

pool_accumulate_(hidden, mask, mode, slot, sums, unit_sums) -> pooled
-----------------------------------------------------------------------
``hidden [B, S, D]`` (float16, bfloat16, float32, float64), ``mask [B, S]`` (nonzero = token) or
None, ``mode`` "last" or "mean", ``slot [B]`` integer, ``sums [G, D]`` and ``unit_sums [G, D]`` (or
None) float32 or float64, both on hidden's device, mutated in place.  For each row b::

    p_b = hidden[b, last_b]                       (mode "last": last_b = the largest s with
                                                   mask[b, s] != 0, S - 1 without a mask)
    p_b = sum_s mask[b, s] hidden[b, s] / #tokens (mode "mean")
    p_b = 0                                       (a row without any token)
    sums[slot_b]      += p_b
    unit_sums[slot_b] += p_b / |p_b|              (0 for a zero p_b)

exactly the pooling of ``cape_kernels.pooled_tap``.  Returns ``pooled [B, D]`` in the accumulation
dtype of ``hidden`` (float64 for float64, else float32).  The adds happen in the dtype of ``sums``
(the norm too).  Rows with ``slot < 0`` or ``slot >= G`` are pooled and returned but not
accumulated (checking the range would need a host synchronisation).  One pass over ``hidden``;
mode "last" reads only the last token of each row.  On CUDA the adds are atomic (rows sharing a
slot add in an unspecified order: float sums may differ in the last bits between runs); on the CPU
(torch and numba) they are deterministic and independent of the thread count.

count_pairs_below(A, B, threshold, a_groups, b_groups, n_groups) -> counts
---------------------------------------------------------------------------
``A [n, D]``, ``B [m, D]`` (float16, bfloat16, float32; float64 on the CPU backends), groups
``[n]`` / ``[m]`` integers or None (all in group 0).  Returns ``counts [G, G]`` int64 on A's
device, with ``G = n_groups``::

    counts[g, h] = #{(i, j) : group(a_i) = g, group(b_j) = h, cos(a_i, b_j) < threshold}
    cos(a, b)    = clamp((a . b) / (|a| |b|), -1, 1),  0 when a or b is the zero vector

Dot products and norms accumulate in float32 (float64 for float64 inputs on the CPU backends);
``threshold`` is rounded to that dtype before comparing.  Tiled: at most a 256 x 256 tile of
cosines exists at once, never [n, m]; on CUDA one kernel launch after the zero fill of
``counts``.  Rows whose group is < 0 or >= G are not counted.  Counts are integers, so every
backend is deterministic.

Edges (every backend, tested): B == 0 returns an empty [0, D] and leaves the sums unchanged;
n == 0 or m == 0 gives zeros.  NaN: a NaN in a pooled row makes that row's ``sums`` and
``unit_sums`` slot NaN (as a plain sum would); a NaN anywhere in a row of A or B makes its cosines
NaN, and NaN < threshold is False, so its pairs are never counted as below.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

from cape_kernels import backends as _bk
from cape_kernels.ops import _direct  # the eager fast path past the dispatcher, as the core ops
from cape_kernels.reference import acc_dtype

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SUMS = (torch.float32, torch.float64)
_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_MODULES = {
    "torch": "cape_kernels.reference_streaming",
    "numba": "cape_kernels.numba_streaming",
    "triton": "cape_kernels.triton_streaming",
    "cupy": "cape_kernels.cupy_streaming",
}


def resolve_backend(backend: Optional[str], device) -> str:
    """The backend these ops run for tensors on ``device`` (raises BackendUnavailable for an
    explicit backend that cannot run there).  Callers record it (e.g. ``result.backend``)."""
    dev = torch.device(device)
    return _bk.resolve(_check_backend(backend) or None, dev.type)


def _impl(name: str, device: torch.device, backend: str):
    return getattr(importlib.import_module(_MODULES[_bk.resolve(backend or None, device.type)]), name)


# ------------------------------------------------------------------ torch.library registration
@torch.library.custom_op("cape::pool_accumulate_", mutates_args=("sums", "unit_sums"))
def _pool_acc_op(hidden: torch.Tensor, mask: Optional[torch.Tensor], pooling: str, slot: torch.Tensor,
                 sums: torch.Tensor, unit_sums: Optional[torch.Tensor], backend: str) -> torch.Tensor:
    # the argument is not called "mode": auto_functionalized (torch.compile) has its own "mode"
    return _impl("pool_accumulate_", hidden.device, backend)(hidden, mask, pooling, slot, sums, unit_sums)


@_pool_acc_op.register_fake
def _(hidden, mask, pooling, slot, sums, unit_sums, backend):
    return hidden.new_empty(hidden.shape[0], hidden.shape[2], dtype=acc_dtype(hidden.dtype))


@torch.library.custom_op("cape::count_pairs_below", mutates_args=())
def _count_op(A: torch.Tensor, B: torch.Tensor, threshold: float, a_groups: Optional[torch.Tensor],
              b_groups: Optional[torch.Tensor], n_groups: int, backend: str) -> torch.Tensor:
    return _impl("count_pairs_below", A.device, backend)(A, B, threshold, a_groups, b_groups, n_groups)


@_count_op.register_fake
def _(A, B, threshold, a_groups, b_groups, n_groups, backend):
    return A.new_empty(n_groups, n_groups, dtype=torch.int64)


# ------------------------------------------------------------------ checks
def _check_backend(backend: Optional[str]) -> str:
    if backend in (None, "", "auto"):
        return ""
    if backend not in _bk.BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(_bk.BACKENDS)} or None, got {backend!r}")
    return backend


def _tensor(op: str, name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _same_device(op: str, name: str, x: torch.Tensor, dev: torch.device) -> None:
    if x.device != dev:
        raise ValueError(f"{op}: {name} is on {x.device} but the data is on {dev} "
                         "(move it first: a copy here would synchronise)")


def _groups(op: str, name: str, g, rows: int, dev: torch.device) -> Optional[torch.Tensor]:
    if g is None:
        return None
    _tensor(op, name, g)
    if g.dtype not in _INTS:
        raise ValueError(f"{op}: {name} must be an integer tensor, got {g.dtype}")
    if tuple(g.shape) != (rows,):
        raise ValueError(f"{op}: {name} must be [{rows}], got {tuple(g.shape)}")
    _same_device(op, name, g, dev)
    return g.to(torch.int64).contiguous()


# ------------------------------------------------------------------ public API
def pool_accumulate_(hidden: torch.Tensor, mask: Optional[torch.Tensor], mode: str, slot: torch.Tensor,
                     sums: torch.Tensor, unit_sums: Optional[torch.Tensor] = None, *,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Pool each row of ``hidden [B, S, D]`` like ``pooled_tap`` and add it (and its unit vector)
    into row ``slot[b]`` of ``sums [G, D]`` (and ``unit_sums``) in place; return pooled [B, D].
    See the module docstring for the exact definition and the edge cases."""
    op = "pool_accumulate_"
    _tensor(op, "hidden", hidden)
    if hidden.dtype not in _FLOATS:
        raise ValueError(f"{op}: hidden must be float16, bfloat16, float32 or float64, got {hidden.dtype}")
    if hidden.dim() != 3:
        raise ValueError(f"{op}: hidden must be [B, S, D], got {tuple(hidden.shape)}")
    if mode not in ("last", "mean"):
        raise ValueError(f"{op}: mode must be 'last' or 'mean', got {mode!r}")
    Bn, S, D = hidden.shape
    dev = hidden.device
    if mask is not None:
        _tensor(op, "mask", mask)
        if tuple(mask.shape) != (Bn, S):
            raise ValueError(f"{op}: mask must be [B, S] = [{Bn}, {S}], got {tuple(mask.shape)}")
        _same_device(op, "mask", mask, dev)
        mask = mask.contiguous()
    _tensor(op, "slot", slot)
    if slot.dtype not in _INTS:
        raise ValueError(f"{op}: slot must be an integer tensor, got {slot.dtype}")
    if tuple(slot.shape) != (Bn,):
        raise ValueError(f"{op}: slot must be [B] = [{Bn}], got {tuple(slot.shape)}")
    _same_device(op, "slot", slot, dev)
    for name, s in (("sums", sums), ("unit_sums", unit_sums)):
        if s is None and name == "unit_sums":
            continue
        _tensor(op, name, s)
        if s.dtype not in _SUMS:
            raise ValueError(f"{op}: {name} must be float32 or float64, got {s.dtype}")
        if s.dim() != 2 or s.shape[1] != D:
            raise ValueError(f"{op}: {name} must be [G, D] with D = {D}, got {tuple(s.shape)}")
        if not s.is_contiguous():
            raise ValueError(f"{op}: {name} must be contiguous (it is changed in place)")
        _same_device(op, name, s, dev)
    if unit_sums is not None:
        if unit_sums.shape != sums.shape or unit_sums.dtype != sums.dtype:
            raise ValueError(f"{op}: unit_sums {tuple(unit_sums.shape)} {unit_sums.dtype} must match "
                             f"sums {tuple(sums.shape)} {sums.dtype}")
        if unit_sums is sums:
            raise ValueError(f"{op}: unit_sums and sums must be different tensors")
    args = (hidden.contiguous(), mask, mode, slot.to(torch.int64).contiguous(), sums, unit_sums)
    if _direct(hidden, mask, slot, sums, unit_sums):
        return _impl("pool_accumulate_", dev, _check_backend(backend))(*args)
    return _pool_acc_op(*args, _check_backend(backend))


def count_pairs_below(A: torch.Tensor, B: torch.Tensor, threshold: float, *,
                      a_groups: Optional[torch.Tensor] = None, b_groups: Optional[torch.Tensor] = None,
                      n_groups: int = 1, backend: Optional[str] = None) -> torch.Tensor:
    """counts [n_groups, n_groups] int64: pairs (a_i, b_j) with cos < threshold, by the groups of
    i and j.  Tiled; see the module docstring for the exact definition and the edge cases."""
    op = "count_pairs_below"
    for name, x in (("A", A), ("B", B)):
        _tensor(op, name, x)
        if x.dtype not in _FLOATS:
            raise ValueError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
        if x.dim() != 2:
            raise ValueError(f"{op}: {name} must be 2-D [rows, D], got {tuple(x.shape)}")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"{op}: A {tuple(A.shape)} and B {tuple(B.shape)} must have the same D")
    dev = A.device
    _same_device(op, "B", B, dev)
    if isinstance(threshold, torch.Tensor) or not isinstance(threshold, (int, float)) or threshold != threshold:
        raise ValueError(f"{op}: threshold must be a Python number (not NaN), got {threshold!r}")
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise ValueError(f"{op}: n_groups must be an int >= 1, got {n_groups!r}")
    ag = _groups(op, "a_groups", a_groups, A.shape[0], dev)
    bg = _groups(op, "b_groups", b_groups, B.shape[0], dev)
    args = (A.contiguous(), B.contiguous(), float(threshold), ag, bg, int(n_groups))
    if _direct(A, B, ag, bg):
        return _impl("count_pairs_below", dev, _check_backend(backend))(*args)
    return _count_op(*args, _check_backend(backend))


__all__ = ["pool_accumulate_", "count_pairs_below", "resolve_backend"]
