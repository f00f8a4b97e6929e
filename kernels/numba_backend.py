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
_CHUNK = 512  # features per parallel work item in the set sums
# reassociation only: lets LLVM vectorise the float reductions, keeps NaN/inf semantics
_FM = {"reassoc"}


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


@nb.njit(parallel=True, cache=True, fastmath=_FM)
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


@nb.njit(parallel=True, cache=True, fastmath=_FM)
def _set_sums(X, out):
    """out[b, d] = sum_p X[b, p, d]: float32 partial sums of 16 rows (vectorised), flushed into
    float64 accumulators (so long sets keep float64-like accuracy)."""
    B, P, D = X.shape
    nchunk = (D + _CHUNK - 1) // _CHUNK
    for job in prange(B * nchunk):
        b = job // nchunk
        d0 = (job % nchunk) * _CHUNK
        d1 = min(D, d0 + _CHUNK)
        n = d1 - d0
        acc = np.zeros(n, dtype=np.float64)
        tmp = np.zeros(n, dtype=X.dtype)  # float32 partials for float32 input, float64 for float64
        for p in range(P):
            row = X[b, p, d0:d1]
            for d in range(n):
                tmp[d] += row[d]
            if (p & 15) == 15:
                for d in range(n):
                    acc[d] += tmp[d]
                    tmp[d] = 0.0
        for d in range(n):
            out[b, d0 + d] = acc[d] + tmp[d]


@nb.njit(cache=True)
def _cos(dot, n2a, n2b):
    den = math.sqrt(n2a) * math.sqrt(n2b)
    if math.isnan(den) or math.isnan(dot):
        return math.nan
    if den > 0.0:
        c = dot / den
        return min(1.0, max(-1.0, c))
    return 0.0


@nb.njit(parallel=True, cache=True, fastmath=_FM)
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


@nb.njit(cache=True)
def _count_below(C, thr):
    """Per leading index b of C [nb, M, N]: the number of entries below thr, in one pass.
    Sequential on purpose: it runs between BLAS calls, and a second spinning thread pool (numba's
    next to torch's) slowed the matrix products 4x; the count costs ~1/D of the product anyway."""
    nb_, M, N = C.shape
    counts = np.zeros(nb_ * M, dtype=np.int64)
    for r in range(nb_ * M):
        b = r // M
        i = r % M
        k = 0
        for j in range(N):
            if C[b, i, j] < thr:
                k += 1
        counts[r] = k
    out = np.zeros(nb_, dtype=np.int64)
    for r in range(nb_ * M):
        out[r // M] += counts[r]
    return out


@nb.njit(cache=True)
def _clamp_(C):
    flat = C.reshape(-1)
    for i in range(flat.size):
        c = flat[i]
        if c > 1.0:
            flat[i] = 1.0
        elif c < -1.0:
            flat[i] = -1.0


@nb.njit(parallel=True, cache=True, fastmath=_FM)
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


_CHUNK_ELEMS = 1 << 23  # cosines per GEMM chunk (32 MiB of float32): large enough for BLAS efficiency


def pairwise(R, T, threshold, return_full):
    """Rows normalised by numba; each chunk of cosines comes from torch's batched matmul (BLAS,
    all threads) into a reused buffer that numba counts in one parallel pass.  The mean uses the
    identity mean_pq cos = (sum_p r^_p).(sum_q t^_q) / (P Q) (no matrix needed)."""
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
    sr = _sums(torch.from_numpy(Rn.reshape(B, P, D)))
    st = _sums(torch.from_numpy(Tn.reshape(B, Q, D)))
    with np.errstate(invalid="ignore"):
        mean = np.clip(np.einsum("bd,bd->b", sr, st) / (P * Q), -1.0, 1.0)
    Rt = torch.from_numpy(Rn).view(B, P, D)
    Tt = torch.from_numpy(Tn).view(B, Q, D).transpose(1, 2)
    full = torch.empty(B, P, Q, dtype=adt) if return_full else None
    below = np.zeros(B, dtype=np.int64)
    thr = float(threshold)
    # comparing raw cosines equals comparing clamped ones for thr in (-1, 1]; outside, decide here
    thr_c = -np.inf if thr <= -1.0 else thr
    if P * Q <= _CHUNK_ELEMS:  # whole [P, Q] blocks, several b at a time
        nb_ = max(1, _CHUNK_ELEMS // (P * Q))
        buf = None if full is not None else torch.empty(min(nb_, B), P, Q, dtype=adt)
        for b0 in range(0, B, nb_):
            b1 = min(B, b0 + nb_)
            out = full[b0:b1] if full is not None else buf[: b1 - b0]
            torch.bmm(Rt[b0:b1], Tt[b0:b1], out=out)
            below[b0:b1] = _count_below(out.numpy(), thr_c)
    else:  # tiles of rows of one b
        rows = max(1, _CHUNK_ELEMS // Q)
        buf = None if full is not None else torch.empty(rows, Q, dtype=adt)
        for b in range(B):
            for p0 in range(0, P, rows):
                p1 = min(P, p0 + rows)
                out = full[b, p0:p1] if full is not None else buf[: p1 - p0]
                torch.mm(Rt[b, p0:p1], Tt[b], out=out)
                below[b] += _count_below(out.numpy()[None], thr_c)[0]
    if full is not None:
        _clamp_(full.numpy())
    frac = np.where(np.isnan(mean), np.nan, 1.0 if thr > 1.0 else below / (P * Q))
    return torch.from_numpy(mean).to(adt), torch.from_numpy(frac).to(adt), full


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
