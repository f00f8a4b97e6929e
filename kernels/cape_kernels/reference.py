"""The torch backend's implementations (``backend="torch"``, through ``torch_backend``): plain torch,
any device, any floating dtype.  Not the oracle: every backend, this one included, is tested
against the float64 numpy oracles of ``cape_kernels.testing``.  Written for clarity first; the
only concession to size is that ``pairwise`` works in tiles of rows so that P = Q = 8192 and beyond
never build the [B, P, Q] matrix unless it is asked for.

Defined behaviour (shared by all backends, see ``cape_kernels.ops`` for the full list):

* accumulation dtype is float32 for float16/bfloat16/float32 inputs and float64 for float64;
  outputs are in the accumulation dtype (``acc_dtype``).
* cos(a, b) = a.b / (|a| |b|), and 0 where |a| |b| == 0 (a zero vector is orthogonal to all).
  The result is clamped to [-1, 1].
* an empty set (P == 0 or Q == 0) gives NaN statistics; a fully masked row pools to zeros.
* NaN inputs propagate: a NaN anywhere in R[b] or T[b] makes every statistic of b NaN.
"""
from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation (and output) dtype for an input dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_cos(dot: torch.Tensor, n2a: torch.Tensor, n2b: torch.Tensor) -> torch.Tensor:
    """dot / sqrt(n2a * n2b), 0 where the denominator is 0, clamped to [-1, 1]; NaN propagates."""
    den = torch.sqrt(n2a) * torch.sqrt(n2b)
    c = dot / torch.where(den > 0, den, torch.ones_like(den))
    c = torch.where(den > 0, c, torch.zeros_like(c))
    # NaN in the denominator: `den > 0` is False, so put it back explicitly
    c = torch.where(torch.isnan(den) | torch.isnan(dot), torch.full_like(c, float("nan")), c)
    return c.clamp(-1.0, 1.0)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (in acc dtype); zero rows stay zero; NaN rows stay NaN."""
    x = x.to(acc_dtype(x.dtype))
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    inv = torch.where(n > 0, 1.0 / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(n))
    inv = torch.where(torch.isnan(n), n, inv)
    return x * inv


def pooled_tap(hidden: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """hidden [N, S, D], mask [N, S] (nonzero = token) -> [N, D] in acc dtype.

    ``last``: the hidden state at the largest position whose mask is nonzero (works for left and
    right padding).  ``mean``: masked mean over positions.  A row with no token gives zeros.
    """
    N, S, D = hidden.shape
    adt = acc_dtype(hidden.dtype)
    if mask is None:
        mask = torch.ones(N, S, dtype=torch.bool, device=hidden.device)
    m = mask != 0
    if mode == "last":
        pos = torch.arange(S, device=hidden.device).expand(N, S)
        last = torch.where(m, pos, torch.full_like(pos, -1)).amax(dim=1) if S else \
            torch.full((N,), -1, dtype=torch.long, device=hidden.device)
        has = last >= 0
        idx = last.clamp_min(0)
        if S == 0:
            return torch.zeros(N, D, dtype=adt, device=hidden.device)
        out = hidden[torch.arange(N, device=hidden.device), idx].to(adt)
        return torch.where(has[:, None], out, torch.zeros_like(out))
    if mode == "mean":
        w = m.to(adt)
        s = torch.einsum("nsd,ns->nd", hidden.to(adt), w)
        cnt = w.sum(dim=1, keepdim=True)
        return torch.where(cnt > 0, s / cnt.clamp_min(1), torch.zeros_like(s))
    raise ValueError(f"pooled_tap: mode must be 'last' or 'mean', got {mode!r}")


def set_mean_cosine(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """R [B, P, D], T [B, Q, D] -> cos(mean_p R, mean_q T) [B]; NaN for an empty set."""
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, _ = R.shape
    Q = T.shape[1]
    if P == 0 or Q == 0:
        return torch.full((B,), float("nan"), dtype=adt, device=R.device)
    mr = R.to(adt).sum(dim=1)
    mt = T.to(adt).sum(dim=1)
    return safe_cos((mr * mt).sum(-1), (mr * mr).sum(-1), (mt * mt).sum(-1))


def pairwise(R: torch.Tensor, T: torch.Tensor, threshold: float, return_full: bool,
             tile: int = 1024):
    """Mean pairwise cosine [B], fraction of pairs with cos < threshold [B], full [B, P, Q] or None.

    Tiles over P so that at most [B, tile, Q] cosines exist at once when ``return_full`` is False.
    """
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, _ = R.shape
    Q = T.shape[1]
    dev = R.device
    if P == 0 or Q == 0:
        nan = torch.full((B,), float("nan"), dtype=adt, device=dev)
        full = torch.empty(B, P, Q, dtype=adt, device=dev) if return_full else None
        return nan, nan.clone(), full
    Rn = unit_rows(R).to(adt)
    Tn = unit_rows(T).to(adt)
    total = torch.zeros(B, dtype=adt, device=dev)
    below = torch.zeros(B, dtype=torch.float64, device=dev)
    full = torch.empty(B, P, Q, dtype=adt, device=dev) if return_full else None
    for p0 in range(0, P, tile):
        c = torch.bmm(Rn[:, p0:p0 + tile], Tn.transpose(1, 2)).clamp(-1.0, 1.0)
        total += c.sum(dim=(1, 2))
        below += (c < threshold).sum(dim=(1, 2)).to(torch.float64)
        if full is not None:
            full[:, p0:p0 + tile] = c
    mean = total / (P * Q)
    frac = (below / (P * Q)).to(adt)
    frac = torch.where(torch.isnan(mean), mean, frac)
    return mean, frac, full


def steer(h: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, relative: bool,
          tau: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Out-of-place reference of steering: returns (new h in h's dtype, proj [T] in acc dtype).

    u = v / |v| (per row when v is [T, D]; a zero v gives u = 0, so nothing changes);
    proj = cos(h, v) computed before the change; delta = alpha * u (absolute) or
    alpha * |h| * u (relative); rows with tau given and proj >= tau (or NaN) are left as they are;
    rows with alpha == 0 are left bit-identical.
    """
    adt = acc_dtype(h.dtype)
    hf = h.to(adt)
    vf = v.to(adt)
    if vf.dim() == 1:
        vf = vf.expand_as(hf)
    dot = (hf * vf).sum(-1)
    hh = (hf * hf).sum(-1)
    vv = (vf * vf).sum(-1)
    proj = safe_cos(dot, hh, vv)
    vn = torch.sqrt(vv)
    inv = torch.where(vn > 0, 1.0 / torch.where(vn > 0, vn, torch.ones_like(vn)), torch.zeros_like(vn))
    a = alpha.to(adt).expand(hf.shape[0])
    coef = a * inv
    if relative:
        coef = coef * torch.sqrt(hh)
    apply = (a != 0) & (vv > 0)  # a zero direction changes nothing
    if tau is not None:
        apply = apply & (proj < tau)
    new = (hf + coef[:, None] * vf).to(h.dtype)
    return torch.where(apply[:, None], new, h), proj
