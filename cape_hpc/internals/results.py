"""The result of ``extract_internals`` (docs/METHODS.md §3), torch-free.

This module imports numpy and ``cape_hpc.schema`` only, so the report can read stored internals
(``InternalsResult.from_tree``) without importing torch.  Stored under ``/internals/<model>``
(``InternalsResult.group``):

- ``layers``: one :class:`LayerRow` per decoder block (residual stream after the block);
- ``heads``: one :class:`HeadRow` per (layer, head) (attention output before the output projection);
- ``head_summary``: :class:`HeadSummary` of the per-head couplings;
- ``bottleneck``: :class:`Bottleneck` (final hidden state, logits, the top-k PCA curve as
  :class:`PcaRow` rows).

A statistic whose tap was not extracted is NaN (rows are still present for every layer / head),
so a stored result always has the same shape; ``taps`` says what was measured.  The pooled vectors
are not part of the result (``extract_internals_pooled`` returns them beside it, for tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cape_hpc.schema import Provenance, Result

__all__ = ["InternalsResult", "LayerRow", "HeadRow", "HeadSummary", "Bottleneck", "PcaRow", "store_name",
           "TAPS", "POOLINGS", "COMPETING_THRESHOLD", "BOTTLENECK_CAVEAT"]

TAPS = ("residual", "heads", "final", "logits")
POOLINGS = ("last", "mean")
#: a pair of prompts "competes" below this cosine (docs/METHODS.md §3)
COMPETING_THRESHOLD = -0.5
BOTTLENECK_CAVEAT = ("k = 1 gives +-1 by construction (two scalars on one axis); subspaces beyond "
                     "k = (number of prompts - 1) cannot change the value (the centred stack has at "
                     "most that rank).")


def store_name(model: str) -> str:
    """An HDF5-safe group name for a model spec (slashes of HF ids become '|')."""
    return str(model).replace("/", "|")


@dataclass
class LayerRow:
    """Statistics of one decoder block's output (docs/METHODS.md §3.4; d_rep §3.6)."""

    layer: int
    coupling: float               # cos(mean R, mean T)
    pairwise_mean: float          # mean of the |R| x |T| cosines
    competing_fraction: float     # fraction of pairs with cos < -0.5
    competes: bool                # competing_fraction > 0.5
    d_rep: float                  # participation ratio of the PCA eigenvalues of the R and T stack


@dataclass
class HeadRow:
    """cos(mean R, mean T) of one attention head's output, before the output projection (docs/METHODS.md §3.4)."""

    layer: int
    head: int
    coupling: float


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
    def head_coupling(self) -> np.ndarray:
        """[n_layers, n_heads] (NaN where not measured)."""
        out = np.full((self.n_layers, self.n_heads), np.nan)
        for r in self.heads:
            out[r.layer, r.head] = r.coupling
        return out
