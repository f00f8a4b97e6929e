"""The ``numba`` backend: CPU tensors, parallel over rows / batch with ``prange``.

float32 and float64 run natively (zero-copy through ``Tensor.numpy()``); float16 and bfloat16 are
upcast to float32 on entry (a copy; steering copies the result back into h).  Sums over sets and
rows accumulate in float64, which makes these kernels more accurate than the float32 reference.

Bytes each op must move (the roofline): pooled tap reads N*S*D (last: N*D) elements and writes
N*D; set-mean cosine reads B*(P+Q)*D; steering reads and writes T*D (plus v).  Pairwise statistics
is compute-bound (2*B*P*Q*D flops): the tiles' matrix products go to BLAS (numpy -> OpenBLAS) and
numba fuses the threshold count into one parallel pass over each tile, which stays in cache.
The mean pairwise cosine needs no matrix: mean_pq cos(r_p, t_q) = (sum_p r^_p).(sum_q t^_q)/(P Q).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch
from numba import prange

from cape_kernels.reference import acc_dtype

_NATIVE = (torch.float32, torch.float64)
_CHUNK = 256  # features per parallel work item in the set sums


def _np(x: torch.Tensor) -> np.ndarray:
    if x.dtype not in _NATIVE:
        x = x.to(torch.float32)
    return x.detach().contiguous().numpy()


# ------------------------------------------------------------------ kernels
@nb.njit(parallel=True, cache=True)
def _pool_last(h, m, out):
    N, S, D = h.shape
    for n in prange(N):
        last = -1
        for s in range(S - 1, -1, -1):
            if m[n, s]:
                last = s
                break
        if last < 0:
            for d in range(D):
                out[n, d] = 0.0
        else:
            for d in range(D):
                out[n, d] = h[n, last, d]


@nb.njit(parallel=True, cache=True)
def _pool_mean(h, m, out):
    N, S, D = h.shape
    nchunk = (D + _CHUNK - 1) // _CHUNK
    for job in prange(N * nchunk):
        n = job // nchunk
        d0 = (job % nchunk) * _CHUNK
        d1 = min(D, d0 + _CHUNK)
        acc = np.zeros(d1 - d0, dtype=np.float64)
        cnt = 0
        for s in range(S):
            if m[n, s]:
                cnt += 1
                for d in range(d0, d1):
                    acc[d - d0] += h[n, s, d]
        for d in range(d0, d1):
            out[n, d] = acc[d - d0] / cnt if cnt > 0 else 0.0


@nb.njit(parallel=True, cache=True)
def _set_sums(X, out):
    """out[b, d] = sum_p X[b, p, d] (float64)."""
    B, P, D = X.shape
    nchunk = (D + _CHUNK - 1) // _CHUNK
    for job in prange(B * nchunk):
        b = job // nchunk
        d0 = (job % nchunk) * _CHUNK
        d1 = min(D, d0 + _CHUNK)
        for d in range(d0, d1):
            out[b, d] = 0.0
        for p in range(P):
            for d in range(d0, d1):
                out[b, d] += X[b, p, d]


@nb.njit(cache=True)
def _cos(dot, n2a, n2b):
    den = math.sqrt(n2a) * math.sqrt(n2b)
    if math.isnan(den) or math.isnan(dot):
        return math.nan
    if den > 0.0:
        c = dot / den
        return min(1.0, max(-1.0, c))
    return 0.0


@nb.njit(parallel=True, cache=True)
def _unit_rows(X, out):
    """out[r] = X[r] / |X[r]| over the last axis of a 2-D view (zero rows -> 0); returns nothing."""
    R, D = X.shape
    for r in prange(R):
        s = 0.0
        for d in range(D):
            s += np.float64(X[r, d]) * X[r, d]
        n = math.sqrt(s)
        inv = 1.0 / n if n > 0.0 else (math.nan if math.isnan(n) else 0.0)
        for d in range(D):
            out[r, d] = X[r, d] * inv


@nb.njit(parallel=True, cache=True)
def _count_below(C, thr, clamp):
    """Number of entries of C [M, N] below thr (C optionally clamped to [-1, 1] in place)."""
    M, N = C.shape
    counts = np.zeros(M, dtype=np.int64)
    for i in prange(M):
        k = 0
        for j in range(N):
            c = C[i, j]
            if clamp:
                if c > 1.0:
                    c = 1.0
                    C[i, j] = c
                elif c < -1.0:
                    c = -1.0
                    C[i, j] = c
            if c < thr:
                k += 1
        counts[i] = k
    return counts.sum()


@nb.njit(parallel=True, cache=True)
def _steer(h, v, per_row, alpha, relative, gate, tau, proj):
    T, D = h.shape
    vv0 = 0.0
    if not per_row:
        for d in range(D):
            vv0 += np.float64(v[0, d]) * v[0, d]
    for t in prange(T):
        vr = np.int64(t) * np.int64(per_row)
        dot = 0.0
        hh = 0.0
        vv = vv0
        if per_row:
            vv = 0.0
            for d in range(D):
                vv += np.float64(v[vr, d]) * v[vr, d]
        for d in range(D):
            x = np.float64(h[t, d])
            dot += x * v[vr, d]
            hh += x * x
        c = _cos(dot, hh, vv)
        proj[t] = c
        a = alpha[t]
        if a == 0.0 or vv <= 0.0:
            continue
        if gate and not (c < tau):
            continue
        coef = a / math.sqrt(vv)
        if relative:
            coef *= math.sqrt(hh)
        for d in range(D):
            h[t, d] = h[t, d] + coef * v[vr, d]


# ------------------------------------------------------------------ torch-facing wrappers
def pooled_tap(hidden, mask, mode):
    N, S, D = hidden.shape
    adt = acc_dtype(hidden.dtype)
    h = _np(hidden)
    m = (np.ones((N, S), dtype=np.bool_) if mask is None
         else (mask != 0).contiguous().numpy())
    out = np.empty((N, D), dtype=np.float64 if adt == torch.float64 else np.float32)
    if N and D:
        (_pool_last if mode == "last" else _pool_mean)(h, m, out)
    return torch.from_numpy(out)


def _sums(X):
    B, _, D = X.shape
    out = np.empty((B, D), dtype=np.float64)
    _set_sums(_np(X), out)
    return out


def set_mean_cosine(R, T):
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, _ = R.shape
    if P == 0 or T.shape[1] == 0:
        return torch.full((B,), float("nan"), dtype=adt)
    sr, st = _sums(R), _sums(T)
    res = np.array([_cos(float(sr[b] @ st[b]), float(sr[b] @ sr[b]), float(st[b] @ st[b]))
                    for b in range(B)], dtype=np.float64)
    return torch.from_numpy(res).to(adt)


def _tile_rows(Q: int) -> int:
    # about 1 MiB of float32 cosines per tile: stays in L2 between GEMM and count
    return int(max(16, min(1024, (1 << 18) // max(Q, 1))))


def pairwise(R, T, threshold, return_full):
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    npdt = np.float64 if adt == torch.float64 else np.float32
    B, P, D = R.shape
    Q = T.shape[1]
    if P == 0 or Q == 0:
        nan = torch.full((B,), float("nan"), dtype=adt)
        return nan, nan.clone(), (torch.empty(B, P, Q, dtype=adt) if return_full else None)
    Rn = np.empty((B * P, D), dtype=npdt)
    Tn = np.empty((B * Q, D), dtype=npdt)
    _unit_rows(_np(R).astype(npdt, copy=False).reshape(B * P, D), Rn)
    _unit_rows(_np(T).astype(npdt, copy=False).reshape(B * Q, D), Tn)
    Rn = Rn.reshape(B, P, D)
    Tn = Tn.reshape(B, Q, D)
    full = np.empty((B, P, Q), dtype=npdt) if return_full else None
    tile = _tile_rows(Q)
    buf = np.empty((tile, Q), dtype=npdt)
    mean = np.empty(B, dtype=np.float64)
    frac = np.empty(B, dtype=np.float64)
    for b in range(B):
        sr = Rn[b].sum(axis=0, dtype=np.float64)
        st = Tn[b].sum(axis=0, dtype=np.float64)
        mean[b] = min(1.0, max(-1.0, float(sr @ st) / (P * Q))) if np.isfinite(sr @ st) else np.nan
        below = 0
        TnT = Tn[b].T
        for p0 in range(0, P, tile):
            p1 = min(P, p0 + tile)
            out = full[b, p0:p1] if full is not None else buf[: p1 - p0]
            np.matmul(Rn[b, p0:p1], TnT, out=out)
            below += _count_below(out, threshold, True)
        frac[b] = below / (P * Q)
    frac = np.where(np.isnan(mean), np.nan, frac)
    return (torch.from_numpy(mean).to(adt), torch.from_numpy(frac).to(adt),
            torch.from_numpy(full) if full is not None else None)


def steer_(h, v, alpha, relative, tau):
    Tn, D = h.shape
    adt = acc_dtype(h.dtype)
    native = h.dtype in _NATIVE
    hw = h.detach().numpy() if native else h.detach().to(torch.float32).numpy()
    vw = _np(v.to(h.dtype) if native else v).reshape(-1, D)
    if vw.dtype != hw.dtype:
        vw = vw.astype(hw.dtype)
    proj = np.empty(Tn, dtype=np.float64)
    a = alpha.detach().to(torch.float64).contiguous().numpy()
    if Tn and D:
        _steer(hw, vw, int(v.dim() == 2), a, bool(relative), tau is not None,
               0.0 if tau is None else float(tau), proj)
    elif Tn:
        proj[:] = 0.0
    if not native:
        h.copy_(torch.from_numpy(hw))
    return torch.from_numpy(proj).to(adt)
