"""The streaming state of ``extract_internals`` (docs/METHODS.md §3.7): device-resident tensors
whose size does not depend on the number of prompts, updated inside the trace callbacks with no
host synchronisation.

Slots: a prompt of set s (0 = R, 1 = T) in block g accumulates into slot ``s * G + g``.

- ``layer_sums`` / ``layer_units`` [L, 2G, D] float64: sums of pooled vectors and of unit vectors
  per layer (``cape_kernels.pool_accumulate_``);
- ``head_sums`` [L, 2G, H * head_dim] float64; ``final_sums`` [2G, D] float64;
- moments for d_rep, over the R and T prompts together, shifted by the first batch's mean ``c``
  (which removes most of the cancellation of sum x x^T - n m m^T):
  ``m1`` [L, k] = sum (x - c), ``m2`` [L, k, k] = sum (x - c)(x - c)^T with x the pooled vector
  (exact, k = D) or its sketch Omega^T x (sketch, k = ``d_rep_sketch``); ``final_m1/m2`` likewise
  (always exact: the PCA curve of §3.5 needs the axes);
- the pair state (``PairState``): resident unit vectors of each set (exact mode, within
  ``pair_budget_mb``) or a seeded reservoir per set (Algorithm R), and ``below`` [L, G, G] int64
  counts of pairs below the threshold by (block of r, block of t).

The host keeps only integers known before the pass (which prompt goes to which slot, which rows of
a batch are R / T, where they go in the resident buffers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

__all__ = ["StreamingOps", "streaming_ops", "StreamState", "PairState", "MomentStage", "MOMENT_STAGE_ROWS",
           "reservoir_slots", "unit_rows", "set_shift", "update_moments", "covariance", "sketch_matrix",
           "sketch_participation_ratio"]


# ----------------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class StreamingOps:
    """``cape_kernels.streaming``'s two ops (and ``pooled_tap``) bound to one requested backend
    (None: the default for the device); ``name`` is the backend they resolve to."""

    requested: Optional[str]
    name: str

    def pool_accumulate_(self, hidden, mask, mode, slot, sums, unit_sums=None) -> torch.Tensor:
        """``cape_kernels.pool_accumulate_``: pooled rows [B, D], accumulated into ``sums``."""
        from cape_kernels import streaming

        return streaming.pool_accumulate_(hidden, mask, mode, slot, sums, unit_sums, backend=self.requested)

    def pool(self, hidden, mask, mode) -> torch.Tensor:
        """``cape_kernels.pooled_tap``: pooled rows [B, D] (the pooling of ``pool_accumulate_``)."""
        import cape_kernels

        return cape_kernels.pooled_tap(hidden, mask, mode, backend=self.requested)

    def count_pairs_below(self, A, B, threshold, **groups) -> torch.Tensor:
        """``cape_kernels.count_pairs_below``: [G, G] int64 counts of pairs below ``threshold``."""
        from cape_kernels import streaming

        return streaming.count_pairs_below(A, B, threshold, backend=self.requested, **groups)


def streaming_ops(backend: Optional[str], device: torch.device) -> StreamingOps:
    """The streaming ops for tensors on ``device`` with ``backend`` (None: the device's default)."""
    from cape_kernels import streaming

    return StreamingOps(backend, streaming.resolve_backend(backend, device))


# ----------------------------------------------------------------------------------- reservoir
def reservoir_slots(rng: np.random.Generator, seen: int, n_new: int, capacity: int) -> np.ndarray:
    """Algorithm R for ``n_new`` items arriving after ``seen``: int64[n_new], the reservoir slot
    each new item overwrites, or -1.  When two items of one call hit the same slot only the later
    one keeps it (the earlier is set to -1), so the writes can be done in any order."""
    out = np.full(n_new, -1, dtype=np.int64)
    for k in range(n_new):
        i = seen + k                      # 0-based index of this item in its stream
        if i < capacity:
            out[k] = i
        else:
            j = int(rng.integers(0, i + 1))
            if j < capacity:
                out[k] = j
    if n_new:
        last = {}
        for k, s in enumerate(out):
            if s >= 0:
                if s in last:
                    out[last[s]] = -1
                last[s] = k
    return out


@dataclass
class PairState:
    """Unit vectors kept for the fraction of pairs below the threshold (docs/METHODS.md §3.7).

    ``mode`` "exact": ``res[s]`` [L, n_s, D] holds every prompt of set s seen so far (``fill[s]``
    rows, compact dtype float32); each batch's new rows are counted against the other set's
    resident rows during the pass (``update``), into ``below`` [L, G, G].  "reservoir": ``res[s]``
    [L, capacity_s, D] is a uniform sample of set s (Algorithm R, seeded; the slot choices are made
    on the host from counts alone), counted once at the end (``finish``).  ``groups[s]``: the block
    of each resident row (-1 = empty)."""

    mode: str
    capacity: tuple[int, int]
    res: list[torch.Tensor]
    groups: list[torch.Tensor]
    below: torch.Tensor
    n_groups: int
    fill: list[int] = field(default_factory=lambda: [0, 0])
    seen: list[int] = field(default_factory=lambda: [0, 0])
    rng: Optional[np.random.Generator] = None
    threshold: float = -0.5

    @staticmethod
    def bytes_needed(n_layers: int, n: int, d: int) -> int:
        return 4 * n_layers * n * d

    @classmethod
    def create(cls, n_layers: int, d: int, n_r: int, n_t: int, n_groups: int, budget_bytes: int, seed: int,
               device, threshold: float = -0.5, budget_layers: Optional[int] = None) -> "PairState":
        """Exact when both sets' unit vectors fit in ``budget_bytes``, else a reservoir of
        max(2, budget / (2 L D 4 bytes)) rows per set.  ``budget_layers``: the L of that rule when
        this state holds only some of the model's layers (one state per device: every device makes
        the same choice, and the same reservoir draws from the same seed)."""
        L, G = int(n_layers), int(n_groups)
        L_all = L if budget_layers is None else int(budget_layers)
        below = torch.zeros((L, G, G), dtype=torch.int64, device=device)
        if cls.bytes_needed(L_all, n_r + n_t, d) <= budget_bytes:
            cap, mode, rng = (n_r, n_t), "exact", None
        else:
            M = max(2, int(budget_bytes) // (2 * cls.bytes_needed(L_all, 1, d)))
            cap, mode = (min(M, n_r), min(M, n_t)), "reservoir"
            rng = np.random.default_rng([int(seed), 0x7E5E])
        return cls(mode, cap, [torch.zeros((L, c, d), dtype=torch.float32, device=device) for c in cap],
                   [torch.full((c,), -1, dtype=torch.int64, device=device) for c in cap], below, G,
                   rng=rng, threshold=float(threshold))

    def prepare(self, gR: np.ndarray, gT: np.ndarray, to_dev) -> dict:
        """Host side of one batch: the blocks of its R rows and T rows (in batch order) -> the
        device indices ``update`` needs (no device data is read)."""
        ctx: dict = {"nR": len(gR), "nT": len(gT)}
        if self.mode == "exact":
            ctx["gR"], ctx["gT"] = to_dev(gR), to_dev(gT)
            ctx["fill"] = tuple(self.fill)
            for s, g in ((0, ctx["gR"]), (1, ctx["gT"])):
                if len(g):
                    self.groups[s][self.fill[s]:self.fill[s] + len(g)] = g
            self.fill[0] += len(gR)
            self.fill[1] += len(gT)
        else:
            moves = []
            for s, g in ((0, gR), (1, gT)):
                slots = reservoir_slots(self.rng, self.seen[s], len(g), self.capacity[s])
                self.seen[s] += len(g)
                keep = np.flatnonzero(slots >= 0)
                if len(keep):
                    src, dst = to_dev(keep), to_dev(slots[keep])
                    self.groups[s].index_copy_(0, dst, to_dev(g[keep]))
                    moves.append((src, dst))
                else:
                    moves.append((None, None))
            ctx["moves"] = moves
        return ctx

    def update(self, i: int, uR: torch.Tensor, uT: torch.Tensor, ctx: dict, count_below) -> None:
        """Device side at layer i: uR [nR, D], uT [nT, D] unit vectors of the batch's R / T rows;
        ``count_below``: ``cape_kernels.count_pairs_below`` (or a ``StreamingOps``' bound one)."""
        G, thr = self.n_groups, self.threshold
        nR, nT = ctx["nR"], ctx["nT"]
        if self.mode == "exact":
            fr, ft = ctx["fill"]
            resR, resT = self.res[0][i], self.res[1][i]
            if nT:
                resT[ft:ft + nT] = uT
            if nR and ft + nT:
                self.below[i] += count_below(uR, resT[:ft + nT], thr, a_groups=ctx["gR"],
                                             b_groups=self.groups[1][:ft + nT], n_groups=G)
            if nT and fr:
                self.below[i] += count_below(resR[:fr], uT, thr, a_groups=self.groups[0][:fr],
                                             b_groups=ctx["gT"], n_groups=G)
            if nR:
                resR[fr:fr + nR] = uR
        else:
            for s, (src, dst) in enumerate(ctx["moves"]):
                if src is not None:
                    self.res[s][i].index_copy_(0, dst, (uR if s == 0 else uT).index_select(0, src))

    def finish(self, l: int, count_below, n_r: int, n_t: int) -> tuple[np.ndarray, float, np.ndarray]:
        """(below [G, G], standard error of the fraction, rows per set and block [2, G]) at layer l.

        Exact: the counts of the pass, SE 0.  Reservoir: the two samples counted against each other;
        the fraction is a two-sample U-statistic, SE^2 = (1 - m_R/n_R) s_row^2 / m_R + (1 - m_T/n_T)
        s_col^2 / m_T + f (1 - f) / (m_R m_T), with s_row^2 the variance over sampled r of the share of
        sampled t below the threshold (and s_col^2 likewise), f the estimate."""
        G = self.n_groups
        pc = np.zeros((2, G), dtype=np.int64)
        for s in (0, 1):
            g = self.groups[s].cpu().numpy()
            np.add.at(pc[s], g[g >= 0], 1)
        if self.mode == "exact":
            return self.below[l].cpu().numpy(), 0.0, pc
        A, B = self.res[0][l], self.res[1][l]
        below = count_below(A, B, self.threshold, a_groups=self.groups[0], b_groups=self.groups[1], n_groups=G)
        m_r, m_t = A.shape[0], B.shape[0]
        row = torch.zeros(m_r, dtype=torch.float64, device=A.device)
        col = torch.zeros(m_t, dtype=torch.float64, device=A.device)
        for i0 in range(0, m_r, 1024):
            c = (A[i0:i0 + 1024] @ B.T).clamp(-1, 1) < self.threshold
            row[i0:i0 + 1024] = c.sum(1, dtype=torch.float64)
            col += c.sum(0, dtype=torch.float64)
        row, col = (row / m_t).cpu().numpy(), (col / m_r).cpu().numpy()
        f = float(row.mean())
        var = ((1 - m_r / n_r) * (row.var(ddof=1) if m_r > 1 else 0.0) / m_r
               + (1 - m_t / n_t) * (col.var(ddof=1) if m_t > 1 else 0.0) / m_t
               + f * (1 - f) / (m_r * m_t))
        return below.cpu().numpy(), float(math.sqrt(max(var, 0.0))), pc


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm in float32 (zero rows stay zero), no host synchronisation."""
    n = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return torch.where(n > 0, x / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(x)).to(torch.float32)


#: pooled rows staged on the device before one update of the second moments: an update reads and
#: writes the whole [L, k, k] m2, so B rows per update cost k^2 / B of that traffic per row
MOMENT_STAGE_ROWS = 128


@dataclass
class MomentStage:
    """Rows y [L, B, k] of the batches, staged until ``rows`` of them are there, then added into the
    moments by one :func:`update_moments` (the shift still comes from the first batch alone).  The
    moments are complete only after :meth:`flush`.  ``fill`` is a host count: no synchronisation."""

    rows: int = MOMENT_STAGE_ROWS
    buf: Optional[torch.Tensor] = None
    fill: int = 0

    def add(self, y: torch.Tensor, shift: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, first: bool) -> None:
        if first:
            set_shift(y, shift)
        n = y.shape[-2]
        if n >= self.rows:
            update_moments(y, shift, m1, m2, False)
            return
        if self.fill + n > self.rows:
            self.flush(shift, m1, m2)
        if self.buf is None:
            self.buf = torch.empty(y.shape[:-2] + (self.rows, y.shape[-1]), dtype=y.dtype, device=y.device)
        self.buf[..., self.fill:self.fill + n, :].copy_(y)
        self.fill += n

    def flush(self, shift: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor) -> None:
        if self.fill:
            update_moments(self.buf[..., :self.fill, :], shift, m1, m2, False)
            self.fill = 0


@dataclass
class StreamState:
    """Every tensor of the streaming state (see the module docstring)."""

    G: int
    layer_sums: Optional[torch.Tensor] = None
    layer_units: Optional[torch.Tensor] = None
    head_sums: Optional[torch.Tensor] = None
    final_sums: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None          # [L, k]
    m1: Optional[torch.Tensor] = None
    m2: Optional[torch.Tensor] = None
    omega: Optional[torch.Tensor] = None          # [D, k] sketch (sketch mode)
    final_shift: Optional[torch.Tensor] = None
    final_m1: Optional[torch.Tensor] = None
    final_m2: Optional[torch.Tensor] = None
    pairs: Optional[PairState] = None
    stage: MomentStage = field(default_factory=MomentStage)

    def tensors(self) -> list[torch.Tensor]:
        out = [t for t in (self.layer_sums, self.layer_units, self.head_sums, self.final_sums, self.shift,
                           self.m1, self.m2, self.omega, self.final_shift, self.final_m1, self.final_m2,
                           self.stage.buf) if t is not None]
        if self.pairs is not None:
            out += list(self.pairs.res) + list(self.pairs.groups) + [self.pairs.below]
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the device state (what does not depend on the number of prompts, plus the pair
        state bounded by the budget)."""
        return int(sum(t.numel() * t.element_size() for t in self.tensors()))


def set_shift(x: torch.Tensor, shift: torch.Tensor) -> None:
    """The moments' shift c: the mean of the first batch's rows x [..., B, k] (in shift's dtype)."""
    shift.copy_(x.to(shift.dtype).mean(-2))


def update_moments(x: torch.Tensor, shift: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor,
                   first: bool) -> None:
    """m1 += sum (x - c), m2 += (x - c)^T (x - c) for rows x [B, k] (c = shift [k], set from the
    first batch's mean when ``first``); or for L layers at once: x [L, B, k], shift and m1 [L, k],
    m2 [L, k, k] (one batched product).  In the dtype of m1, no host synchronisation."""
    x = x.to(m1.dtype)
    if first:
        set_shift(x, shift)
    xc = x - shift.unsqueeze(-2)
    m1.add_(xc.sum(-2))
    if xc.dim() == 2:
        m2.addmm_(xc.T, xc)
    else:
        m2.baddbmm_(xc.transpose(1, 2), xc)


def covariance(m1: torch.Tensor, m2: torch.Tensor, n: int) -> torch.Tensor:
    """Centred scatter sum (x - mean)(x - mean)^T from shifted moments m1 [..., k], m2 [..., k, k]
    (float64 on the host; leading axes, e.g. layers, at once)."""
    m1, m2 = m1.to("cpu", torch.float64), m2.to("cpu", torch.float64)
    C = m2 - m1.unsqueeze(-1) * m1.unsqueeze(-2) / max(n, 1)
    return (C + C.transpose(-1, -2)) / 2


def sketch_matrix(d: int, k: int, seed: int, device, dtype=torch.float64) -> torch.Tensor:
    """Omega [d, k], entries N(0, 1/k), seeded (generated on the CPU, then moved)."""
    g = torch.Generator().manual_seed(int(seed) + 0x5EED)
    return (torch.randn(d, k, generator=g, dtype=torch.float64) / math.sqrt(k)).to(device=device, dtype=dtype)


def sketch_participation_ratio(A: np.ndarray, groups: int = 8) -> tuple[float, float]:
    """d_rep and its standard error from the sketched scatter A = Omega^T C Omega [k, k].

    With Omega's entries N(0, 1/k): E[tr A] = tr C, E[(tr A)^2] = (tr C)^2 + 2 ||C||^2 / k and
    E[||A||_F^2] = (1 + 1/k) ||C||^2 + (tr C)^2 / k, solved for (tr C)^2 and ||C||_F^2
    (docs/METHODS.md §3.6); the standard error is the delete-a-group jackknife over ``groups``
    disjoint groups of sketch columns (each leave-out is itself a sketch of k (groups-1)/groups
    columns, rescaled)."""
    A = np.asarray(A, dtype=np.float64)
    k = A.shape[0]

    def est(cols):
        kk = len(cols)
        S = A[np.ix_(cols, cols)] * (k / kk)          # a sketch with kk columns: entries N(0, 1/kk)
        a2, b = np.trace(S) ** 2, float((S * S).sum())
        F = (b - a2 / kk) / (1 + 1 / kk - 2 / kk ** 2)
        T2 = a2 - 2 * F / kk
        return T2 / F if F > 0 else math.nan

    full = est(np.arange(k))
    J = max(2, min(groups, k // 4))
    parts = np.array_split(np.arange(k), J)
    jack = np.array([est(np.concatenate([p for i, p in enumerate(parts) if i != j])) for j in range(J)])
    se = float(np.sqrt((J - 1) / J * np.sum((jack - jack.mean()) ** 2))) if np.all(np.isfinite(jack)) else math.nan
    return float(full), se
