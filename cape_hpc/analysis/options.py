"""The options of the benchmark-level analyses, declared once (``cape_hpc.options``).

Every method's options class is composed of the small pieces below, so that one option (its name,
default, choices, unit and help) is written in one place and a command line that runs several
analyses (``cape analyze``) gets each flag once.

One unit rule for every method (docs/METHODS.md §1): the tables hold percent; ``units`` ("percent" |
"fraction") says in which units every threshold (``min_delta``) is given, every fit is made and
every reported score is expressed; each result stores ``units``.

| class | used by | docs/METHODS.md |
| --- | --- | --- |
| AxisOptions (``--scale``) | every class below that orders models by size | §1 |
| CouplingOptions | ``local_coupling``, ``phases`` (PhasesOptions) | §2.1, §2.2 |
| PopulationOptions | ``population_coupling`` | §2.3 |
| WidthOptions | ``width_normalisation`` | §2.6 |
| HFieldOptions | ``h_field`` | §2.7 |
| IsoclineOptions | ``isocline`` | §2.8 |
| LossOptions | ``loss_law`` | §2.9 |
| FixedPointOptions | ``coupling_fixed_point``, ``fixed_point_xy`` | §2.10 |
| EigenOptions | ``eigen_geometry`` | §2.11 |
| FrontierOptions | ``frontier_fit`` | §2.12 |
| DiagnoseOptions | ``fit_diagnose_model`` | §2.14 |
| NcOptions | ``estimate_nc`` | §2.4 |
| DeffOptions | ``effective_dimension`` | §2.5 |
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from cape_kernels.numpy_resample import ATTACH_CODES, GAMMA_NC_ESTIMATORS

from cape_hpc.errors import OptionError
from cape_hpc.io.scores import SCORE_COLUMNS
from cape_hpc.options import UNITS, Options, option, units_factor
from cape_hpc.stats.options import BootstrapOptions

__all__ = ["ColumnPair", "PairOptions", "AxisOptions", "SCALE_AXIS_NAMES",
           "UnitsOptions", "DeltaOptions", "PhaseThresholds", "CouplingOptions",
           "PhasesOptions", "PermutationOptions", "PopulationOptions", "WidthRef", "WidthOptions",
           "HFieldOptions", "IsoclineRule", "IsoclineOptions", "LossOptions", "FixedPointOptions",
           "EigenOptions", "FrontierOptions", "DiagnoseOptions", "DEFAULT_MIN_DELTA_POINTS",
           "PHASES", "P_METHODS", "RULES", "PANELS", "narrow", "NcOptions", "ESTIMATORS", "ATTACH",
           "DeffOptions", "GROUPS", "MATRICES"]

DEFAULT_MIN_DELTA_POINTS = 0.5  # percentage points (docs/METHODS.md §2.1)
PHASES = ("tax", "transition", "bonus")
P_METHODS = ("analytic", "permutation", "exact")
RULES = ("above-positive", "above-negative")
PANELS = ("base", "frontier")
SCALE_AXIS_NAMES = ("params", "step")   # the scale axes of cape_hpc.analysis.scale
# N_c (§2.4): the kernels' gamma estimators and the quadratic, and where a sign change places N_c in its
# interval (from cape_kernels.numpy_resample, which imports no numba)
ESTIMATORS = (*GAMMA_NC_ESTIMATORS, "quadratic")
ATTACH = tuple(ATTACH_CODES)
GROUPS = (*PHASES, "all")               # d_eff's groups of models (§2.5)
MATRICES = ("covariance", "correlation")


# ----------------------------------------------------------------------------------------------
# pieces
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnPair(Options):
    """A pair of score columns (B1, B2)."""

    pair: tuple[str, str] = option(("HS", "TQA"), help="score columns B1 B2", metavar=("B1", "B2"))

    @property
    def resolved_pair(self) -> tuple[str, str]:
        return self.pair

    @property
    def b1(self) -> str:
        return self.resolved_pair[0]

    @property
    def b2(self) -> str:
        return self.resolved_pair[1]

    def check(self) -> None:
        super().check()
        if self.pair is not None and self.pair[0] == self.pair[1]:
            raise OptionError(f"option '--pair': the two columns must differ, got {self.pair[0]!r} twice")


@dataclass(frozen=True)
class PairOptions(ColumnPair):
    """A pair of score columns (B1, B2) and an optional family subset."""

    families: tuple[str, ...] | None = option(None, help="only these families", metavar="FAMILY")


@dataclass(frozen=True)
class AxisOptions(Options):
    """The scale axis models are ordered and fitted along: log10 of the parameter count N or of the
    training step of a checkpoint table (``cape_hpc.analysis.scale``; docs/METHODS.md §1)."""

    scale_axis: str = option("params", flag="--scale", choices=SCALE_AXIS_NAMES,
                             help="order and fit models along log10 N (params) or log10 of the training "
                                  "step (step: a table of checkpoints with a 'step' column; N_c is then a step)")


@dataclass(frozen=True)
class UnitsOptions(Options):
    """The one unit rule: the units of thresholds, fits and reported scores."""

    units: str = option("percent", help="units of thresholds, fits and reported scores (the tables hold percent)",
                        choices=UNITS)

    @property
    def scale(self) -> float:
        """The factor that converts the tables' percent into ``units``."""
        return units_factor(self.units)


@dataclass(frozen=True)
class DeltaOptions(UnitsOptions):
    """The |dB1| threshold of the local coupling (docs/METHODS.md §2.1), in ``units``."""

    min_delta: float | None = option(None, help="|dB1| below which gamma is undefined, in --units "
                                                f"(none: {DEFAULT_MIN_DELTA_POINTS:g} percentage points)",
                                     minimum=0.0)

    @property
    def min_delta_resolved(self) -> float:
        """min_delta in ``units`` (the 0.5-point default converted)."""
        if self.min_delta is not None:
            return float(self.min_delta)
        return DEFAULT_MIN_DELTA_POINTS * units_factor(self.units)


@dataclass(frozen=True)
class PhaseThresholds(Options):
    """tax if gamma < tax_below, bonus if gamma > bonus_above, transition between (docs/METHODS.md §2.2).

    gamma is a ratio of score changes, so the thresholds do not depend on ``units``."""

    tax_below: float = option(-0.1, help="gamma below this is tax")
    bonus_above: float = option(0.1, help="gamma above this is bonus")

    def check(self) -> None:
        super().check()
        if not self.tax_below <= self.bonus_above:
            raise OptionError(f"options '--tax-below' {self.tax_below:g} and '--bonus-above' "
                              f"{self.bonus_above:g}: tax-below must not exceed bonus-above")


@dataclass(frozen=True)
class PermutationOptions(Options):
    """Seeded random permutations (numpy PCG64) of a control or a permutation p-value."""

    n_permutations: int = option(10000, help="random permutations (of the width control, of a permutation p)",
                                 minimum=1)
    seed: int = option(0, help="seed of the random streams", minimum=0)


@dataclass(frozen=True)
class WidthRef(Options):
    """The reference width of the width factor d_model / d_ref (docs/METHODS.md §2.6)."""

    d_ref: float = option(512.0, help="reference width d_ref of the factor d_model / d_ref", minimum=0.0,
                          exclusive_minimum=True)


@dataclass(frozen=True)
class IsoclineRule(Options):
    """The isocline's calibration and side-to-sign rule (docs/METHODS.md §2.8)."""

    calibration: str = option("OLMo", help="isocline calibration: a family, model[,model...] or the constant k")
    rule: str = option("above-positive", help="side-to-sign rule of the isocline", choices=RULES)

    @property
    def calibration_value(self) -> float | str | list[str]:
        """k (a number), a list of model names (text with commas) or one family/model name."""
        try:
            k = float(self.calibration)
        except ValueError:
            return self.calibration.split(",") if "," in self.calibration else self.calibration
        if not (math.isfinite(k) and k > 0):
            raise OptionError(f"option '--calibration': k must be a positive number, got {self.calibration!r}")
        return k


# ----------------------------------------------------------------------------------------------
# one class per method
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CouplingOptions(PhaseThresholds, DeltaOptions, PairOptions, AxisOptions):
    """The local-coupling rule (docs/METHODS.md §2.1-2.2): gamma = dB2/dB1 and its phase thresholds."""


@dataclass(frozen=True)
class PhasesOptions(CouplingOptions):
    """Phase of every model (docs/METHODS.md §2.2)."""


@dataclass(frozen=True)
class PopulationOptions(PermutationOptions, CouplingOptions):
    """Population coupling (docs/METHODS.md §2.3); the coupling options define the phases of
    ``group_by='phase'``."""

    group_by: str = option("all", help="one row for all models, per family or per phase",
                           choices=("all", "family", "phase"))
    p_method: str = option("analytic", help="p-value besides the analytic one", choices=P_METHODS)


@dataclass(frozen=True)
class WidthOptions(PermutationOptions, WidthRef, PairOptions):
    """Width normalisation and its permuted-width control (docs/METHODS.md §2.6); r does not depend
    on units."""


@dataclass(frozen=True)
class FrontierOptions(UnitsOptions, ColumnPair):
    """Frontier regression (docs/METHODS.md §2.12)."""

    pair: tuple[str, str] = option(("SWE", "GPQA"), help="frontier score columns B1 B2", metavar=("B1", "B2"))
    cohort: str = option("main", help="rows the line is fitted on", choices=("main", "all"))
    min_lab_size: int = option(3, help="labs with at least this many models get a slope and a leave-one-lab-out",
                               minimum=1)


@dataclass(frozen=True)
class HFieldOptions(UnitsOptions, ColumnPair):
    """Residual field h (docs/METHODS.md §2.7); ``panel`` names the defaults of ``pair`` and ``group_by``."""

    panel: str = option("base", help="panel: base (HS TQA by family) or frontier (SWE GPQA by lab)",
                        choices=PANELS)
    pair: tuple[str, str] | None = option(None, help="score columns B1 B2 (none: the panel's pair)",
                                          metavar=("B1", "B2"))
    group_by: str | None = option(None, help="grouping column (none: family on base, lab on frontier)")
    fit_cohort: str = option("all", help="rows the line is fitted on: all, or the main cohort "
                                         "(needs a cohort column)", choices=("all", "main"))

    @property
    def resolved_pair(self) -> tuple[str, str]:
        if self.pair is not None:
            return self.pair
        return (FrontierOptions if self.panel == "frontier" else ColumnPair).default_of("pair")

    @property
    def resolved_group_by(self) -> str:
        if self.group_by is not None:
            return self.group_by
        return "lab" if self.panel == "frontier" else "family"


@dataclass(frozen=True)
class IsoclineOptions(IsoclineRule, DeltaOptions, PairOptions, AxisOptions):
    """Isocline side and sign agreement (docs/METHODS.md §2.8); min_delta in --units like everywhere."""

    exclude_calibration: bool = option(False, help="leave the calibration models' intervals out of the counts")


@dataclass(frozen=True)
class LossOptions(Options):
    """Loss law L = E + A (N / n_scale)^-alpha (docs/METHODS.md §2.9); losses have no percent units."""

    n_scale: float = option(1e9, help="N unit of the fit (parameters)", minimum=0.0, exclusive_minimum=True)
    cv_ddof: int = option(0, help="ddof of the std in the CV of N^alpha (L - E)", choices=(0, 1))
    maxfev: int = option(20000, help="maximum function evaluations of curve_fit", minimum=1)


@dataclass(frozen=True)
class FixedPointOptions(DeltaOptions, ColumnPair, AxisOptions):
    """Coupling fixed point of one family's gamma sequence (docs/METHODS.md §2.10)."""

    family: str = option("OPT", help="the family whose gamma sequence is fitted")
    at: str = option("mid", help="gamma the derivative is regressed on: mean of the two (mid) or the left one",
                     choices=("mid", "left"))


@dataclass(frozen=True)
class EigenOptions(UnitsOptions, AxisOptions):
    """Eigen-geometry of the score space in one family (docs/METHODS.md §2.11)."""

    family: str = option("Pythia", help="the family whose windows are analysed")
    columns: tuple[str, ...] = option(SCORE_COLUMNS, help="score columns of the PCA", metavar="COLUMN")
    matrix: str = option("correlation", help="PCA of the correlation or the covariance",
                         choices=("correlation", "covariance"))
    mode: str = option("cumulative", help="windows: the first k models (cumulative) or --width consecutive ones",
                       choices=("cumulative", "sliding"))
    width: int = option(4, help="models per sliding window", minimum=2)
    min_window: int = option(3, help="smallest cumulative window", minimum=2)


@dataclass(frozen=True)
class DiagnoseOptions(WidthRef, IsoclineRule, PhaseThresholds, DeltaOptions, ColumnPair, AxisOptions):
    """The coefficients of a diagnosis (docs/METHODS.md §2.14)."""


@dataclass(frozen=True)
class NcOptions(CouplingOptions, BootstrapOptions):
    """Options of ``estimate_nc`` (docs/METHODS.md §2.4); ``min_delta`` in ``units``; ``stratify``
    applies to the pooled bootstrap (a per-family bootstrap resamples within its family)."""

    estimator: str = option("quadratic", help="N_c estimator", choices=ESTIMATORS)
    pooled: bool = option(False, help="one estimate over the pooled families instead of one per family")
    window: tuple[float, float] | None = option(None, help="window in log10 N that bounds the quadratic "
                                                "vertex and (when given) the gamma-fit zero (none: the data's "
                                                "log10 N range for the quadratic, unbounded for gamma-fit)",
                                                metavar=("LO", "HI"))
    bootstrap: bool = option(True, help="bootstrap interval of log10 N_c")
    attach: str = option("larger", help="sign-change: N_c at the larger model of the interval, the smaller, "
                                        "or the midpoint", choices=ATTACH)

    def check(self) -> None:
        super().check()
        if self.window is not None and not self.window[0] < self.window[1]:
            raise OptionError(f"option '--window': lo {self.window[0]:g} must be below hi {self.window[1]:g}")


@dataclass(frozen=True)
class DeffOptions(CouplingOptions, BootstrapOptions):
    """Options of ``effective_dimension`` (docs/METHODS.md §2.5); the coupling options define the phases."""

    columns: tuple[str, ...] = option(SCORE_COLUMNS, help="score columns whose covariance is analysed",
                                      metavar="COLUMN")
    matrix: str = option("covariance", help="eigenvalues of the covariance or the correlation", choices=MATRICES)
    groups: tuple[str, ...] = option(GROUPS, help="groups of models (phases and/or all)", choices=GROUPS,
                                     metavar="GROUP")
    bootstrap: bool = option(True, help="bootstrap interval of d_eff")

    def check(self) -> None:
        super().check()
        if len(self.columns) < 2:
            raise OptionError(f"option '--columns': needs at least two columns, got {list(self.columns)}")


def narrow(opts: Options, cls: type, **changes: Any):
    """An options object of ``cls`` built from the fields of ``opts`` that ``cls`` declares (others at
    their defaults), with ``changes`` applied: how one method hands its options to another."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in opts.to_dict().items() if k in names}
    kw.update(changes)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
