"""The ``numba`` backend: CPU tensors, parallel over rows / batch with ``prange``.

float32 and float64 run natively (zero-copy through ``Tensor.numpy()``); float16 and bfloat16 are
upcast to float32 on entry (a copy; steering copies the result back into h).  Sums over sets and
rows accumulate in float64, which makes these kernels more accurate than the float32 reference.

Bytes each op must move (the roofline): pooled tap reads N*S*D (last: N*D) elements and writes
N*D; set-mean cosine reads B*(P+Q)*D; steering reads and writes T*D (plus v).  Pairwise statistics
is compute-bound (2*B*P*Q*D flops): numba computes the rows' inverse norms (one read of R and T),
the tiles' matrix products of the raw rows go to BLAS (torch), and numba turns each tile into
clamped cosines, counts those below the threshold and sums them in one pass over the tile, which
stays in cache.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cape_kernels.numba_jit import njit, numba, prange, twins
from cape_kernels.reference import acc_dtype

_NATIVE = (torch.float32, torch.float64)
# reassociation only: lets LLVM vectorise the float reductions, keeps NaN/inf semantics
_FM = {"reassoc"}


def _np(x: torch.Tensor) -> np.ndarray:
    if x.dtype not in _NATIVE:
        x = x.to(torch.float32)
    if x.requires_grad:
        x = x.detach()
    return (x if x.is_contiguous() else x.contiguous()).numpy()


# ------------------------------------------------------------------ kernels
# calls that read fewer elements (1 MiB of float32) run on one thread.  Measured on 2 cores (pooled
# masked mean, 64 rows of 16 tokens, after torch ops as in a forward or the bench): serial 24 us vs
# parallel 35 us at 0.5 MB, 37 vs 46 us at 1 MB, equal at 2 MB, parallel ahead at 4 MB.  Waking
# numba's pool (a second OpenMP runtime beside torch's, whose workers may still be spinning on the
# other core) costs more than the work below that.
SERIAL_ELEMS = 1 << 18
# rows up to this many features are added one at a time (the accumulator stays in L1 and the loop
# vectorises); longer rows four at a time (a quarter of the accumulator traffic).  Measured on
# AVX-512 (one thread): the better of the two on the heads (D=128) and layers (D=4096) shapes.
_SHORT_ROW = 512


def _d_chunks(rows: int, D: int, min_chunk: int = 256, want_jobs: int = 64) -> int:
    """Feature chunks per row: 1 when there are enough rows to spread over threads, else enough
    chunks (of >= min_chunk features) for ~want_jobs work items.  A function of the shape only
    (never of the thread count), so the arithmetic is the same on any machine."""
    if rows >= want_jobs or D <= min_chunk:
        return 1
    return max(1, min((D + min_chunk - 1) // min_chunk, (want_jobs + rows - 1) // rows))


@njit(inline="always")
def _add4(acc, a, b, c, e):
    """acc += (a + b) + (c + e) in float64, elementwise: four rows per pass over the accumulator
    (a quarter of its load/store traffic; the order of the additions is fixed)."""
    for d in range(acc.shape[0]):
        acc[d] += (np.float64(a[d]) + b[d]) + (np.float64(c[d]) + e[d])


@njit(inline="always")
def _add1(acc, a):
    for d in range(acc.shape[0]):
        acc[d] += a[d]


def _pool_last_fn(h, m, out):
    N, S, D = h.shape
    for n in prange(N):
        last = -1
        for s in range(S - 1, -1, -1):
            if m[n, s]:
                last = s
                break
        o = out[n]
        if last < 0:
            for d in range(D):
                o[d] = 0.0
        else:
            row = h[n, last]
            for d in range(D):
                o[d] = row[d]


def _pool_mean_fn(h, m, nchunk, nlane, out):
    """Masked mean: one work item per (row n, feature chunk); float64 running sums over the
    row's tokens (one pass over each token's features, contiguous), one division at the end.
    The items are split into ``nlane`` contiguous runs (one per lane), each lane with its scratch
    allocated once (an allocation per item cost more than the sums on short rows); an item's
    arithmetic does not depend on its lane."""
    N, S, D = h.shape
    csz = (D + nchunk - 1) // nchunk
    njob = N * nchunk
    per = (njob + nlane - 1) // nlane
    for lane in prange(nlane):
        buf = np.empty(csz, dtype=np.float64)
        tok = np.empty(S, dtype=np.int64)
        for job in range(lane * per, min(njob, (lane + 1) * per)):
            n = job // nchunk
            d0 = (job % nchunk) * csz
            d1 = min(D, d0 + csz)
            w = d1 - d0
            acc = buf[:w]
            acc[:] = 0.0
            cnt = 0
            for s in range(S):
                if m[n, s]:
                    tok[cnt] = s
                    cnt += 1
            hn = h[n]
            i = 0
            if w > _SHORT_ROW:  # long rows: four tokens per pass over the accumulator
                while i + 4 <= cnt:
                    _add4(acc, hn[tok[i], d0:d1], hn[tok[i + 1], d0:d1], hn[tok[i + 2], d0:d1],
                          hn[tok[i + 3], d0:d1])
                    i += 4
            while i < cnt:
                _add1(acc, hn[tok[i], d0:d1])
                i += 1
            o = out[n, d0:d1]
            if cnt > 0:
                for d in range(w):
                    o[d] = acc[d] / cnt
            else:
                for d in range(w):
                    o[d] = 0.0


_pool_last, _pool_last_serial = twins(_pool_last_fn)
_pool_mean, _pool_mean_serial = twins(_pool_mean_fn)


def _row_blocks(B: int, P: int, min_rows: int = 64, want_jobs: int = 64) -> int:
    """Row blocks per set: 1 when there are enough sets to spread over threads, else enough blocks
    (of >= min_rows rows) for ~want_jobs work items.  A function of the shape only."""
    if 2 * B >= want_jobs or P <= min_rows:
        return 1
    return max(1, min((P + min_rows - 1) // min_rows, (want_jobs + 2 * B - 1) // (2 * B)))


@njit(inline="always")
def _sum_rows(Xb, p0, p1, acc):
    """acc = float64 sum of the rows p0..p1-1 of Xb [P, D], in row order (one contiguous pass)."""
    D = acc.shape[0]
    for d in range(D):
        acc[d] = 0.0
    p = p0
    if D > _SHORT_ROW:  # long rows: four per pass over the accumulator
        while p + 4 <= p1:
            _add4(acc, Xb[p], Xb[p + 1], Xb[p + 2], Xb[p + 3])
            p += 4
    while p < p1:
        _add1(acc, Xb[p])
        p += 1


def _set_rows_fn(R, T, nblk, part):
    """part[b, k, j, :] = float64 sum of the rows of block j of set k (0: R[b], 1: T[b]); one work
    item per (b, set, block), each a contiguous pass over whole rows."""
    B = R.shape[0]
    for job in prange(B * 2 * nblk):
        b = job // (2 * nblk)
        k = (job // nblk) % 2
        j = job % nblk
        X = R if k == 0 else T
        n = X.shape[1]
        per = (n + nblk - 1) // nblk
        p0 = min(n, j * per)
        _sum_rows(X[b], p0, min(n, p0 + per), part[b, k, j])


def _set_cos_fn(R, T, nlane, out):
    """out[b] = cos(sum R[b], sum T[b]) in one parallel pass when there are sets enough to spread
    over the threads (one block per set): each lane takes a contiguous run of sets (measured 1.25x
    faster than dealing sets round-robin, and than a scratch allocation per set, on 2 cores), sums
    both sets into its float64 scratch (allocated once per lane) and takes the cosine, so no partial
    sums are written and no second launch is needed.  Same sums, in the same order, as ``_set_rows``
    with one block."""
    B = R.shape[0]
    D = R.shape[2]
    per = (B + nlane - 1) // nlane
    for lane in prange(nlane):
        sr = np.empty(D, dtype=np.float64)
        st = np.empty(D, dtype=np.float64)
        for b in range(lane * per, min(B, (lane + 1) * per)):
            _sum_rows(R[b], 0, R.shape[1], sr)
            _sum_rows(T[b], 0, T.shape[1], st)
            out[b] = _cos_of(sr, st)


def _set_finish_fn(part, out):
    """cos(sum R[b], sum T[b]) from the block sums (added in block order, fixed by the shape)."""
    B, _, nblk, D = part.shape
    for b in prange(B):
        dot = 0.0
        nr = 0.0
        nt = 0.0
        for d in range(D):
            sr = 0.0
            st = 0.0
            for j in range(nblk):
                sr += part[b, 0, j, d]
                st += part[b, 1, j, d]
            dot += sr * st
            nr += sr * sr
            nt += st * st
        out[b] = _cos(dot, nr, nt)


@njit
def _cos(dot, n2a, n2b):
    den = math.sqrt(n2a) * math.sqrt(n2b)
    if math.isnan(den) or math.isnan(dot):
        return math.nan
    if den > 0.0:
        c = dot / den
        return min(1.0, max(-1.0, c))
    return 0.0


@njit(fastmath=_FM)
def _cos_of(a, b):
    """cos(a, b) of two float64 vectors (the three sums vectorised)."""
    dot = 0.0
    na = 0.0
    nb_ = 0.0
    for d in range(a.shape[0]):
        dot += a[d] * b[d]
        na += a[d] * a[d]
        nb_ += b[d] * b[d]
    return _cos(dot, na, nb_)


@njit(fastmath=_FM)
def _inv_norms(X, out):
    """out[r] = 1 / |X[r]| (float64 sum of squares) over the rows of a 2-D view; 0 for a zero
    row (its cosines are 0), NaN for a row with a NaN.  One thread (see ``pairwise``)."""
    R, D = X.shape
    for r in range(R):
        s = 0.0
        for d in range(D):
            s += np.float64(X[r, d]) * X[r, d]
        n = math.sqrt(s)
        out[r] = 1.0 / n if n > 0.0 else (math.nan if math.isnan(n) else 0.0)


@njit(fastmath=_FM)
def _scale_count(C, ir, it, thr):
    """C [nb, M, N] holds raw dot products; in one pass turn them into clamped cosines (in place:
    C may be the caller's full matrix), count those below thr and sum them (float64) per b.
    Sequential on purpose: it runs between BLAS calls, and a second spinning thread pool (numba's
    next to torch's) slowed the matrix products 4x; the pass costs ~1/D of the product anyway."""
    nb_, M, N = C.shape
    counts = np.zeros(nb_, dtype=np.int64)
    sums = np.zeros(nb_, dtype=np.float64)
    for b in range(nb_):
        k = 0
        tot = 0.0
        for i in range(M):
            a = ir[b, i]
            row = C[b, i]
            jr = it[b]
            sub = 0.0
            ki = 0
            for j in range(N):  # branch-free (selects), so it vectorises; NaN stays NaN
                c = row[j] * (a * jr[j])
                c = 1.0 if c > 1.0 else c
                c = -1.0 if c < -1.0 else c
                row[j] = c
                sub += c
                ki += 1 if c < thr else 0
            k += ki
            tot += sub
        counts[b] = k
        sums[b] = tot
    return counts, sums


def _steer_fn(h, v, per_row, alpha, relative, gate, tau, proj):
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


_set_rows, _set_rows_serial = twins(_set_rows_fn)
_set_finish, _set_finish_serial = twins(_set_finish_fn, fastmath=_FM)
_set_cos, _set_cos_serial = twins(_set_cos_fn)
_steer, _steer_serial = twins(_steer_fn, fastmath=_FM)


# ------------------------------------------------------------------ torch-facing wrappers
def _lanes(n_items: int) -> int:
    """Lanes for a parallel launch of ``n_items`` work items: one per numba thread (at most one per
    item).  Passed in, not read inside the kernel (``numba.get_num_threads()`` in a kernel keeps
    numba from caching it)."""
    return max(1, min(numba.get_num_threads(), n_items))


def pooled_tap(hidden, mask, mode):
    N, S, D = hidden.shape
    adt = acc_dtype(hidden.dtype)
    h = _np(hidden)
    if mask is None:
        m = np.ones((N, S), dtype=np.bool_)
    elif mask.dtype == torch.bool:
        m = mask.contiguous().numpy()
    else:
        m = (mask != 0).contiguous().numpy()
    out = np.empty((N, D), dtype=np.float64 if adt == torch.float64 else np.float32)
    if N and D:
        serial = (N * D if mode == "last" else h.size) < SERIAL_ELEMS
        if mode == "last":
            (_pool_last_serial if serial else _pool_last)(h, m, out)
        else:
            nchunk = _d_chunks(N, D)
            if serial:
                _pool_mean_serial(h, m, nchunk, 1, out)
            else:
                _pool_mean(h, m, nchunk, _lanes(N * nchunk), out)
    return torch.from_numpy(out)


def set_mean_cosine(R, T):
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, D = R.shape
    Q = T.shape[1]
    if P == 0 or Q == 0:
        return torch.full((B,), float("nan"), dtype=adt)
    out = np.empty(B, dtype=np.float64)
    if B:
        r, t = _np(R), _np(T)
        if r.dtype != t.dtype:  # one kernel signature for mixed inputs
            r, t = r.astype(np.float64), t.astype(np.float64)
        nblk = _row_blocks(B, max(P, Q))
        serial = r.size + t.size < SERIAL_ELEMS
        if nblk == 1:  # sets enough for the threads: sums and cosine in one launch
            if serial:
                _set_cos_serial(r, t, 1, out)
            else:
                _set_cos(r, t, _lanes(B), out)
        else:  # few long sets: row blocks in parallel, then the cosines from the block sums
            part = np.empty((B, 2, nblk, D), dtype=np.float64)
            (_set_rows_serial if serial else _set_rows)(r, t, nblk, part)
            (_set_finish_serial if part.size < SERIAL_ELEMS else _set_finish)(part, out)
    return torch.from_numpy(out).to(adt)


_CHUNK_ELEMS = 1 << 23  # cosines per GEMM chunk (32 MiB of float32): large enough for BLAS efficiency


def pairwise(R, T, threshold, return_full):
    """Two passes over the inputs: numba's row norms (one read), then torch's batched matmul of
    the raw rows (BLAS, all threads) into a reused buffer of at most _CHUNK_ELEMS dot products,
    which numba scales by the inverse norms into clamped cosines, counts and sums in one pass
    (no normalised copies of R and T)."""
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    npdt = np.float64 if adt == torch.float64 else np.float32
    B, P, D = R.shape
    Q = T.shape[1]
    if P == 0 or Q == 0:
        nan = torch.full((B,), float("nan"), dtype=adt)
        return nan, nan.clone(), (torch.empty(B, P, Q, dtype=adt) if return_full else None)
    r = _np(R).astype(npdt, copy=False)
    t = _np(T).astype(npdt, copy=False)
    ir = np.empty(B * P, dtype=np.float64)
    it = np.empty(B * Q, dtype=np.float64)
    # the norms on one thread, whatever the size: this op's time is torch's matrix products, and
    # waking numba's pool beside torch's (two OpenMP runtimes on the same cores, each spinning a
    # while after its work) slowed the whole op by a third on 2 cores (heads shape: 97-102 ms ->
    # 70-75 ms); the single pass over R and T costs ~1/20 of the products
    _inv_norms(r.reshape(B * P, D), ir)
    _inv_norms(t.reshape(B * Q, D), it)
    ir, it = ir.reshape(B, P), it.reshape(B, Q)
    Rt = torch.from_numpy(r)
    Tt = torch.from_numpy(t).transpose(1, 2)
    full = torch.empty(B, P, Q, dtype=adt) if return_full else None
    below = np.zeros(B, dtype=np.int64)
    total = np.zeros(B, dtype=np.float64)
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
            below[b0:b1], total[b0:b1] = _scale_count(out.numpy(), ir[b0:b1], it[b0:b1], thr_c)
    else:  # tiles of rows of one b
        rows = max(1, _CHUNK_ELEMS // Q)
        buf = None if full is not None else torch.empty(rows, Q, dtype=adt)
        for b in range(B):
            for p0 in range(0, P, rows):
                p1 = min(P, p0 + rows)
                out = full[b, p0:p1] if full is not None else buf[: p1 - p0]
                torch.mm(Rt[b, p0:p1], Tt[b], out=out)
                k, tot = _scale_count(out.numpy()[None], ir[b:b + 1, p0:p1], it[b:b + 1], thr_c)
                below[b] += k[0]
                total[b] += tot[0]
    mean = total / (P * Q)
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
    if Tn and D:  # small calls (a decoding step's rows) on one thread
        kern = _steer_serial if hw.size < SERIAL_ELEMS else _steer
        kern(hw, vw, int(v.dim() == 2), a, bool(relative), tau is not None,
             0.0 if tau is None else float(tau), proj)
    elif Tn:
        proj[:] = 0.0
    if not native:
        h.copy_(torch.from_numpy(hw))
    return torch.from_numpy(proj).to(adt)
