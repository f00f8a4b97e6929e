"""The ``numba`` backend of the streaming ops (CPU tensors); definitions in ``cape_kernels.streaming``.

float32 and float64 run zero-copy through ``Tensor.numpy()``; float16/bfloat16 are upcast to
float32 on entry (mode "last" first gathers the last tokens, so it copies only B*D elements).

* pool_accumulate_: rows are pooled and their norms taken in parallel over rows (sums over tokens
  and norms in float64); the adds run in parallel over chunks of D columns and serially over the
  rows, in row order, so the sums do not depend on the number of threads.
* count_pairs_below: the [n/TA, m/TB] grid of tiles is cut into one contiguous range per thread;
  each range counts into its own integer partials, added at the end (integers: deterministic).
  Dot products accumulate in the input dtype (float32; float64 for float64), 2 rows of A x 4 rows
  of B at a time, the loop over D vectorised; cosine = dot * (1/|a|) * (1/|b|).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cape_kernels.numba_jit import njit, numba, prange, serial_copy
from cape_kernels.reference import acc_dtype

_CHUNK = 256  # columns per parallel work item of the adds
TA, TB = 32, 128  # tile of rows of A x rows of B
_FM = {"reassoc", "contract"}  # reassociation lets LLVM vectorise the dot products; NaN kept


# ------------------------------------------------------------------ pool + accumulate
@njit(parallel=True)
def _pool_acc(h, m, last_mode, slot, sums, units, has_units, pooled, inv):
    B, S, D = h.shape
    G = sums.shape[0]
    for b in prange(B):
        if last_mode:
            last = -1
            for s in range(S - 1, -1, -1):
                if m[b, s]:
                    last = s
                    break
            for d in range(D):
                pooled[b, d] = h[b, last, d] if last >= 0 else 0.0
        else:
            cnt = 0
            for s in range(S):
                if m[b, s]:
                    cnt += 1
            acc = np.zeros(D, dtype=np.float64)
            for s in range(S):
                if m[b, s]:
                    for d in range(D):
                        acc[d] += h[b, s, d]
            for d in range(D):
                pooled[b, d] = acc[d] / cnt if cnt > 0 else 0.0
        ss = 0.0
        for d in range(D):
            x = np.float64(pooled[b, d])
            ss += x * x
        nrm = math.sqrt(ss)
        inv[b] = 1.0 / nrm if nrm > 0.0 else (nrm if math.isnan(nrm) else 0.0)
    nchunk = (D + _CHUNK - 1) // _CHUNK
    for c in prange(nchunk):
        d0 = c * _CHUNK
        d1 = min(D, d0 + _CHUNK)
        for b in range(B):  # serial over rows: the same order of adds for any thread count
            g = slot[b]
            if g < 0 or g >= G:
                continue
            for d in range(d0, d1):
                x = np.float64(pooled[b, d])
                sums[g, d] += x
                if has_units:
                    units[g, d] += x * inv[b]


# Serial twins for small calls: waking the thread pool costs more than the work itself (and, on a
# busy node, far more).  Same loops, same order of additions: bit-identical results.
_pool_acc_serial = njit(serial_copy(_pool_acc.py_func))
SERIAL_BELOW = 1 << 18   # elements of hidden read (B*D for "last", B*S*D for "mean")
COUNT_SERIAL_BELOW = 1 << 22   # n*m*D multiply-adds of count_pairs_below


def pool_accumulate_(hidden, mask, mode, slot, sums, unit_sums):
    B, S, D = hidden.shape
    adt = acc_dtype(hidden.dtype)
    pooled = torch.empty(B, D, dtype=adt)
    if B == 0:
        return pooled
    if S == 0 or D == 0:
        pooled.zero_()
        m = np.zeros((B, 1), np.bool_)
        h = np.zeros((B, 1, D), np.float64 if adt == torch.float64 else np.float32)
    else:
        m = (np.ones((B, S), np.bool_) if mask is None else (mask != 0).numpy())
        if hidden.dtype in (torch.float32, torch.float64):
            h = hidden.detach().numpy()
        elif mode == "last":  # gather the last tokens (B*D), then upcast only those
            pos = torch.arange(S).expand(B, S)
            last = torch.where(torch.from_numpy(m), pos, torch.full_like(pos, -1)).amax(dim=1)
            h = hidden[torch.arange(B), last.clamp_min(0)].to(torch.float32)[:, None, :].numpy()
            m = (last >= 0).numpy()[:, None]
        else:
            h = hidden.detach().to(torch.float32).numpy()
    units = unit_sums if unit_sums is not None else sums.new_zeros(1, 1)
    work = B * D * (1 if mode == "last" else max(1, S))
    kern = _pool_acc_serial if work < SERIAL_BELOW else _pool_acc
    kern(h, m, mode == "last", slot.numpy(), sums.numpy(), units.numpy(), unit_sums is not None,
         pooled.numpy(), np.empty(B, np.float64))
    return pooled


# ------------------------------------------------------------------ pairs below a threshold
@njit
def _inv_norms(X, out):
    """Serial: (n + m) D work next to the count's n m D, and no second wake-up of the threads."""
    n, D = X.shape
    for i in range(n):
        ss = 0.0
        for k in range(D):
            x = np.float64(X[i, k])
            ss += x * x
        nrm = math.sqrt(ss)
        out[i] = 1.0 / nrm if nrm > 0.0 else (nrm if math.isnan(nrm) else 0.0)


@njit(inline="always")
def _emit(s, ai, bj, gi, gj, thr, part):
    """Count the pair if both groups count and cos = s * ai * bj (clamped) is below thr."""
    if gi >= 0 and gj >= 0:
        c = s * ai * bj
        if c > 1.0:
            c = 1.0
        elif c < -1.0:
            c = -1.0
        if c < thr:  # NaN < thr is False
            part[gi + gj] += 1


@njit(fastmath=_FM)
def _tile(A, Bm, ia, ib, ka, kb, thr, zero, i0, i1, j0, j1, part):
    """Rows i0:i1 of A against rows j0:j1 of B: 2 x 4 dot products at a time (8 accumulators,
    each vectorised over D), then 2 x 1 and 1 x 1 for the edges."""
    D = A.shape[1]
    i = i0
    while i < i1:
        two = i + 1 < i1
        i2 = i + 1 if two else i
        j = j0
        while j + 4 <= j1:
            s00 = zero
            s01 = zero
            s02 = zero
            s03 = zero
            s10 = zero
            s11 = zero
            s12 = zero
            s13 = zero
            for k in range(D):
                a0 = A[i, k]
                a1 = A[i2, k]
                b0 = Bm[j, k]
                b1 = Bm[j + 1, k]
                b2 = Bm[j + 2, k]
                b3 = Bm[j + 3, k]
                s00 += a0 * b0
                s01 += a0 * b1
                s02 += a0 * b2
                s03 += a0 * b3
                s10 += a1 * b0
                s11 += a1 * b1
                s12 += a1 * b2
                s13 += a1 * b3
            g0 = ka[i]
            _emit(s00, ia[i], ib[j], g0, kb[j], thr, part)
            _emit(s01, ia[i], ib[j + 1], g0, kb[j + 1], thr, part)
            _emit(s02, ia[i], ib[j + 2], g0, kb[j + 2], thr, part)
            _emit(s03, ia[i], ib[j + 3], g0, kb[j + 3], thr, part)
            if two:
                g1 = ka[i2]
                _emit(s10, ia[i2], ib[j], g1, kb[j], thr, part)
                _emit(s11, ia[i2], ib[j + 1], g1, kb[j + 1], thr, part)
                _emit(s12, ia[i2], ib[j + 2], g1, kb[j + 2], thr, part)
                _emit(s13, ia[i2], ib[j + 3], g1, kb[j + 3], thr, part)
            j += 4
        while j < j1:
            s0 = zero
            s1 = zero
            for k in range(D):
                b = Bm[j, k]
                s0 += A[i, k] * b
                s1 += A[i2, k] * b
            _emit(s0, ia[i], ib[j], ka[i], kb[j], thr, part)
            if two:
                _emit(s1, ia[i2], ib[j], ka[i2], kb[j], thr, part)
            j += 1
        i += 2


@njit(parallel=True)
def _count(A, Bm, ia, ib, ka, kb, thr, zero, ncell, nchunks):
    n = A.shape[0]
    m = Bm.shape[0]
    nta = (n + TA - 1) // TA
    ntb = (m + TB - 1) // TB
    total = nta * ntb
    part = np.zeros((nchunks, ncell), dtype=np.int64)
    for c in prange(nchunks):
        t0 = c * total // nchunks
        t1 = (c + 1) * total // nchunks
        for t in range(t0, t1):
            i0 = (t // ntb) * TA
            j0 = (t % ntb) * TB
            _tile(A, Bm, ia, ib, ka, kb, thr, zero, i0, min(n, i0 + TA), j0, min(m, j0 + TB), part[c])
    return part.sum(axis=0)


_count_serial = njit(serial_copy(_count.py_func))


def _keys(g, rows, G, scale):
    if g is None:
        return np.zeros(rows, np.int64)
    g = g.numpy()
    return np.where((g >= 0) & (g < G), g * scale, -1).astype(np.int64)


def count_pairs_below(A, B, threshold, a_groups, b_groups, n_groups):
    G = n_groups
    n, m = A.shape[0], B.shape[0]
    if n == 0 or m == 0:
        return torch.zeros(G, G, dtype=torch.int64)
    cdt = torch.float64 if torch.float64 in (A.dtype, B.dtype) else torch.float32
    a = A.detach().to(cdt).contiguous().numpy()
    b = B.detach().to(cdt).contiguous().numpy()
    npdt = np.float64 if cdt == torch.float64 else np.float32
    ia64, ib64 = np.empty(n), np.empty(m)
    _inv_norms(a, ia64)
    _inv_norms(b, ib64)
    ka, kb = _keys(a_groups, n, G, G), _keys(b_groups, m, G, 1)
    # one chunk below ~4M multiply-adds (integer partials: any chunking gives the same counts)
    nchunks = 1 if n * m * max(1, A.shape[1]) < COUNT_SERIAL_BELOW else max(1, numba.get_num_threads())
    cells = (_count_serial if nchunks == 1 else _count)(a, b, ia64.astype(npdt), ib64.astype(npdt), ka, kb, npdt(threshold), npdt(0.0),
                   G * G, nchunks)
    return torch.from_numpy(cells).view(G, G)
