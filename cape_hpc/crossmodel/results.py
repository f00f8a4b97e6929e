"""Results of the cross-model internals analysis (docs/METHODS.md §3.10), torch-free.

Imports numpy and ``cape_hpc.schema`` only, so the report reads a stored ``/crossmodel`` group
(:class:`CrossModelResult`) without the analysis code.

- :class:`ModelRow`: one model of the cross-model table (family, parameter count and where it came
  from, the layer / head / d_rep / bottleneck summaries, each with its block-bootstrap interval);
- :class:`FamilyLadder`: one family's ladder of internal coupling against log10 N and its slope;
- :class:`InternalGamma`: the internal gamma between neighbouring sizes of a family;
- :class:`InternalNc`: N_c from the internal ladder, per family and estimator;
- :class:`InternalFixedPoint`: the fixed point of the internal coupling ladder;
- :class:`CompetingHeads`: models with zero competing heads across models, with a Wilson interval;
- :class:`PhaseRow` / :class:`PhaseAgreement`: the internal vs the benchmark-level phase;
- :class:`GenerationComparison`: two generations of a lineage at matched size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from cape_hpc.schema import BootstrapSummary, ConfidenceInterval, Provenance, Result

__all__ = ["ModelRow", "FamilyLadder", "InternalGamma", "InternalNc", "InternalFixedPoint", "CompetingHeads",
           "PhaseRow", "PhaseAgreement", "GenerationComparison", "CrossModelResult", "QUANTITIES",
           "PARAMS_SOURCES", "GROUP"]

#: the internal coupling a ladder is made of (docs/METHODS.md §3.10)
QUANTITIES = ("final", "mean", "min", "head_net")
#: where a model's parameter count came from
PARAMS_SOURCES = ("spec", "scores", "counted", "")
#: where ``cape crossmodel --out`` stores the result
GROUP = "/crossmodel"


def _no_ci() -> ConfidenceInterval:
    return ConfidenceInterval.undefined(0.95)


def _no_boot() -> BootstrapSummary:
    return BootstrapSummary.empty((0.95, 0.68))


@dataclass
class ModelRow:
    """One model of the cross-model table.  Every ``*_ci`` is a block-bootstrap percentile interval
    over prompt blocks (docs/METHODS.md §3.8, §3.10); undefined (NaN bounds) where the stored block
    statistics do not determine it (d_rep, logits: their per-block moments are not kept)."""

    model: str
    family: str
    params: float                    # parameter count (NaN when unknown)
    params_source: str               # 'spec' | 'scores' | 'counted' | '' (unknown)
    n_layers: int
    d_model: int
    n_heads: int
    input: str                       # the file and group the result was read from
    final_coupling: float            # coupling of the last decoder block
    final_coupling_ci: ConfidenceInterval = field(default_factory=_no_ci)
    first_coupling: float = math.nan  # coupling of the first decoder block
    first_coupling_ci: ConfidenceInterval = field(default_factory=_no_ci)
    mean_coupling: float = math.nan  # mean over the layers
    mean_coupling_ci: ConfidenceInterval = field(default_factory=_no_ci)
    min_coupling: float = math.nan   # the smallest layer coupling
    min_coupling_ci: ConfidenceInterval = field(default_factory=_no_ci)
    min_layer: int = -1              # where it is (0-based)
    competing_layers: int = 0        # layers whose fraction of pairs below -0.5 exceeds 0.5
    competing_layers_ci: ConfidenceInterval = field(default_factory=_no_ci)
    head_net: float = math.nan       # mean per-head coupling
    head_net_ci: ConfidenceInterval = field(default_factory=_no_ci)
    head_median: float = math.nan
    head_median_ci: ConfidenceInterval = field(default_factory=_no_ci)
    head_cooperative_share: float = math.nan
    head_cooperative_share_ci: ConfidenceInterval = field(default_factory=_no_ci)
    head_competing_count: int = 0    # heads with coupling < -0.5
    head_competing_count_ci: ConfidenceInterval = field(default_factory=_no_ci)
    n_heads_total: int = 0           # 0 when the heads were not tapped
    d_rep_first: float = math.nan
    d_rep_last: float = math.nan
    d_rep_mean: float = math.nan
    d_rep_max: float = math.nan
    d_rep_max_layer: int = -1
    bottleneck_hidden: float = math.nan       # coupling of the final hidden state
    bottleneck_hidden_ci: ConfidenceInterval = field(default_factory=_no_ci)
    bottleneck_logits: float = math.nan
    projection_gain: float = math.nan         # logits - hidden
    n_valid: int = 0                 # valid block resamples behind the intervals
    note: str = ""


@dataclass
class FamilyLadder:
    """One family's ladder: the chosen internal coupling against x = log10 N (models sorted by N).
    ``slope`` is the least-squares slope per decade; ``slope_boot`` its two-level bootstrap."""

    family: str
    quantity: str
    n_models: int
    models: list[str]
    x: list[float]
    coupling: list[float]
    coupling_low: list[float]        # block-bootstrap bounds of each model's value
    coupling_high: list[float]
    slope: float
    intercept: float
    r: float                         # Pearson r of coupling and log10 N
    slope_boot: BootstrapSummary = field(default_factory=_no_boot)
    reason: str = ""                 # why no estimate ('' when estimated)
    note: str = ""                   # models left out, models-only bootstrap


@dataclass
class InternalGamma:
    """Internal gamma between neighbouring sizes: d(coupling) / d(log10 N) (the gamma rule of
    docs/METHODS.md §2.1 with B1 = log10 N and B2 = the internal coupling), attached to the larger
    model; ``gamma_ci``: block-bootstrap interval (the same prompt blocks in both models)."""

    family: str
    model: str
    prev_model: str
    n: float
    prev_n: float
    x_mid: float
    d_coupling: float
    gamma: float
    gamma_ci: ConfidenceInterval
    phase: str                       # tax | transition | bonus | '' (undefined)
    reason: str


@dataclass
class InternalNc:
    """N_c from a family's internal ladder by one estimator of docs/METHODS.md §2.4 (applied with
    B1 = log10 N, B2 = the internal coupling), with the two-level bootstrap of §3.10."""

    family: str
    estimator: str
    n_models: int
    log10_nc: float
    nc: float
    reason: str
    extrapolated: bool
    bootstrap: BootstrapSummary
    fit_range: list[float]


@dataclass
class InternalFixedPoint:
    """d(coupling)/d(log10 N) = a * coupling + b on a family's internal ladder (docs/METHODS.md
    §2.10 applied to the internal coupling); gamma* = -b / a, with the two-level bootstrap."""

    family: str
    n_models: int
    a: float
    b: float
    gamma_star: float
    stability: str
    n_points: int
    at: str
    reason: str
    bootstrap: BootstrapSummary


@dataclass
class CompetingHeads:
    """Models with zero competing heads (per-head coupling < -0.5) among the models whose heads were
    measured, with the Wilson interval of the share."""

    n_models: int
    n_zero: int
    share: float
    ci: ConfidenceInterval
    with_competing: list[str]        # models that have competing heads
    not_measured: list[str]          # models without a head tap


@dataclass
class PhaseRow:
    """The internal phase (of the internal gamma attached to the model) beside the benchmark-level
    phase (docs/METHODS.md §2.2) of a model that has both."""

    model: str
    family: str
    internal_gamma: float
    internal_phase: str
    benchmark_gamma: float
    benchmark_phase: str
    agree: bool
    reason: str


@dataclass
class PhaseAgreement:
    n_both: int                      # models with both phases defined
    n_agree: int
    share: float
    ci: ConfidenceInterval           # Wilson
    note: str = ""


@dataclass
class GenerationComparison:
    """Two generations of a lineage at matched size: the difference of their internal couplings with
    a paired block-bootstrap interval (the same prompt blocks in both models)."""

    lineage: str
    family_a: str
    model_a: str
    family_b: str
    model_b: str
    params_a: float
    params_b: float
    d_log10_n: float
    coupling_a: float
    coupling_b: float
    difference: float                # b - a
    difference_ci: ConfidenceInterval
    head_cooperative_share_a: float
    head_cooperative_share_b: float


@dataclass
class CrossModelResult(Result):
    """The cross-model table and the per-family analyses (docs/METHODS.md §3.10)."""

    quantity: str
    set_r: str
    set_t: str
    prompt_set_sha256: str
    pooling: str
    n_blocks: int
    block_seed: int
    rows: list[ModelRow]
    ladders: list[FamilyLadder]
    gammas: list[InternalGamma]
    nc: list[InternalNc]
    fixed_points: list[InternalFixedPoint]
    heads: CompetingHeads
    phases: list[PhaseRow]
    phase_agreement: PhaseAgreement
    generations: list[GenerationComparison]
    inputs: list[str]
    provenance: Provenance

    def row(self, model: str) -> ModelRow | None:
        for r in self.rows:
            if r.model == model:
                return r
        return None

    def families(self) -> dict[str, list[ModelRow]]:
        out: dict[str, list[ModelRow]] = {}
        for r in self.rows:
            out.setdefault(r.family, []).append(r)
        return out
