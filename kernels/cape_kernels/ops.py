"""The public coupling and steering ops: validation, backend dispatch, torch.library registration.

Each op is a ``torch.library.custom_op`` in the ``cape`` namespace (``torch.ops.cape.*``) with a
fake (meta) implementation, so it can sit inside ``torch.compile``d code and CUDA graphs; the
Python functions below check their arguments and call it.  ``backend`` is ``None``/"auto" (choose
by device, see :mod:`cape_kernels.backends`) or one of "torch", "numba", "triton", "cupy".

Dtypes: float16, bfloat16, float32, float64 inputs.  Accumulation is float32 (float64 for float64
inputs) and results come in that dtype; ``steer_inject_`` writes h back in h's own dtype.

Defined behaviour at the edges (every backend, tested):

* zero vectors: cos(0, x) = 0.  A zero steering vector changes nothing and gives proj 0.
* empty sets (P == 0 or Q == 0): NaN statistics.  A row of ``pooled_tap`` with no unmasked token
  pools to zeros.  N == 0 or T == 0 give empty outputs.
* NaN inputs propagate: any NaN in R[b] or T[b] makes set_mean_cosine[b], mean[b] and
  frac_below[b] NaN.  In steering, a row of h with a NaN has proj NaN; with a gate (tau) such a row
  is not injected (NaN < tau is False); without one it stays NaN.
* the gate injects where cos(h, v) < tau, so tau = -1 never injects.  alpha == 0 (for a row, when
  alpha is a [T] tensor) leaves that row bit-identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from cape_kernels import backends as _bk
from cape_kernels.reference import acc_dtype

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class PairwiseStats:
    """Pairwise cosine statistics of R [B, P, D] against T [B, Q, D]."""
    mean: torch.Tensor                 # [B] mean of cos(r_p, t_q) over all P*Q pairs
    frac_below: torch.Tensor           # [B] fraction of pairs with cos < threshold
    full: Optional[torch.Tensor] = None  # [B, P, Q] when return_full, else None
    threshold: float = -0.5
    backend: str = "torch"


def _impl(name: str, device: torch.device, backend: str):
    return getattr(_bk.module(_bk.resolve(backend or None, device.type)), name)


# ------------------------------------------------------------------ torch.library registration
@torch.library.custom_op("cape::pooled_tap", mutates_args=())
def _pooled_tap_op(hidden: torch.Tensor, mask: Optional[torch.Tensor], mode: str,
                   backend: str) -> torch.Tensor:
    return _impl("pooled_tap", hidden.device, backend)(hidden, mask, mode)


@_pooled_tap_op.register_fake
def _(hidden, mask, mode, backend):
    return hidden.new_empty(hidden.shape[0], hidden.shape[2], dtype=acc_dtype(hidden.dtype))


@torch.library.custom_op("cape::set_mean_cosine", mutates_args=())
def _set_mean_cosine_op(R: torch.Tensor, T: torch.Tensor, backend: str) -> torch.Tensor:
    return _impl("set_mean_cosine", R.device, backend)(R, T)


@_set_mean_cosine_op.register_fake
def _(R, T, backend):
    return R.new_empty(R.shape[0], dtype=acc_dtype(torch.promote_types(R.dtype, T.dtype)))


@torch.library.custom_op("cape::pairwise_cosine_stats", mutates_args=())
def _pairwise_op(R: torch.Tensor, T: torch.Tensor, threshold: float, return_full: bool,
                 backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, frac, full = _impl("pairwise", R.device, backend)(R, T, threshold, return_full)
    if full is None:
        full = mean.new_empty(0)
    return mean, frac, full


@_pairwise_op.register_fake
def _(R, T, threshold, return_full, backend):
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B = R.shape[0]
    full = R.new_empty(B, R.shape[1], T.shape[1], dtype=adt) if return_full else R.new_empty(0, dtype=adt)
    return R.new_empty(B, dtype=adt), R.new_empty(B, dtype=adt), full


@torch.library.custom_op("cape::steer_inject_", mutates_args=("h",))
def _steer_op(h: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, relative: bool,
              tau: Optional[float], backend: str) -> torch.Tensor:
    return _impl("steer_", h.device, backend)(h, v, alpha, relative, tau)


@_steer_op.register_fake
def _(h, v, alpha, relative, tau, backend):
    return h.new_empty(h.shape[0], dtype=acc_dtype(h.dtype))


# ------------------------------------------------------------------ eager fast path
_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", lambda t: False)
_modes = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)


def _direct(*tensors) -> bool:
    """True when a call can skip the torch.library dispatcher (~15-20 us per call on a CPU) and run
    the backend at once: plain eager tensors, no autograd, not under torch.compile/export tracing,
    a dispatch mode (fake tensors, functionalisation) or a functorch transform.  Everywhere else
    the call goes through ``torch.ops.cape.*``, which those need; the numbers are the same."""
    if torch.compiler.is_compiling() or _modes():
        return False
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or t.requires_grad or _wrapped(t)):
            return False
    return True


# ------------------------------------------------------------------ checks
def _check_float(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")


def _check_backend(backend: Optional[str]) -> str:
    if backend in (None, "", "auto"):
        return ""
    if backend not in _bk.BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(_bk.BACKENDS)} or None, got {backend!r}")
    return backend


def _sets(R: torch.Tensor, T: torch.Tensor, op: str):
    _check_float("R", R)
    _check_float("T", T)
    squeeze = R.dim() == 2 and T.dim() == 2
    if squeeze:
        R, T = R.unsqueeze(0), T.unsqueeze(0)
    if R.dim() != 3 or T.dim() != 3:
        raise ValueError(f"{op}: R and T must be [B, P, D] and [B, Q, D] (or both 2-D), got "
                         f"{tuple(R.shape)} and {tuple(T.shape)}")
    if R.shape[0] != T.shape[0] or R.shape[2] != T.shape[2]:
        raise ValueError(f"{op}: R {tuple(R.shape)} and T {tuple(T.shape)} must agree in B and D")
    if R.device != T.device:
        raise ValueError(f"{op}: R is on {R.device} and T on {T.device}")
    return R.contiguous(), T.contiguous(), squeeze


# ------------------------------------------------------------------ public API
def pooled_tap(hidden: torch.Tensor, mask: Optional[torch.Tensor] = None, mode: str = "last", *,
               accumulate: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Pool hidden states [N, S, D] over positions with the attention mask [N, S] -> [N, D].

    ``mode="last"``: the last position whose mask is nonzero (left or right padding both work);
    ``mode="mean"``: the masked mean.  ``mask=None`` means every position is a token.
    ``accumulate``: an optional [D] tensor (float32 or float64) to which the sum over N of the
    pooled rows is added in place, for streaming set means (divide by the row count at the end).
    """
    _check_float("hidden", hidden)
    if hidden.dim() != 3:
        raise ValueError(f"pooled_tap: hidden must be [N, S, D], got {tuple(hidden.shape)}")
    if mode not in ("last", "mean"):
        raise ValueError(f"pooled_tap: mode must be 'last' or 'mean', got {mode!r}")
    if mask is not None:
        if mask.shape != hidden.shape[:2]:
            raise ValueError(f"pooled_tap: mask {tuple(mask.shape)} must be [N, S] = {tuple(hidden.shape[:2])}")
        if mask.device != hidden.device:
            mask = mask.to(device=hidden.device)
        mask = mask.contiguous()
    hidden, be = hidden.contiguous(), _check_backend(backend)
    if _direct(hidden, mask):
        out = _impl("pooled_tap", hidden.device, be)(hidden, mask, mode)
    else:
        out = _pooled_tap_op(hidden, mask, mode, be)
    if accumulate is not None:
        if accumulate.shape != (hidden.shape[2],):
            raise ValueError(f"pooled_tap: accumulate must be [D] = [{hidden.shape[2]}], got {tuple(accumulate.shape)}")
        accumulate.add_(out.sum(dim=0).to(accumulate.dtype))
    return out


def set_mean_cosine(R: torch.Tensor, T: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """cos(mean over P of R[b], mean over Q of T[b]) for each b: R [B, P, D], T [B, Q, D] -> [B]."""
    R, T, squeeze = _sets(R, T, "set_mean_cosine")
    be = _check_backend(backend)
    if _direct(R, T):
        out = _impl("set_mean_cosine", R.device, be)(R, T)
    else:
        out = _set_mean_cosine_op(R, T, be)
    return out[0] if squeeze else out


def pairwise_cosine_stats(R: torch.Tensor, T: torch.Tensor, threshold: float = -0.5,
                          return_full: bool = False, *, backend: Optional[str] = None) -> PairwiseStats:
    """Mean of cos(r_p, t_q) over all pairs and the fraction of pairs with cos < threshold, per b.

    Works in tiles: the [B, P, Q] cosine matrix is built only when ``return_full`` is True.
    """
    R, T, squeeze = _sets(R, T, "pairwise_cosine_stats")
    be = _check_backend(backend)
    if _direct(R, T):
        mean, frac, full = _impl("pairwise", R.device, be)(R, T, float(threshold), bool(return_full))
    else:
        mean, frac, full = _pairwise_op(R, T, float(threshold), bool(return_full), be)
    if squeeze:
        mean, frac, full = mean[0], frac[0], (full[0] if return_full else full)
    return PairwiseStats(mean=mean, frac_below=frac, full=full if return_full else None,
                         threshold=float(threshold), backend=_bk.resolve(be or None, R.device.type))


def steer_inject_(h: torch.Tensor, v: torch.Tensor, alpha, scale: str = "relative",
                  tau: Optional[float] = None, *, backend: Optional[str] = None) -> torch.Tensor:
    """Add a steering direction to the rows of h [T, D] in place; return cos(h_before, v) [T].

    ``v``: one direction [D] or one per row [T, D]; it is normalised to unit length inside.
    ``alpha``: a number or a [T] tensor (one per row).  ``scale="absolute"``: h += alpha * v/|v|;
    ``scale="relative"``: h += alpha * |h| * v/|v| (|h| per row, before the change).
    ``tau``: when given, only rows with cos(h, v) < tau are changed.  One pass over h.
    """
    _check_float("h", h)
    _check_float("v", v)
    if h.dim() != 2:
        raise ValueError(f"steer_inject_: h must be [T, D], got {tuple(h.shape)}")
    if not h.is_contiguous():
        raise ValueError("steer_inject_: h must be contiguous (it is changed in place)")
    Tn, D = h.shape
    if v.shape not in ((D,), (Tn, D)):
        raise ValueError(f"steer_inject_: v must be [D] = [{D}] or [T, D] = [{Tn}, {D}], got {tuple(v.shape)}")
    if scale not in ("absolute", "relative"):
        raise ValueError(f"steer_inject_: scale must be 'absolute' or 'relative', got {scale!r}")
    if isinstance(alpha, torch.Tensor):
        a = alpha.to(h.device)
        if a.dim() == 0:
            a = a.expand(Tn)
    else:  # a number: a fill kernel, no host-to-device copy (CUDA-graph capturable)
        a = torch.full((Tn,), float(alpha), dtype=acc_dtype(h.dtype), device=h.device)
    if a.shape != (Tn,):
        raise ValueError(f"steer_inject_: alpha must be a number or a [T] = [{Tn}] tensor, got {tuple(a.shape)}")
    a = a.to(acc_dtype(h.dtype)).contiguous()
    v, be = v.to(h.device).contiguous(), _check_backend(backend)
    tau = None if tau is None else float(tau)
    if _direct(h, v, a):
        return _impl("steer_", h.device, be)(h, v, a, scale == "relative", tau)
    return _steer_op(h, v, a, scale == "relative", tau, be)


__all__ = ["PairwiseStats", "pooled_tap", "set_mean_cosine", "pairwise_cosine_stats", "steer_inject_"]
