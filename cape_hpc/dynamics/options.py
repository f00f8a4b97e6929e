"""The options of ODE discovery, term stability, per-phase fits and size prediction, declared once
(``cape_hpc.options``; docs/METHODS.md §2.13).

One unit rule, as everywhere (``units``: "percent" | "fraction"): the tables hold percent, ``units``
says in which units the ODE is fitted and its threshold and coefficients are given.  Dynamics keeps
its own default, ``fraction`` (the paper's STLSQ threshold 0.1 only makes sense on fractions);
predictions and errors are always reported in percent, like the tables, and every result names its
units.

| class | used by |
| --- | --- |
| ODEOptions | ``make_model`` (the estimator: model class, library, threshold, units, derivative) |
| FamilyResampling | the resampling streams' seed and stratification (of the two below and of discover/predict) |
| TermStabilityOptions | ``term_stability`` |
| PhaseFitOptions | ``phase_fits`` (a ``CouplingOptions``: pair, families, units, min_delta, phases) |
| DynamicsOptions | ``discover`` (``cape dynamics``) |
| PredictOptions | ``predict_size`` (``cape predict``) |
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cape_hpc.analysis.options import AxisOptions, CouplingOptions
from cape_hpc.dynamics.internals import internal_quantity, is_internal
from cape_hpc.errors import OptionError
from cape_hpc.io.scores import SCORE_COLUMNS
from cape_hpc.options import UNITS, Options, option

__all__ = ["MODELS", "DERIVATIVES", "ODEOptions", "FamilyResampling", "TermStabilityOptions", "PhaseFitOptions", "DynamicsOptions",
           "PredictOptions", "parse_size"]

MODELS = ("sindy", "linear")
DERIVATIVES = ("gradient", "forward")
DEFAULT_BASELINE_DEGREES = (1, 2, 3, 4)


def _split(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """('A,B', 'C') -> ('A', 'B', 'C'): lists may be given space- or comma-separated."""
    if values is None:
        return None
    return tuple(s for item in values for s in (p.strip() for p in str(item).split(",")) if s)


def parse_size(text) -> float:
    """'70B', '1.3b', '350M', '7e9', 7e9 -> parameters (OptionError naming --size otherwise)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*([kKmMbBtT]?)\s*", str(text))
    if not m:
        raise OptionError(f"option '--size': {text!r} is not a size (e.g. 70B, 350M, 7e9)")
    try:
        value = float(m.group(1))
    except ValueError:
        raise OptionError(f"option '--size': {text!r} is not a size (e.g. 70B, 350M, 7e9)") from None
    return value * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]


@dataclass(frozen=True)
class ODEOptions(Options):
    """The estimator: dB/dlog10 N = f(B) by sparse SINDy or a dense linear system (docs/METHODS.md §2.13)."""

    model: str = option("sindy", help="ODE class: sparse SINDy or dense linear least squares", choices=MODELS)
    degree: int = option(3, help="SINDy polynomial library degree", minimum=1)
    threshold: float = option(0.1, help="SINDy STLSQ threshold", unit="units", minimum=0.0)
    alpha: float = option(0.05, help="STLSQ ridge alpha", minimum=0.0)
    max_iter: int = option(20, help="STLSQ iterations", minimum=1)
    ridge: float = option(0.0, help="ridge penalty of the linear model (the constant is never penalised)",
                          minimum=0.0)
    units: str = option("fraction", help="units of the fit, its threshold and coefficients (predictions and "
                                         "errors are always in percent)", choices=UNITS)
    derivative: str = option("gradient", help="finite differences: second-order non-uniform gradient per model, "
                                              "or forward differences per interval", choices=DERIVATIVES)


@dataclass(frozen=True)
class FamilyResampling(Options):
    """How the training intervals are resampled: the streams' seed, and within or across families."""

    seed: int = option(0, help="seed of the counter-based resampling streams", minimum=0)
    stratify: bool = option(True, help="resample within each family (stratified) rather than across families")


@dataclass(frozen=True)
class TermStabilityOptions(FamilyResampling):
    """The bootstrap over intervals of the term inclusion probabilities (docs/METHODS.md §2.13)."""

    n_resamples: int = option(1000, help="bootstrap resamples of the training intervals", minimum=1,
                              aliases=("-n",))


@dataclass(frozen=True)
class PhaseFitOptions(CouplingOptions):
    """dB2/dlog10N = a + b B1_mid over the tax and the bonus intervals (docs/METHODS.md §2.13); the
    intervals and their phases are the local coupling's (§2.1-2.2)."""


@dataclass(frozen=True)
class _ModelRun(FamilyResampling, ODEOptions, AxisOptions):
    """What ``discover`` and ``predict_size`` share: the estimator, the columns, the baselines, the seed."""

    benchmarks: tuple[str, ...] = option(SCORE_COLUMNS, help="score columns of the state (space- or "
                                                             "comma-separated)", metavar="COLUMN")
    state: tuple[str, ...] | None = option(None, help="the state, replacing --benchmarks: score columns and "
                                                      "internal couplings internal:final | internal:mean | "
                                                      "internal:min | internal:head_net (with --internals FILE.h5)",
                                           metavar="VARIABLE")
    baseline_degrees: tuple[int, ...] = option(DEFAULT_BASELINE_DEGREES, help="polynomial baseline degrees",
                                               minimum=0, metavar="DEGREE")

    def check(self) -> None:
        super().check()
        object.__setattr__(self, "benchmarks", _split(self.benchmarks))
        if not self.benchmarks:
            raise OptionError("option '--benchmarks': at least one score column is needed")
        if len(set(self.benchmarks)) != len(self.benchmarks):
            raise OptionError(f"option '--benchmarks': repeated column in {list(self.benchmarks)}")
        object.__setattr__(self, "state", _split(self.state) or None)
        if self.state is not None:
            if len(set(self.state)) != len(self.state):
                raise OptionError(f"option '--state': repeated variable in {list(self.state)}")
            for s in self.state:
                if is_internal(s):
                    internal_quantity(s)
            if all(is_internal(s) for s in self.state):
                raise OptionError("option '--state': name at least one score column beside the internal "
                                  "couplings (the errors are over the score columns)")

    @property
    def columns(self) -> tuple[str, ...]:
        """The state variables: ``state`` when given, else ``benchmarks``."""
        return self.state or self.benchmarks

    @property
    def internal_state(self) -> tuple[str, ...]:
        """The ``internal:<quantity>`` entries of the state."""
        return tuple(s for s in self.columns if is_internal(s))

    def ode(self) -> ODEOptions:
        """The estimator's part of these options."""
        return ODEOptions(**{k: getattr(self, k) for k in ODEOptions.__dataclass_fields__})


@dataclass(frozen=True)
class DynamicsOptions(_ModelRun):
    """``discover``: fit on the training families, cross-predict the held-out ones (docs/METHODS.md §2.13)."""

    train: tuple[str, ...] = option(("Pythia",), help="training families (space- or comma-separated)",
                                    metavar="FAMILY")
    holdout: tuple[str, ...] = option(("Llama-2",), help="held-out families (space- or comma-separated)",
                                      metavar="FAMILY")
    n_resamples: int = option(1000, help="term-stability resamples of the training intervals (0: skip)",
                              minimum=0, aliases=("-n",))
    anchor_baselines: bool = option(False, help="shift each baseline polynomial through the held-out family's "
                                                "smallest model")
    include_start: bool = option(False, help="count each family's starting model in the errors (where the "
                                             "simulation equals the data by construction)")
    phase_pair: tuple[str, str] | None = option(("HS", "TQA"), help="score pair B1 B2 of the per-phase fits "
                                                "(skipped when a column is absent)", metavar=("B1", "B2"))
    phase_families: tuple[str, ...] | None = option(None, help="families of the per-phase fits (none: all)",
                                                    metavar="FAMILY")

    def check(self) -> None:
        super().check()
        object.__setattr__(self, "train", _split(self.train))
        object.__setattr__(self, "holdout", _split(self.holdout))
        object.__setattr__(self, "phase_families", _split(self.phase_families) or None)
        if not self.train:
            raise OptionError("option '--train': name at least one family")
        overlap = sorted(set(self.train) & set(self.holdout))
        if overlap:
            raise OptionError(f"option '--holdout': {', '.join(overlap)} is also a training family")

    def term_stability(self) -> TermStabilityOptions:
        return TermStabilityOptions(n_resamples=max(self.n_resamples, 1), seed=self.seed, stratify=self.stratify)

    def phase_fit(self) -> PhaseFitOptions | None:
        if self.phase_pair is None:
            return None
        return PhaseFitOptions(pair=self.phase_pair, families=self.phase_families, units=self.units,
                               scale_axis=self.scale_axis)


@dataclass(frozen=True)
class PredictOptions(_ModelRun):
    """``predict_size``: integrate from a family's largest known model to a size N (docs/METHODS.md §2.13)."""

    family: str = option("", help="the family to extend (required)")
    size: float = option(0.0, help="target parameter count (training step under --scale step)", minimum=0.0,
                         cli=False)
    train: tuple[str, ...] | None = option(None, help="families to fit the ODE on (none: --family itself)",
                                           metavar="FAMILY")
    n_resamples: int = option(200, help="bootstrap refits of the band (0: no band)", minimum=0, aliases=("-n",))
    levels: tuple[float, ...] = option((0.95, 0.68), help="levels of the bootstrap band", minimum=0.0,
                                       exclusive_minimum=True, maximum=0.999999)

    def check(self) -> None:
        super().check()
        object.__setattr__(self, "train", _split(self.train) or None)
        if not self.family:
            raise OptionError("option '--family': name the family to extend")
        if not (math.isfinite(self.size) and self.size > 0):
            raise OptionError(f"option '--size': must be a positive parameter count, got {self.size!r}")

    @property
    def train_families(self) -> tuple[str, ...]:
        return self.train or (self.family,)
