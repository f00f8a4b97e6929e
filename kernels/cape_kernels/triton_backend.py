"""The ``triton`` backend: CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``, for CI).

Every kernel works on blocks of rows, so the interpreter stays usable on small shapes.  Bytes to
move (the roofline, derived before measuring, as in Triton's fused-softmax tutorial):

* pooled tap: read N*S*D (mean) or N*D (last) elements, write N*D floats.
* set-mean cosine: read B*(P+Q)*D elements once.  Stage 1 sums rows of a split of the set into
  [B, splits, 2, D] partials (enough programs to fill the GPU even for B = 1), stage 2 (one program
  per b) adds the partials and forms the cosine: two launches, deterministic (no atomics).
* steering: read T*D of h (+ v) and write the rows it changes, once: when D fits one block
  (D <= 8192) each row block is loaded once, reduced, updated and stored from registers.
* pairwise statistics: compute-bound, 2*B*P*Q*D flops.  Rows are normalised once (fp32), then a
  tiled matrix product (``tl.dot``; fp32 inputs use IEEE fp32, fp16/bf16 inputs use tensor cores
  with fp32 accumulation) clamps each [BLOCK_P, BLOCK_Q] tile of cosines and reduces it to a sum
  and a count below the threshold; the [B, P, Q] matrix is written only when asked.  On CUDA the
  tile sizes are autotuned; under the interpreter a fixed small configuration is used (autotune
  needs a GPU timer).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from cape_kernels.backends import triton_interpreting
from cape_kernels.reference import acc_dtype

INTERPRET = triton_interpreting()


def _np2(x: int, lo: int = 16, hi: int = 1 << 30) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(x), 1))))


# ------------------------------------------------------------------ the safe cosine (every kernel)
@triton.jit
def _safe_cos(dot, n2a, n2b):
    """dot / (sqrt(n2a) sqrt(n2b)), 0 where that product is 0, clamped to [-1, 1]; a NaN in dot or
    the norms gives NaN (the contract of the torch backend's ``reference.safe_cos``)."""
    den = tl.sqrt(n2a) * tl.sqrt(n2b)
    c = tl.where(den > 0, dot / tl.where(den > 0, den, 1.0), 0.0)
    c = tl.minimum(tl.maximum(c, -1.0), 1.0)
    return tl.where((den != den) | (dot != dot), den + dot, c)


# ------------------------------------------------------------------ pooled tap
@triton.jit
def _pool_kernel(h_ptr, m_ptr, out_ptr, S, D, MEAN: tl.constexpr,
                 BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    n = tl.program_id(0)
    dblk = tl.program_id(1)
    offs_d = dblk * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    h_row = h_ptr + n.to(tl.int64) * S * D
    if MEAN:
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        cnt = tl.zeros([BLOCK_S], dtype=tl.float32)
        for s0 in range(0, S, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            smask = offs_s < S
            w = tl.load(m_ptr + n * S + offs_s, mask=smask, other=0.0)
            x = tl.load(h_row + offs_s[:, None] * D + offs_d[None, :],
                        mask=smask[:, None] & dmask[None, :] & (w[:, None] != 0), other=0.0)
            acc += tl.sum(x.to(tl.float32), axis=0)
            cnt += w
        total = tl.sum(cnt, axis=0)
        res = tl.where(total > 0, acc / tl.maximum(total, 1.0), 0.0)
        tl.store(out_ptr + n * D + offs_d, res, mask=dmask)
    else:
        last = tl.full([BLOCK_S], -1, dtype=tl.int32)
        for s0 in range(0, S, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            w = tl.load(m_ptr + n * S + offs_s, mask=offs_s < S, other=0.0)
            last = tl.maximum(last, tl.where(w != 0, offs_s, -1))
        li = tl.max(last, axis=0) + tl.zeros([BLOCK_D], dtype=tl.int32)  # as a vector
        x = tl.load(h_row + tl.maximum(li, 0) * D + offs_d, mask=dmask & (li >= 0), other=0.0)
        tl.store(out_ptr + n * D + offs_d, x.to(tl.float32), mask=dmask)


def pooled_tap(hidden, mask, mode):
    N, S, D = hidden.shape
    out = torch.empty(N, D, dtype=torch.float32, device=hidden.device)
    if N == 0 or D == 0:
        return out.to(acc_dtype(hidden.dtype))
    if S == 0:
        return out.zero_().to(acc_dtype(hidden.dtype))
    h = hidden if hidden.dtype != torch.float64 else hidden.to(torch.float32)
    m = (torch.ones(N, S, device=hidden.device) if mask is None else (mask != 0).to(torch.float32))
    BLOCK_D = _np2(D, 16, 64 if INTERPRET else 512)
    BLOCK_S = _np2(S, 16, 64 if INTERPRET else 16)
    _pool_kernel[(N, triton.cdiv(D, BLOCK_D))](h, m, out, S, D, MEAN=(mode == "mean"),
                                               BLOCK_S=BLOCK_S, BLOCK_D=BLOCK_D)
    return out.to(acc_dtype(hidden.dtype))


# ------------------------------------------------------------------ set-mean cosine
@triton.jit
def _set_partial_kernel(r_ptr, t_ptr, part_ptr, P, Q, D, rows_r, rows_t, NSPLIT,
                        BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0)
    dblk = tl.program_id(1)
    sp = tl.program_id(2)
    offs_d = dblk * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    b64 = b.to(tl.int64)
    # R rows [sp*rows_r, min(P, (sp+1)*rows_r))
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    p_lo = sp * rows_r
    p_hi = tl.minimum(P, p_lo + rows_r)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        x = tl.load(r_ptr + (b64 * P + offs_p[:, None]) * D + offs_d[None, :],
                    mask=(offs_p[:, None] < p_hi) & dmask[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32), axis=0)
    base = ((b64 * NSPLIT + sp) * 2) * D
    tl.store(part_ptr + base + offs_d, acc, mask=dmask)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    q_lo = sp * rows_t
    q_hi = tl.minimum(Q, q_lo + rows_t)
    for q0 in range(q_lo, q_hi, BLOCK_P):
        offs_q = q0 + tl.arange(0, BLOCK_P)
        x = tl.load(t_ptr + (b64 * Q + offs_q[:, None]) * D + offs_d[None, :],
                    mask=(offs_q[:, None] < q_hi) & dmask[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32), axis=0)
    tl.store(part_ptr + base + D + offs_d, acc, mask=dmask)


@triton.jit
def _set_finish_kernel(part_ptr, out_ptr, D, NSPLIT, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0)
    offs_s = tl.arange(0, BLOCK_S)
    smask = offs_s < NSPLIT
    dot = tl.zeros([BLOCK_D], dtype=tl.float32)
    nr = tl.zeros([BLOCK_D], dtype=tl.float32)
    nt = tl.zeros([BLOCK_D], dtype=tl.float32)
    base = part_ptr + b.to(tl.int64) * NSPLIT * 2 * D
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        m2 = smask[:, None] & (offs_d[None, :] < D)
        ptr = base + offs_s[:, None] * 2 * D + offs_d[None, :]
        sr = tl.sum(tl.load(ptr, mask=m2, other=0.0), axis=0)
        st = tl.sum(tl.load(ptr + D, mask=m2, other=0.0), axis=0)
        dot += sr * st
        nr += sr * sr
        nt += st * st
    tl.store(out_ptr + b, _safe_cos(tl.sum(dot, axis=0), tl.sum(nr, axis=0), tl.sum(nt, axis=0)))


@triton.jit
def _set_reduce_kernel(part_ptr, fin_ptr, D, NSPLIT, NF, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """Many splits (small B): program (b, f) adds the splits of d-block f and writes its share of
    dot, |sr|^2, |st|^2 to fin[b, f, 0:3]; _set_final_kernel adds the NF shares in order."""
    b = tl.program_id(0)
    f = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = f * BLOCK_D + tl.arange(0, BLOCK_D)
    base = part_ptr + b.to(tl.int64) * NSPLIT * 2 * D
    sr = tl.zeros([BLOCK_D], dtype=tl.float32)
    st = tl.zeros([BLOCK_D], dtype=tl.float32)
    for s0 in range(0, NSPLIT, BLOCK_S):
        m2 = ((s0 + offs_s)[:, None] < NSPLIT) & (offs_d[None, :] < D)
        ptr = base + (s0 + offs_s)[:, None] * 2 * D + offs_d[None, :]
        sr += tl.sum(tl.load(ptr, mask=m2, other=0.0), axis=0)
        st += tl.sum(tl.load(ptr + D, mask=m2, other=0.0), axis=0)
    o = fin_ptr + (b * NF + f) * 3
    tl.store(o, tl.sum(sr * st, axis=0))
    tl.store(o + 1, tl.sum(sr * sr, axis=0))
    tl.store(o + 2, tl.sum(st * st, axis=0))


@triton.jit
def _set_final_kernel(fin_ptr, out_ptr, NF, BLOCK_F: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK_F)
    m = offs < NF
    base = fin_ptr + b * NF * 3 + offs * 3
    d = tl.sum(tl.load(base, mask=m, other=0.0), axis=0)
    n2r = tl.sum(tl.load(base + 1, mask=m, other=0.0), axis=0)
    n2t = tl.sum(tl.load(base + 2, mask=m, other=0.0), axis=0)
    tl.store(out_ptr + b, _safe_cos(d, n2r, n2t))


def _sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _set_cos(R, T):
    B, P, D = R.shape
    Q = T.shape[1]
    dev = R.device
    BLOCK_D = _np2(D, 16, 256)
    if INTERPRET:  # small blocks and several splits, so the tests cover the split paths
        BLOCK_P, want = 16, 8
    else:  # [BLOCK_P, BLOCK_D] tiles of 4096 elements; about two programs per SM
        BLOCK_P, want = max(8, 4096 // BLOCK_D), 4 * _sm_count(dev)
    nd = triton.cdiv(D, BLOCK_D)
    nsplit = max(1, min(triton.cdiv(max(P, Q), BLOCK_P), triton.cdiv(want, B * nd)))
    rows_r = triton.cdiv(P, nsplit)
    rows_t = triton.cdiv(Q, nsplit)
    part = torch.empty(B, nsplit, 2, D, dtype=torch.float32, device=dev)
    _set_partial_kernel[(B, nd, nsplit)](R, T, part, P, Q, D, rows_r, rows_t, nsplit,
                                         BLOCK_P=BLOCK_P, BLOCK_D=BLOCK_D)
    out = torch.empty(B, dtype=torch.float32, device=dev)
    if nsplit <= 4:  # one program per b sweeps [nsplit, D] in wide tiles (8192 elements)
        BLOCK_S = _np2(nsplit, 2, 1 << 20)
        _set_finish_kernel[(B,)](part, out, D, nsplit, BLOCK_S=BLOCK_S,
                                 BLOCK_D=max(16, min(_np2(D), 8192 // BLOCK_S)),
                                 **({} if INTERPRET else {"num_warps": 8}))
    else:  # many splits (small B): spread the finishing over d-blocks, then add NF shares
        BLOCK_DF = 16 if INTERPRET else 64
        nf = triton.cdiv(D, BLOCK_DF)
        fin = torch.empty(B, nf, 3, dtype=torch.float32, device=dev)
        _set_reduce_kernel[(B, nf)](part, fin, D, nsplit, nf, BLOCK_S=_np2(nsplit, 2, 64),
                                    BLOCK_D=BLOCK_DF)
        _set_final_kernel[(B,)](fin, out, nf, BLOCK_F=_np2(nf, 2, 1 << 20))
    return out


def set_mean_cosine(R, T):
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, D = R.shape
    if P == 0 or T.shape[1] == 0:
        return torch.full((B,), float("nan"), dtype=adt, device=R.device)
    if B == 0 or D == 0:
        return torch.zeros(B, dtype=adt, device=R.device)
    if R.dtype == torch.float64 or T.dtype == torch.float64 or R.dtype != T.dtype:
        R, T = R.to(torch.float32), T.to(torch.float32)
    return _set_cos(R, T).to(adt)


# ------------------------------------------------------------------ pairwise statistics
@triton.jit
def _unit_rows_kernel(x_ptr, out_ptr, ROWS, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    offs_r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = offs_r < ROWS
    rows = offs_r.to(tl.int64)[:, None] * D
    ss = tl.zeros([BLOCK_R], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_ptr + rows + offs_d[None, :], mask=rmask[:, None] & (offs_d[None, :] < D),
                    other=0.0).to(tl.float32)
        ss += tl.sum(x * x, axis=1)
    n = tl.sqrt(ss)
    inv = tl.where(n > 0, 1.0 / tl.where(n > 0, n, 1.0), 0.0)
    inv = tl.where(n != n, n, inv)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        m2 = rmask[:, None] & (offs_d[None, :] < D)
        x = tl.load(x_ptr + rows + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
        y = x * inv[:, None]
        tl.store(out_ptr + rows + offs_d[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)


def _pair_body(r_ptr, t_ptr, full_ptr, sum_ptr, cnt_ptr, P, Q, D, thr,
               WRITE_FULL: tl.constexpr, IEEE: tl.constexpr,
               BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_q = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_k = tl.arange(0, BLOCK_K)
    pm = offs_p < P
    qm = offs_q < Q
    a_ptrs = r_ptr + (b * P + offs_p[:, None]) * D + offs_k[None, :]
    b_ptrs = t_ptr + (b * Q + offs_q[None, :]) * D + offs_k[:, None]
    acc = tl.zeros([BLOCK_P, BLOCK_Q], dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        km = (k0 + offs_k) < D
        a = tl.load(a_ptrs, mask=pm[:, None] & km[None, :], other=0.0)
        bt = tl.load(b_ptrs, mask=km[:, None] & qm[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(a, bt, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, bt, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    c = tl.minimum(tl.maximum(acc, -1.0), 1.0)
    c = tl.where(acc != acc, acc, c)
    valid = pm[:, None] & qm[None, :]
    s = tl.sum(tl.sum(tl.where(valid, c, 0.0), axis=1), axis=0)
    k = tl.sum(tl.sum(tl.where(valid & (c < thr), 1, 0), axis=1), axis=0)
    tile = (pid_p * tl.num_programs(1) + pid_q) * tl.num_programs(2) + b
    tl.store(sum_ptr + tile, s)
    tl.store(cnt_ptr + tile, k)
    if WRITE_FULL:
        tl.store(full_ptr + (b * P + offs_p[:, None]) * Q + offs_q[None, :], c, mask=valid)


_pair_kernel = triton.jit(_pair_body)
if not INTERPRET:
    _pair_tuned = triton.autotune(
        configs=[
            triton.Config({"BLOCK_P": 128, "BLOCK_Q": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
            triton.Config({"BLOCK_P": 128, "BLOCK_Q": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
            triton.Config({"BLOCK_P": 128, "BLOCK_Q": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
            triton.Config({"BLOCK_P": 64, "BLOCK_Q": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
            triton.Config({"BLOCK_P": 32, "BLOCK_Q": 32, "BLOCK_K": 64}, num_warps=4, num_stages=4),
            triton.Config({"BLOCK_P": 32, "BLOCK_Q": 32, "BLOCK_K": 128}, num_warps=4, num_stages=3),
        ],
        key=["P", "Q", "D", "WRITE_FULL", "IEEE"],
    )(triton.jit(_pair_body))
else:
    _pair_tuned = None


def _unit(X, out_dtype):
    rows = X.shape[0] * X.shape[1]
    D = X.shape[2]
    out = torch.empty(X.shape, dtype=out_dtype, device=X.device)
    if rows and D:
        BLOCK_D = _np2(D, 16, 256 if INTERPRET else 1024)
        BLOCK_R = 16 if INTERPRET else 4
        _unit_rows_kernel[(triton.cdiv(rows, BLOCK_R),)](X, out, rows, D, BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return out


def pairwise(R, T, threshold, return_full):
    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, D = R.shape
    Q = T.shape[1]
    dev = R.device
    if P == 0 or Q == 0:
        nan = torch.full((B,), float("nan"), dtype=adt, device=dev)
        return nan, nan.clone(), (torch.empty(B, P, Q, dtype=adt, device=dev) if return_full else None)
    # fp16/bf16 go through tensor cores; the interpreter's tl.dot mishandles bf16: fp32 there
    half = R.dtype == T.dtype and R.dtype in ((torch.float16,) if INTERPRET else (torch.float16, torch.bfloat16))
    work = R.dtype if half else torch.float32
    Rn, Tn = _unit(R, work), _unit(T, work)
    full = torch.empty(B, P, Q, dtype=torch.float32, device=dev) if return_full else None
    fptr = full if full is not None else Rn
    if INTERPRET or _pair_tuned is None:
        bp = 32 if P > 16 else 16
        bq = 32 if Q > 16 else 16
        grid = (triton.cdiv(P, bp), triton.cdiv(Q, bq), B)
        sums = torch.empty(B * grid[0] * grid[1], dtype=torch.float32, device=dev)
        cnts = torch.empty_like(sums, dtype=torch.int32)
        _pair_kernel[grid](Rn, Tn, fptr, sums, cnts, P, Q, D, float(threshold),
                           WRITE_FULL=return_full, IEEE=not half, BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=16)
    else:
        # partials sized for the smallest tile of the autotune configs; the winning config
        # fills a prefix (tile index = (i * grid_q + j) * B + b): read only that prefix (autotune
        # benchmark runs with other configs leave stale entries behind it)
        n = B * triton.cdiv(P, 32) * triton.cdiv(Q, 32)
        sums = torch.empty(n, dtype=torch.float32, device=dev)
        cnts = torch.empty(n, dtype=torch.int32, device=dev)
        grid = lambda meta: (triton.cdiv(P, meta["BLOCK_P"]), triton.cdiv(Q, meta["BLOCK_Q"]), B)
        _pair_tuned[grid](Rn, Tn, fptr, sums, cnts, P, Q, D, float(threshold),
                          WRITE_FULL=return_full, IEEE=not half)
        cfg = _pair_tuned.best_config.kwargs
        used = B * triton.cdiv(P, cfg["BLOCK_P"]) * triton.cdiv(Q, cfg["BLOCK_Q"])
        sums, cnts = sums[:used], cnts[:used]
    # partial tile index = (i * grid_q + j) * B + b: column b of a [tiles, B] view
    mean = sums.view(-1, B).to(torch.float64).sum(dim=0) / (P * Q)
    frac = cnts.view(-1, B).to(torch.float64).sum(dim=0) / (P * Q)
    frac = torch.where(torch.isnan(mean), mean, frac)
    return mean.to(adt), frac.to(adt), (full.to(adt) if full is not None else None)


# ------------------------------------------------------------------ steering
@triton.jit
def _steer_kernel(h_ptr, v_ptr, a_ptr, proj_ptr, T, D, v_row_stride, tau,
                  RELATIVE: tl.constexpr, GATE: tl.constexpr, SINGLE: tl.constexpr,
                  BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    offs_t = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    tm = offs_t < T
    hrow = offs_t.to(tl.int64)[:, None] * D
    vrow = offs_t.to(tl.int64)[:, None] * v_row_stride
    dot = tl.zeros([BLOCK_T], dtype=tl.float32)
    hh = tl.zeros([BLOCK_T], dtype=tl.float32)
    vv = tl.zeros([BLOCK_T], dtype=tl.float32)
    if SINGLE:
        offs_d = tl.arange(0, BLOCK_D)
        m2 = tm[:, None] & (offs_d[None, :] < D)
        x = tl.load(h_ptr + hrow + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + vrow + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
        dot = tl.sum(x * v, axis=1)
        hh = tl.sum(x * x, axis=1)
        vv = tl.sum(v * v, axis=1)
    else:
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            m2 = tm[:, None] & (offs_d[None, :] < D)
            x = tl.load(h_ptr + hrow + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + vrow + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            dot += tl.sum(x * v, axis=1)
            hh += tl.sum(x * x, axis=1)
            vv += tl.sum(v * v, axis=1)
    c = _safe_cos(dot, hh, vv)
    tl.store(proj_ptr + offs_t, c, mask=tm)
    a = tl.load(a_ptr + offs_t, mask=tm, other=0.0)
    vn = tl.sqrt(vv)
    coef = a / tl.where(vn > 0, vn, 1.0)
    if RELATIVE:
        coef = coef * tl.sqrt(hh)
    apply = tm & (a != 0) & (vv > 0)
    if GATE:
        apply = apply & (c < tau)
    if SINGLE:
        y = x + coef[:, None] * v
        tl.store(h_ptr + hrow + offs_d[None, :], y.to(h_ptr.dtype.element_ty),
                 mask=m2 & apply[:, None])
    else:
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            m2 = apply[:, None] & (offs_d[None, :] < D)
            x = tl.load(h_ptr + hrow + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + vrow + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            y = x + coef[:, None] * v
            tl.store(h_ptr + hrow + offs_d[None, :], y.to(h_ptr.dtype.element_ty), mask=m2)


def steer_(h, v, alpha, relative, tau):
    Tn, D = h.shape
    adt = acc_dtype(h.dtype)
    proj = torch.empty(Tn, dtype=torch.float32, device=h.device)
    if Tn == 0:
        return proj.to(adt)
    if D == 0:
        return proj.zero_().to(adt)
    work = h if h.dtype != torch.float64 else h.to(torch.float32)
    vw = v if v.dtype != torch.float64 else v.to(torch.float32)  # loaded as fp32 in the kernel
    a = alpha.to(torch.float32).contiguous()
    if INTERPRET:
        BLOCK_D, BLOCK_T = _np2(D, 16, 1024), 16
    else:
        BLOCK_D = _np2(D, 16, 8192)
        BLOCK_T = max(1, min(16, 4096 // BLOCK_D))
    single = D <= BLOCK_D
    nw = 4 if BLOCK_T * BLOCK_D <= 2048 else (8 if BLOCK_T * BLOCK_D <= 8192 else 16)
    _steer_kernel[(triton.cdiv(Tn, BLOCK_T),)](
        work, vw, a, proj, Tn, D, D if v.dim() == 2 else 0, 0.0 if tau is None else float(tau),
        RELATIVE=bool(relative), GATE=tau is not None, SINGLE=single,
        BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D, **({} if INTERPRET else {"num_warps": nw}))
    if work is not h:
        h.copy_(work)
    return proj.to(adt)
