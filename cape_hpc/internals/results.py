"""The result of ``extract_internals`` (docs/METHODS.md §3), torch-free.

This module imports numpy and ``cape_hpc.schema`` only, so the report can read stored internals
(``InternalsResult.from_tree``) without importing torch.  Stored under ``/internals/<model>``
(``InternalsResult.group``):

- ``layers``: one :class:`LayerRow` per decoder block (residual stream after the block);
- ``heads``: one :class:`HeadRow` per (layer, head) (attention output before the output projection);
- ``head_summary``: :class:`HeadSummary` of the per-head couplings;
- ``bottleneck``: :class:`Bottleneck` (final hidden state, logits, the top-k PCA curve as
  :class:`PcaRow` rows);
- ``blocks``: :class:`BlockStats`, the per-prompt-block sufficient statistics (docs/METHODS.md §3.8):
  everything a block bootstrap, or a later analysis across models (§3.9), needs without the
  per-prompt vectors.  Each layer and head row carries its block-bootstrap interval.

A statistic whose tap was not extracted is NaN (rows are still present for every layer / head),
so a stored result always has the same shape; ``taps`` says what was measured.  The pooled vectors
are not part of the result (``keep_pooled`` writes them to an HDF5 file of their own).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cape_hpc.schema import ConfidenceInterval, Provenance, Result

__all__ = ["InternalsResult", "LayerRow", "HeadRow", "HeadSummary", "Bottleneck", "PcaRow", "BlockStats",
           "store_name", "TAPS", "POOLINGS", "PAIRS_MODES", "D_REP_MODES", "COMPETING_THRESHOLD",
           "BOTTLENECK_CAVEAT"]

TAPS = ("residual", "heads", "final", "logits")
POOLINGS = ("last", "mean")
#: how the fraction of pairs below the threshold was counted (docs/METHODS.md §3.7)
PAIRS_MODES = ("exact", "reservoir")
#: how d_rep's second moments were kept (docs/METHODS.md §3.6, §3.7)
D_REP_MODES = ("exact", "sketch")
#: a pair of prompts "competes" below this cosine (docs/METHODS.md §3)
COMPETING_THRESHOLD = -0.5
BOTTLENECK_CAVEAT = ("k = 1 gives +-1 by construction (two scalars on one axis); subspaces beyond "
                     "k = (number of prompts - 1) cannot change the value (the centred stack has at "
                     "most that rank).")


def store_name(model: str) -> str:
    """An HDF5-safe group name for a model spec (slashes of HF ids become '|')."""
    return str(model).replace("/", "|")


def _no_ci() -> ConfidenceInterval:
    return ConfidenceInterval.undefined(0.95)


@dataclass
class LayerRow:
    """Statistics of one decoder block's output (docs/METHODS.md §3.4; d_rep §3.6; intervals §3.8).

    ``*_ci``: block-bootstrap percentile intervals over prompt blocks (NaN bounds when not
    computed); ``ci_n_valid``: how many of the resamples were valid (had prompts of both sets);
    ``competing_fraction_se``: the standard error of a reservoir estimate (0 in exact mode, NaN when
    not measured); ``d_rep_se``: the sketch's standard error of d_rep (0 exact, NaN not measured)."""

    layer: int
    coupling: float               # cos(mean R, mean T)
    pairwise_mean: float          # mean of the |R| x |T| cosines
    competing_fraction: float     # fraction of pairs with cos < -0.5
    competes: bool                # competing_fraction > 0.5
    d_rep: float                  # participation ratio of the PCA eigenvalues of the R and T stack
    coupling_ci: ConfidenceInterval = field(default_factory=_no_ci)
    pairwise_mean_ci: ConfidenceInterval = field(default_factory=_no_ci)
    competing_fraction_ci: ConfidenceInterval = field(default_factory=_no_ci)
    ci_n_valid: int = 0
    competing_fraction_se: float = math.nan
    d_rep_se: float = math.nan


@dataclass
class HeadRow:
    """cos(mean R, mean T) of one attention head's output, before the output projection (docs/METHODS.md §3.4),
    with its block-bootstrap interval (§3.8)."""

    layer: int
    head: int
    coupling: float
    coupling_ci: ConfidenceInterval = field(default_factory=_no_ci)
    ci_n_valid: int = 0


def _empty(*shape, dtype=np.float64) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class BlockStats:
    """Per-prompt-block sufficient statistics (docs/METHODS.md §3.8).  Index 0 of a set axis is R,
    1 is T; ``G = n_blocks``.  Arrays of a tap that was not extracted have a zero-length axis.

    - ``counts`` [2, G] int64: prompts per set and block;
    - ``layer_sums``, ``layer_unit_sums`` [L, 2, G, D] float64: sums of the pooled residual vectors
      and of their unit vectors;
    - ``pair_counts`` [2, G] int64: the rows per set and block that entered the pair count (all
      prompts in exact mode, the reservoir's members in reservoir mode);
    - ``pairs_below`` [L, G, G] int64: pairs (r in block g, t in block h) with cos < threshold
      among those rows;
    - ``head_sums`` [L, 2, G, H * head_dim] float64; ``final_sums`` [2, G, D] float64.
    """

    n_blocks: int = 0
    seed: int = 0
    n_nonempty: int = 0
    counts: np.ndarray = field(default_factory=lambda: _empty(2, 0, dtype=np.int64))
    layer_sums: np.ndarray = field(default_factory=lambda: _empty(0, 2, 0, 0))
    layer_unit_sums: np.ndarray = field(default_factory=lambda: _empty(0, 2, 0, 0))
    pair_counts: np.ndarray = field(default_factory=lambda: _empty(2, 0, dtype=np.int64))
    pairs_below: np.ndarray = field(default_factory=lambda: _empty(0, 0, 0, dtype=np.int64))
    head_sums: np.ndarray = field(default_factory=lambda: _empty(0, 2, 0, 0))
    final_sums: np.ndarray = field(default_factory=lambda: _empty(2, 0, 0))
    n_resamples: int = 0          # block-bootstrap resamples behind the rows' intervals
    level: float = 0.95


@dataclass
class HeadSummary:
    """Summary of the per-head couplings; NaN (counts 0) when the heads were not tapped."""

    n_heads_total: int = 0
    cooperative_share: float = math.nan   # share of heads with coupling > 0
    competing_count: int = 0              # heads with coupling < -0.5
    near_zero_share: float = math.nan     # share with |coupling| < 0.1
    net: float = math.nan                 # mean coupling
    median: float = math.nan
    early: float = math.nan               # mean over the first third of the layers
    mid: float = math.nan
    late: float = math.nan

    @classmethod
    def of(cls, c: np.ndarray) -> "HeadSummary":
        flat = np.asarray(c, float).ravel()
        thirds = np.array_split(np.arange(c.shape[0]), 3)
        parts = [float(np.mean(c[idx])) if len(idx) else math.nan for idx in thirds]
        return cls(n_heads_total=int(flat.size), cooperative_share=float(np.mean(flat > 0)),
                   competing_count=int(np.sum(flat < COMPETING_THRESHOLD)),
                   near_zero_share=float(np.mean(np.abs(flat) < 0.1)), net=float(np.mean(flat)),
                   median=float(np.median(flat)), early=parts[0], mid=parts[1], late=parts[2])


@dataclass
class PcaRow:
    """cos(P_k m_R, P_k m_T) in the top-k principal subspace of the final hidden states."""

    k: int
    coupling: float


@dataclass
class Bottleneck:
    """The projection bottleneck (docs/METHODS.md §3.5): coupling of the final hidden state, of the
    logits, and in the top-k PCA subspaces.  ``measured`` is False when the final tap was off."""

    measured: bool = False
    hidden: float = math.nan
    logits: float = math.nan
    pca: list[PcaRow] = field(default_factory=list)
    caveat: str = ""
    note: str = ""

    @property
    def pca_k(self) -> np.ndarray:
        return np.array([r.k for r in self.pca], dtype=np.int64)

    @property
    def pca_coupling(self) -> np.ndarray:
        return np.array([r.coupling for r in self.pca], dtype=float)


@dataclass
class InternalsResult(Result):
    """Per-layer and per-head couplings, the projection bottleneck and d_rep of one model."""

    model: str
    source: str
    revision: str
    dtype: str
    backend: str                  # the kernel backend that ran (resolved)
    pooling: str
    taps: list[str]
    set_r: str
    set_t: str
    n_prompts: int
    n_r: int
    n_t: int
    n_truncated: int
    prompt_set_sha256: str
    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int
    layers: list[LayerRow]
    heads: list[HeadRow]
    head_summary: HeadSummary
    bottleneck: Bottleneck
    provenance: Provenance
    complete: bool = True
    blocks: BlockStats = field(default_factory=BlockStats)
    pairs_mode: str = "exact"     # "exact" or "reservoir" (docs/METHODS.md §3.7)
    reservoir_size: int = 0       # per set, in reservoir mode
    d_rep_mode: str = "exact"     # "exact" or "sketch" (docs/METHODS.md §3.6)
    d_rep_sketch: int = 0         # sketch size k in sketch mode
    state_bytes: int = 0          # bytes of the streaming state on the device (docs/METHODS.md §3.7)

    # ---------------------------------------------------------------- views (not stored)
    @property
    def group(self) -> str:
        return f"/internals/{store_name(self.model)}"

    @property
    def layer_coupling(self) -> np.ndarray:
        return np.array([r.coupling for r in self.layers], dtype=float)

    @property
    def layer_pairwise_mean(self) -> np.ndarray:
        return np.array([r.pairwise_mean for r in self.layers], dtype=float)

    @property
    def layer_competing_fraction(self) -> np.ndarray:
        return np.array([r.competing_fraction for r in self.layers], dtype=float)

    @property
    def layer_competes(self) -> np.ndarray:
        return np.array([r.competes for r in self.layers], dtype=bool)

    @property
    def d_rep(self) -> np.ndarray:
        return np.array([r.d_rep for r in self.layers], dtype=float)

    @property
    def layer_competing_fraction_se(self) -> np.ndarray:
        return np.array([r.competing_fraction_se for r in self.layers], dtype=float)

    @property
    def layer_coupling_ci(self) -> np.ndarray:
        """[n_layers, 2] block-bootstrap (low, high)."""
        return np.array([(r.coupling_ci.low, r.coupling_ci.high) for r in self.layers], dtype=float).reshape(-1, 2)

    @property
    def head_coupling(self) -> np.ndarray:
        """[n_layers, n_heads] (NaN where not measured)."""
        out = np.full((self.n_layers, self.n_heads), np.nan)
        for r in self.heads:
            out[r.layer, r.head] = r.coupling
        return out
