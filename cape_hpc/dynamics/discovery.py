"""Holdout cross-prediction, baselines, per-phase fits, term stability and size prediction.

``discover``  (``cape dynamics``)
    Fit a ``sindy`` or ``linear`` ODE on the training families; the *fit error* simulates each
    training family from its smallest model and scores its later sizes (pooled over families); the
    *holdout error* integrates each held-out family from its smallest model and scores its later
    sizes.  Polynomial baselines (degrees 1-4 by default) are fitted on the same training models
    and scored on the same held-out models.
``phase_fits``
    dB2/dlog10N = a + b * B1_mid over the tax intervals and over the bonus intervals (intervals and
    phases from ``cape_hpc.analysis.coupling.local_coupling``; dB2/dlog10N = dB2 / (log N - log N_prev)).
``term_stability``
    A bootstrap over intervals: the training families' interval rows (forward differences at the
    midpoints) are resampled with replacement (stratified by family by default) with
    ``cape_kernels.resample_indices`` (counter-based: the same seed gives the same result whatever the
    thread count), the model's regression is refitted on each resample, and each library term's
    inclusion probability is the fraction of resamples in which its coefficient is non-zero.  Also
    the fraction of resamples in which the coefficient has the full fit's sign (for the dense linear
    model, where every term is always included, this is the informative number).
``predict_size``  (``cape predict``)
    Integrate the fitted system from a family's largest known model to a size N; the band is the
    percentile interval over refits on resamples (with replacement, stratified by family) of the
    point fit's own derivative rows; each baseline is evaluated at log10 N.  Term stability, by
    contrast, always resamples intervals (forward differences), so its full-sample support
    (``full_active``) can differ from the point fit's when ``derivative='gradient'``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from cape_hpc.dynamics.baselines import PolyBaseline
from cape_hpc.dynamics.estimators import SindyODE, make_model, unit_scale
from cape_hpc.dynamics.metrics import ErrorSummary
from cape_hpc.dynamics.trajectories import (Trajectory, check_benchmarks, family_trajectory,
                                            stacked_rows, trajectories)
from cape_hpc.errors import DataError, OptionError
from cape_hpc.schema import Provenance
from cape_hpc.io.scores import SCORE_COLUMNS

DEFAULT_BASELINE_DEGREES = (1, 2, 3, 4)


def _sha(df: pd.DataFrame) -> str:
    import hashlib
    sha = df.attrs.get("sha256")
    return str(sha) if sha else hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()


def _as_list(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [s for s in (p.strip() for p in v.split(",")) if s]
    return [str(s) for s in v]


# ------------------------------------------------------------------------------------------------
# results

@dataclass
class BaselineScore:
    degree: int
    rel_mae: float
    mape: float
    mae_points: float
    valid: bool
    per_benchmark: dict[str, float]


@dataclass
class PredictionRow:
    family: str
    model: str
    benchmark: str
    log10_n: float
    actual: float
    ode: float
    baselines: dict[str, float]


@dataclass
class TermStability:
    terms: list[str]
    benchmarks: list[str]
    inclusion: np.ndarray        # [p, n_terms] fraction of valid resamples with the term non-zero
    sign_agreement: np.ndarray   # [p, n_terms] fraction with the full fit's sign (NaN where full fit is 0)
    full_active: np.ndarray      # [p, n_terms] bool, the full-sample fit on the same interval rows
    n_rows: int
    n_resamples: int
    n_valid: int
    seed: int
    stratified: bool


@dataclass
class PhaseFit:
    phase: str
    a: float
    b: float
    n_intervals: int
    families: list[str]
    b_se: float


@dataclass
class PhaseFitResult:
    b1: str
    b2: str
    units: str
    fits: list[PhaseFit]
    ratio_bonus_over_tax: float   # |b_bonus| / |b_tax|
    provenance: Provenance


@dataclass
class DynamicsResult:
    model: str
    train: list[str]
    holdout: list[str]
    benchmarks: list[str]
    options: dict
    terms: list[str]
    coefficients: np.ndarray      # [p, n_terms] in `units`
    equations: list[str]
    n_active_terms: list[int]     # per equation
    fit_error: ErrorSummary
    fit_error_by_family: dict[str, ErrorSummary]
    holdout_error: ErrorSummary | None
    holdout_error_by_family: dict[str, ErrorSummary]
    baselines: list[BaselineScore]
    predictions: list[PredictionRow]       # held-out families, sizes after the start model
    fit_predictions: list[PredictionRow]   # training families (the in-sample simulation), same layout
    term_stability: TermStability | None
    phase_fits: PhaseFitResult | None
    provenance: Provenance


# ------------------------------------------------------------------------------------------------

def _check_n_resamples(n: int, option: str = "n_resamples", minimum: int = 0) -> int:
    if not isinstance(n, (int, np.integer)) or n < minimum:
        raise OptionError(f"option '{option}': must be an integer >= {minimum}, got {n!r}")
    return int(n)


def interval_rows(trajs: Sequence[Trajectory], scale: float):
    """Forward-difference interval rows (states at midpoints, derivatives) and family strata."""
    return stacked_rows(trajs, "forward", scale)


def _refit_coefs(est, S: np.ndarray, D: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Coefficients [R, p, n_terms] of the estimator refitted on each resample's rows."""
    R = idx.shape[0]
    if isinstance(est, SindyODE):
        Theta = est._library(S)
        out = np.empty((R, D.shape[1], Theta.shape[1]))
        for r in range(R):
            try:
                out[r] = est.regress_batch(Theta[idx[r]], D[idx[r]])
            except Exception:  # noqa: BLE001 - a degenerate resample is an invalid fit
                out[r] = np.nan
        return out
    A = est._library(S)
    out = np.empty((R, D.shape[1], A.shape[1]))
    for r in range(R):
        W = np.linalg.lstsq(A[idx[r]], D[idx[r]], rcond=None)[0]
        out[r] = W.T
    return out


def term_stability(est, trajs: Sequence[Trajectory], *, n_resamples: int = 1000, seed: int = 0,
                   stratify: bool = True) -> TermStability:
    """Inclusion probability of each library term under a bootstrap over intervals (see module doc)."""
    from cape_kernels import resample_indices

    n_resamples = _check_n_resamples(n_resamples, minimum=1)
    scale = unit_scale(est.units)
    S, D, fam = interval_rows(trajs, scale)
    if len(S) < 2:
        raise DataError("term stability needs >= 2 intervals in the training families")
    full = make_model(est.kind, **est.get_params())
    full.benchmarks_ = trajs[0].benchmarks
    full.scale_ = scale
    full.fit_rows(S, D)
    idx = resample_indices(fam if stratify else None, n_resamples, int(seed), n=len(S))
    coefs = _refit_coefs(full, S, D, idx)
    valid = np.all(np.isfinite(coefs), axis=(1, 2))
    cv = coefs[valid]
    nz = cv != 0.0
    inclusion = nz.mean(axis=0) if len(cv) else np.full(full.coef_.shape, np.nan)
    sgn = np.sign(full.coef_)
    with np.errstate(invalid="ignore"):
        agree = (np.sign(cv) == sgn[None]).mean(axis=0) if len(cv) else np.full(full.coef_.shape, np.nan)
    agree = np.where(sgn == 0, np.nan, agree)
    return TermStability(list(full.terms_), list(full.benchmarks_), inclusion, agree, full.coef_ != 0.0,
                         int(len(S)), n_resamples, int(valid.sum()), int(seed), bool(stratify))


def phase_fits(df: pd.DataFrame, *, b1: str = "HS", b2: str = "TQA", families=None, units: str = "percent",
               min_delta: float | None = None) -> PhaseFitResult:
    """dB2/dlog10N = a + b * B1_mid, fitted by least squares over tax and over bonus intervals."""
    from cape_hpc.analysis.coupling import local_coupling

    fams = _as_list(families) or None
    cr = local_coupling(df, b1, b2, min_delta, units=units, families=fams)
    fits = []
    for phase in ("tax", "bonus"):
        ivs = [iv for iv in cr.intervals if iv.phase == phase]
        xs = np.array([iv.b1_mid for iv in ivs])
        ys = np.array([iv.d_b2 / (math.log10(iv.n) - math.log10(iv.prev_n)) for iv in ivs])
        a = b = se = math.nan
        if len(ivs) >= 2 and np.ptp(xs) > 0:
            A = np.column_stack([np.ones(len(xs)), xs])
            coef, *_ = np.linalg.lstsq(A, ys, rcond=None)
            a, b = float(coef[0]), float(coef[1])
            if len(ivs) > 2:
                resid = ys - A @ coef
                s2 = float(resid @ resid) / (len(ivs) - 2)
                se = float(math.sqrt(s2 * np.linalg.inv(A.T @ A)[1, 1]))
        fits.append(PhaseFit(phase, a, b, len(ivs), sorted({iv.family for iv in ivs}), se))
        ratio = math.nan
    bt, bb = fits[0].b, fits[1].b
    if math.isfinite(bt) and math.isfinite(bb) and bt != 0:
        ratio = abs(bb) / abs(bt)
    prov = Provenance("phase_fits", {"b1": b1, "b2": b2, "families": fams, "units": units,
                                     "min_delta": cr.min_delta}, inputs={"scores": _sha(df)})
    return PhaseFitResult(b1, b2, units, fits, ratio, prov)


def discover(df: pd.DataFrame, *, train=("Pythia",), holdout=("Llama-2",), model: str = "sindy",
             benchmarks: Sequence[str] = SCORE_COLUMNS, units: str = "fraction", degree: int = 3,
             threshold: float = 0.1, alpha: float = 0.05, ridge: float = 0.0, derivative: str = "gradient",
             baseline_degrees: Sequence[int] = DEFAULT_BASELINE_DEGREES, n_resamples: int = 1000,
             seed: int = 0, stratify: bool = True, phase_pair: tuple[str, str] | None = ("HS", "TQA"),
             phase_families=None, include_start: bool = False, anchor_baselines: bool = False) -> DynamicsResult:
    """Fit on ``train``, cross-predict ``holdout`` (see module doc).  ``n_resamples=0`` skips term stability.

    ``anchor_baselines=True`` shifts each baseline polynomial through the held-out family's starting
    model (see ``PolyBaseline``).  ``include_start=True`` also counts each family's starting model in the errors (where the
    simulation equals the data by construction); the default scores only the later sizes.
    """
    train_l, hold_l = _as_list(train), _as_list(holdout)
    if not train_l:
        raise OptionError("option 'train': name at least one family")
    overlap = set(train_l) & set(hold_l)
    if overlap:
        raise OptionError(f"option 'holdout': {', '.join(sorted(overlap))} is also a training family")
    benchmarks = check_benchmarks(df, benchmarks)
    n_resamples = _check_n_resamples(n_resamples)
    est = make_model(model, units=units, derivative=derivative, degree=degree, threshold=threshold,
                     alpha=alpha, ridge=ridge)
    tr = trajectories(df, train_l, benchmarks, option="train")
    ho = trajectories(df, hold_l, benchmarks, option="holdout") if hold_l else []
    est.fit(tr)

    skip = not include_start
    fit_by = {t.family: est.errors([t], skip) for t in tr}
    fit_err = est.errors(tr, skip)
    ho_by = {t.family: est.errors([t], skip) for t in ho}
    ho_err = est.errors(ho, skip) if ho else None

    base_scores, base_models = [], {}
    for d in baseline_degrees:
        pb = PolyBaseline(int(d), anchored=anchor_baselines).fit(tr)
        base_models[int(d)] = pb
        if ho:
            e = pb.errors(ho, skip)
            base_scores.append(BaselineScore(int(d), e.rel_mae, e.mape, e.mae_points, pb.valid_, e.per_benchmark))

    def table(trajs):
        out = []
        for t in trajs:
            pred = est.predict(t)
            bpred = {d: pb.predict(t) for d, pb in base_models.items()}
            for i in range(1, t.n):
                for j, b in enumerate(benchmarks):
                    out.append(PredictionRow(t.family, t.models[i], b, float(t.x[i]), float(t.Y[i, j]),
                                             float(pred[i, j]),
                                             {f"poly{d}": float(bp[i, j]) for d, bp in bpred.items()}))
        return out

    rows, fit_rows = table(ho), table(tr)

    ts = term_stability(est, tr, n_resamples=n_resamples, seed=seed, stratify=stratify) if n_resamples else None
    pf = None
    if phase_pair is not None and all(c in df.columns for c in phase_pair):
        pf = phase_fits(df, b1=phase_pair[0], b2=phase_pair[1], families=phase_families, units=units)

    options = {"model": model, **est.get_params(), "benchmarks": list(benchmarks),
               "baseline_degrees": [int(d) for d in baseline_degrees], "stratify": stratify,
               "anchor_baselines": anchor_baselines, "include_start": include_start,
               "phase_pair": list(phase_pair) if phase_pair else None,
               "phase_families": _as_list(phase_families) or None,
               "integrator": "scipy solve_ivp LSODA rtol=1e-8 atol=1e-10",
               "error": "mean|pred-actual|/mean(actual) over "
                        + ("every size, the start model included" if include_start else "the sizes after the start model")}
    prov = Provenance(f"dynamics/{model}", options, seed=int(seed), n_resamples=n_resamples,
                      inputs={"scores": _sha(df)})
    return DynamicsResult(model, train_l, hold_l, list(benchmarks), options, list(est.terms_), est.coef_.copy(),
                          est.equations(), [int(k) for k in est.active_terms_.sum(axis=1)], fit_err, fit_by,
                          ho_err, ho_by, base_scores, rows, fit_rows, ts, pf, prov)


# ------------------------------------------------------------------------------------------------
# prediction beyond the known sizes

@dataclass
class SizePrediction:
    family: str
    start_model: str
    start_log10_n: float
    size: float
    log10_n: float
    benchmarks: list[str]
    start_scores: list[float]
    ode: list[float]                       # percent
    band: dict[str, list[list[float]]]     # level -> [[lo, hi] per benchmark]
    n_valid: int
    baselines: dict[str, list[float]]      # 'poly<d>' -> per benchmark
    equations: list[str]
    train: list[str]
    model: str
    provenance: Provenance


def predict_size(df: pd.DataFrame, family: str, size: float, *, model: str = "sindy", train=None,
                 benchmarks: Sequence[str] = SCORE_COLUMNS, units: str = "fraction", degree: int = 3,
                 threshold: float = 0.1, alpha: float = 0.05, ridge: float = 0.0, derivative: str = "gradient",
                 baseline_degrees: Sequence[int] = DEFAULT_BASELINE_DEGREES, n_resamples: int = 200,
                 seed: int = 0, levels: Sequence[float] = (0.95, 0.68), stratify: bool = True) -> SizePrediction:
    """Integrate from the family's largest known model to ``size`` parameters (see module doc).

    ``train`` defaults to the family itself.  The band: the system is refitted on ``n_resamples``
    resamples of the training intervals and integrated from the same start; percentile intervals
    over the resamples that integrate without failure.
    """
    from cape_kernels import resample_indices

    try:
        size = float(size)
    except (TypeError, ValueError):
        raise OptionError(f"option 'size': {size!r} is not a number") from None
    if not math.isfinite(size) or size <= 0:
        raise OptionError(f"option 'size': must be a positive parameter count, got {size!r}")
    n_resamples = _check_n_resamples(n_resamples)
    benchmarks = check_benchmarks(df, benchmarks)
    target = family_trajectory(df, family, benchmarks, option="family")
    if target.n < 1:
        raise DataError(f"family {family!r} has no model with all of {', '.join(benchmarks)}")
    train_l = _as_list(train) or [family]
    tr = trajectories(df, train_l, benchmarks, option="train")
    est = make_model(model, units=units, derivative=derivative, degree=degree, threshold=threshold,
                     alpha=alpha, ridge=ridge).fit(tr)
    x0, y0 = float(target.x[-1]), target.Y[-1]
    xt = math.log10(size)
    grid = np.array([x0, xt])
    ode = est.simulate(y0, grid)[-1]

    band: dict[str, list[list[float]]] = {}
    n_valid = 0
    if n_resamples:
        scale = unit_scale(units)
        S, D, fam = stacked_rows(tr, derivative, scale)  # the point fit's own rows
        idx = resample_indices(fam if stratify else None, n_resamples, int(seed), n=len(S))
        coefs = _refit_coefs(est, S, D, idx)
        sims = []
        saved = est.coef_
        try:
            for r in range(n_resamples):
                if not np.all(np.isfinite(coefs[r])):
                    continue
                est.coef_ = coefs[r]
                sims.append(est.simulate(y0, grid)[-1])
        finally:
            est.coef_ = saved
        sims = np.array([s for s in sims if np.all(np.isfinite(s))])
        n_valid = int(len(sims))
        for lv in levels:
            key = f"{lv:g}"
            if n_valid:
                lo = np.percentile(sims, 100 * (1 - lv) / 2, axis=0)
                hi = np.percentile(sims, 100 * (1 + lv) / 2, axis=0)
                band[key] = [[float(a), float(b)] for a, b in zip(lo, hi)]
            else:
                band[key] = [[math.nan, math.nan] for _ in benchmarks]
    baselines = {}
    for d in baseline_degrees:
        pb = PolyBaseline(int(d)).fit(tr)
        baselines[f"poly{int(d)}"] = [float(v) for v in pb.predict_x(np.array([xt]))[0]]
    opts = {"model": model, **est.get_params(), "train": train_l, "benchmarks": list(benchmarks),
            "baseline_degrees": [int(d) for d in baseline_degrees], "levels": list(levels), "stratify": stratify}
    prov = Provenance("dynamics/predict", opts, seed=int(seed), n_resamples=n_resamples, inputs={"scores": _sha(df)})
    return SizePrediction(family, target.models[-1], x0, size, xt, list(benchmarks), [float(v) for v in y0],
                          [float(v) for v in ode], band, n_valid, baselines, est.equations(), train_l, model, prov)
