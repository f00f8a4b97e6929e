"""The ``triton`` backend of the streaming ops: CUDA tensors (and CPU tensors under
``TRITON_INTERPRET=1``, for CI).  Definitions in ``cape_kernels.streaming``.

* pool_accumulate_: one program per row b.  It reads the row's mask (token count or last token),
  pools block by block of D (mode "last" loads only the last token), writes pooled[b], adds it
  atomically into sums[slot_b] and sums its squares; then (unit_sums given) adds pooled[b] / |pooled|
  into unit_sums[slot_b].  When D fits one block the row stays in registers; otherwise the second
  sweep re-reads pooled[b] (B*D floats, just written, after a CTA barrier), never ``hidden``.
  Bytes: B*D (last) or B*S*D (mean) elements of hidden, B*S of mask, 2 B*D floats of pooled, and
  the atomics on the touched slots.  fp64 hidden is pooled in fp64; the adds are in the sums dtype.
* count_pairs_below: one launch over a grid of [BM, BN] tiles (at most 128 x 128).  Each program
  forms the tile's raw dot products with ``tl.dot`` (fp16/bf16: tensor cores, fp32 accumulation;
  fp32: IEEE fp32, not TF32) and, from the same loaded blocks, the squared norms of its rows; the
  cosine is dot * (1/|a|) * (1/|b|) (``sqrt_rn``, ``div_rn``).  Grouped counts: the 0/1 matrix of
  pairs below the threshold is reduced to a [G, G] histogram by two one-hot matrix products (exact
  small integers), added with int64 atomics into counts (zero-filled before the launch).  No
  autotuning (it would replay the atomics); tile sizes follow n.  float64 inputs are computed in
  fp32 here (the CPU backends compute them in float64).
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


# ------------------------------------------------------------------ pool + accumulate
@triton.jit
def _pool_block(h_row, m_row, offs_d, dmask, li, cnt, S, D, HAS_MASK: tl.constexpr,
                MEAN: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    if MEAN:
        acc = tl.zeros([BLOCK_D], dtype=ACC)
        for s0 in range(0, S, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            smask = offs_s < S
            if HAS_MASK:
                w = tl.load(m_row + offs_s, mask=smask, other=0)
                smask = smask & (w != 0)
            x = tl.load(h_row + offs_s[:, None] * D + offs_d[None, :],
                        mask=smask[:, None] & dmask[None, :], other=0.0)
            acc += tl.sum(x.to(ACC), axis=0)
        p = tl.where(cnt > 0, acc / tl.maximum(cnt, 1).to(ACC), 0.0)
    else:
        liv = li + tl.zeros([BLOCK_D], dtype=tl.int32)  # as a vector (the interpreter needs it)
        x = tl.load(h_row + tl.maximum(liv, 0).to(tl.int64) * D + offs_d, mask=dmask & (liv >= 0), other=0.0)
        p = x.to(ACC)
    return p


@triton.jit
def _inv_norm(n2, SUM: tl.constexpr):
    """1/sqrt(n2), the inverse norm from a sum of squares, correctly rounded (0 for 0, NaN for NaN) in
    fp32 or fp64 (SUM); the pooling and the pair count share it."""
    if SUM == tl.float64:
        nrm = tl.sqrt(n2)  # fp64 sqrt and division are IEEE
        inv = tl.where(nrm > 0, 1.0 / tl.where(nrm > 0, nrm, 1.0), 0.0)
    else:
        nrm = tl.sqrt_rn(n2)
        inv = tl.where(nrm > 0, tl.div_rn(tl.full([], 1.0, tl.float32), tl.where(nrm > 0, nrm, 1.0)), 0.0)
    return tl.where(nrm != nrm, nrm, inv)


@triton.jit
def _pool_acc_kernel(h_ptr, m_ptr, slot_ptr, sums_ptr, units_ptr, out_ptr, S, D, G,
                     HAS_MASK: tl.constexpr, MEAN: tl.constexpr, UNITS: tl.constexpr,
                     SINGLE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
                     ACC: tl.constexpr, SUM: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h_row = h_ptr + b * S * D
    m_row = m_ptr + b * S
    # the row's tokens: the last one (mode last) or how many (mode mean)
    li = tl.full([], S - 1, tl.int32)  # tensors even when S is specialised to the constant 1
    cnt = tl.full([], S, tl.int32)
    if HAS_MASK:
        last = tl.full([BLOCK_S], -1, dtype=tl.int32)
        c = tl.zeros([BLOCK_S], dtype=tl.int32)
        for s0 in range(0, S, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            w = tl.load(m_row + offs_s, mask=offs_s < S, other=0)
            last = tl.maximum(last, tl.where(w != 0, offs_s, -1))
            c += (w != 0).to(tl.int32)
        li = tl.max(last, axis=0)
        cnt = tl.sum(c, axis=0)
    g = tl.load(slot_ptr + b) + tl.zeros([BLOCK_D], dtype=tl.int64)  # as a vector
    ok = (g >= 0) & (g < G)
    srow = tl.where(ok, g, 0) * D
    ss = tl.zeros([BLOCK_D], dtype=SUM)
    if SINGLE:
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        p = _pool_block(h_row, m_row, offs_d, dmask, li, cnt, S, D, HAS_MASK, MEAN, BLOCK_S, BLOCK_D, ACC)
        tl.store(out_ptr + b * D + offs_d, p, mask=dmask)
        ps = p.to(SUM)
        tl.atomic_add(sums_ptr + srow + offs_d, ps, mask=dmask & ok)
        if UNITS:
            inv = _inv_norm(tl.sum(ps * ps, axis=0), SUM)
            tl.atomic_add(units_ptr + srow + offs_d, ps * inv, mask=dmask & ok)
    else:
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            dmask = offs_d < D
            p = _pool_block(h_row, m_row, offs_d, dmask, li, cnt, S, D, HAS_MASK, MEAN, BLOCK_S, BLOCK_D, ACC)
            tl.store(out_ptr + b * D + offs_d, p, mask=dmask)
            ps = p.to(SUM)
            tl.atomic_add(sums_ptr + srow + offs_d, ps, mask=dmask & ok)
            ss += ps * ps
        if UNITS:
            inv = _inv_norm(tl.sum(ss, axis=0), SUM)
            tl.debug_barrier()  # pooled[b] written by every thread of this program is visible
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                dmask = offs_d < D
                ps = tl.load(out_ptr + b * D + offs_d, mask=dmask, other=0.0).to(SUM)
                tl.atomic_add(units_ptr + srow + offs_d, ps * inv, mask=dmask & ok)


_TL = {torch.float32: tl.float32, torch.float64: tl.float64}


def pool_accumulate_(hidden, mask, mode, slot, sums, unit_sums):
    B, S, D = hidden.shape
    adt = acc_dtype(hidden.dtype)
    out = torch.empty(B, D, dtype=adt, device=hidden.device)
    if B == 0 or D == 0:
        return out
    if S == 0:  # no tokens anywhere: pooled rows are zero, adding them changes nothing
        return out.zero_()
    m = None
    if mask is not None:
        m = mask if mask.dtype == torch.bool else (mask != 0)
        m = m.view(torch.uint8)
    mean = mode == "mean"
    if INTERPRET:
        BLOCK_D = _np2(D, 16, 64)
        BLOCK_S = _np2(S, 2, 16)
        kw = {}
    elif mean:
        BLOCK_D = _np2(D, 16, 1024)
        BLOCK_S = _np2(S, 2, max(2, 8192 // BLOCK_D))
        kw = {"num_warps": 8 if BLOCK_D >= 512 else 4}
    else:
        BLOCK_D = _np2(D, 16, 8192)
        BLOCK_S = _np2(S, 16, 256)
        kw = {"num_warps": 8 if BLOCK_D >= 2048 else 4}
    units = unit_sums if unit_sums is not None else sums
    _pool_acc_kernel[(B,)](hidden, m if m is not None else slot, slot, sums, units, out, S, D,
                           sums.shape[0], HAS_MASK=m is not None, MEAN=mean,
                           UNITS=unit_sums is not None, SINGLE=D <= BLOCK_D, BLOCK_S=BLOCK_S,
                           BLOCK_D=BLOCK_D, ACC=_TL[adt], SUM=_TL[sums.dtype], **kw)
    return out


# ------------------------------------------------------------------ pairs below a threshold
@triton.jit
def _count_kernel(a_ptr, b_ptr, ga_ptr, gb_ptr, cnt_ptr, n, m, D, G, thr,
                  GROUPED: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GC: tl.constexpr,
                  HOT: tl.constexpr, HOT32: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    mm = offs_m < n
    nm = offs_n < m
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * D + offs_k[None, :]
    b_ptrs = b_ptr + offs_n.to(tl.int64)[None, :] * D + offs_k[:, None]
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    ssa = tl.zeros([BM], dtype=tl.float32)
    ssb = tl.zeros([BN], dtype=tl.float32)
    for k0 in range(0, D, BK):
        km = (k0 + offs_k) < D
        a = tl.load(a_ptrs, mask=mm[:, None] & km[None, :], other=0.0)
        bt = tl.load(b_ptrs, mask=km[:, None] & nm[None, :], other=0.0)
        af = a.to(tl.float32)
        bf = bt.to(tl.float32)
        ssa += tl.sum(af * af, axis=1)
        ssb += tl.sum(bf * bf, axis=0)
        if UPCAST:
            a = af
            bt = bf
        if IEEE:
            acc = tl.dot(a, bt, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, bt, acc)
        a_ptrs += BK
        b_ptrs += BK
    c = acc * _inv_norm(ssa, tl.float32)[:, None] * _inv_norm(ssb, tl.float32)[None, :]
    c = tl.where(c > 1.0, 1.0, tl.where(c < -1.0, -1.0, c))  # NaN stays NaN
    below = (c < thr) & mm[:, None] & nm[None, :]  # NaN < thr is False
    if GROUPED:
        ga = tl.load(ga_ptr + offs_m, mask=mm, other=-1)
        gb = tl.load(gb_ptr + offs_n, mask=nm, other=-1)
        bel = below.to(HOT)
        offs_g = tl.arange(0, GC)
        for h0 in range(0, G, GC):
            hc = h0 + offs_g
            ob = (gb[:, None] == hc[None, :]).to(HOT)                      # [BN, GC] one-hot of b's groups
            if HOT32:  # [BM, GC] row counts by b-group: <= BN, exact
                rc = tl.dot(bel, ob, input_precision="ieee").to(HOT)
            else:
                rc = tl.dot(bel, ob).to(HOT)
            for g0 in range(0, G, GC):
                gr = g0 + offs_g
                oat = (gr[:, None] == ga[None, :]).to(HOT)                 # [GC, BM] one-hot of a's groups
                if HOT32:  # [GC, GC] tile histogram: <= BM*BN, exact
                    t = tl.dot(oat, rc, input_precision="ieee")
                else:
                    t = tl.dot(oat, rc)
                ti = t.to(tl.int64)
                msk = (gr[:, None] < G) & (hc[None, :] < G) & (ti > 0)
                tl.atomic_add(cnt_ptr + gr[:, None].to(tl.int64) * G + hc[None, :], ti, mask=msk)
    else:
        k = tl.sum(tl.sum(below.to(tl.int32), axis=1), axis=0)
        tl.atomic_add(cnt_ptr, k.to(tl.int64))


def count_pairs_below(A, B, threshold, a_groups, b_groups, n_groups):
    G = n_groups
    dev = A.device
    counts = torch.zeros(G, G, dtype=torch.int64, device=dev)
    n, m = A.shape[0], B.shape[0]
    if n == 0 or m == 0:
        return counts
    if A.dtype != B.dtype or A.dtype == torch.float64:
        A, B = A.to(torch.float32), B.to(torch.float32)
    half = A.dtype in (torch.float16, torch.bfloat16)
    if INTERPRET:
        BM, BN, BK, kw = _np2(n, 16, 32), 32, 16, {}
    else:
        BM = _np2(n, 16, 128)
        BN = 128 if half else 64
        BK = 32
        kw = {"num_warps": 8 if BM * BN >= 128 * 128 else 4, "num_stages": 3}
    grouped = a_groups is not None or b_groups is not None
    # the interpreter's tl.dot mishandles bf16; fp16 one-hots on GPU are exact for these counts
    hot = tl.float32 if INTERPRET else tl.float16
    ga = a_groups if a_groups is not None else torch.zeros(n, dtype=torch.int64, device=dev)
    gb = b_groups if b_groups is not None else torch.zeros(m, dtype=torch.int64, device=dev)
    grid = (triton.cdiv(n, BM), triton.cdiv(m, BN))
    _count_kernel[grid](A, B, ga, gb, counts, n, m, A.shape[1], G, float(threshold),
                        GROUPED=grouped, IEEE=not half, UPCAST=half and INTERPRET,
                        BM=BM, BN=BN, BK=BK, GC=_np2(G, 16, 32), HOT=hot, HOT32=INTERPRET, **kw)
    return counts
