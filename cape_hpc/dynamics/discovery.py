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

import numpy as np
import pandas as pd

from cape_hpc.analysis import table_sha256
from cape_hpc.analysis.options import CouplingOptions, narrow
from cape_hpc.analysis.scale import SCALE, axis_of, on_scale
from cape_hpc.dynamics.baselines import PolyBaseline
from cape_hpc.dynamics.estimators import make_model
from cape_hpc.dynamics.internals import join_internals
from cape_hpc.dynamics.metrics import ErrorSummary
from cape_hpc.dynamics.options import (DynamicsOptions, PhaseFitOptions, PredictOptions, TermStabilityOptions)
from cape_hpc.dynamics.trajectories import Trajectory, check_benchmarks, family_trajectory, stacked_rows, trajectories
from cape_hpc.errors import DataError
from cape_hpc.options import units_factor
from cape_hpc.schema import ConfidenceInterval, Provenance, Result
from cape_hpc.stats import percentile_interval

__all__ = ["BaselineScore", "PredictionRow", "TermStability", "PhaseFit", "PhaseFitResult", "DynamicsResult",
           "PredictResult", "term_stability", "phase_fits", "discover", "predict_size"]

INTEGRATOR = "scipy solve_ivp LSODA rtol=1e-8 atol=1e-10"


# ------------------------------------------------------------------------------------------------
# results

@dataclass
class BaselineScore:
    """A polynomial baseline of one degree scored on the held-out families (errors as ErrorSummary)."""

    degree: int
    rel_mae: float
    mape: float
    mae_points: float
    valid: bool
    per_benchmark: dict[str, float]


@dataclass
class PredictionRow:
    """One predicted score (percent): ``predictor`` is 'ode' or 'poly<d>' (a baseline)."""

    family: str
    model: str
    benchmark: str
    log10_n: float
    actual: float
    predictor: str
    predicted: float


@dataclass
class TermStability(Result):
    """Inclusion probability of each library term under a bootstrap over intervals."""

    model: str                   # the estimator's class: sindy | linear
    terms: list[str]
    benchmarks: list[str]
    units: str                   # of the fit whose terms are counted
    inclusion: np.ndarray        # [p, n_terms] fraction of valid resamples with the term non-zero
    sign_agreement: np.ndarray   # [p, n_terms] fraction with the full fit's sign (NaN where the full fit is 0)
    full_active: np.ndarray      # [p, n_terms] bool, the full-sample fit on the same interval rows
    n_rows: int
    n_resamples: int
    n_valid: int
    seed: int
    stratified: bool
    provenance: Provenance


@dataclass
class PhaseFit:
    """dB2/dlog10N = a + b B1_mid over one phase's intervals (a in ``units`` per decade; b unit-free)."""

    phase: str
    a: float
    b: float
    n_intervals: int
    families: list[str]
    b_se: float


@dataclass
class PhaseFitResult(Result):
    b1: str
    b2: str
    units: str
    fits: list[PhaseFit]
    ratio_bonus_over_tax: float   # |b_bonus| / |b_tax|
    provenance: Provenance


@dataclass
class DynamicsResult(Result):
    """An ODE fitted on training families and cross-predicted on held-out ones (``cape dynamics``).

    ``units``: of the fit, its threshold and ``coefficients``; scores, predictions and errors are in
    percent.  The options are ``provenance.options``.
    """

    model: str
    train: list[str]
    holdout: list[str]
    benchmarks: list[str]
    units: str
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
    integrator: str
    error_definition: str
    provenance: Provenance

    def trajectory(self, family: str, predictor: str = "ode") -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """(log10 N [n], models, actual [n, p], predicted [n, p]) of one family (held-out or training)."""
        rows = [r for r in (*self.predictions, *self.fit_predictions) if r.family == family and r.predictor == predictor]
        models = list(dict.fromkeys(r.model for r in rows))
        x = np.array([next(r.log10_n for r in rows if r.model == m) for m in models])
        col = {b: j for j, b in enumerate(self.benchmarks)}
        A = np.full((len(models), len(col)), np.nan)
        P = np.full_like(A, np.nan)
        pos = {m: i for i, m in enumerate(models)}
        for r in rows:
            A[pos[r.model], col[r.benchmark]] = r.actual
            P[pos[r.model], col[r.benchmark]] = r.predicted
        return x, models, A, P


# ------------------------------------------------------------------------------------------------

def _refit_coefs(est, S: np.ndarray, D: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Coefficients [R, p, n_terms] of the estimator refitted on each resample's rows (its
    ``regress_batch``; NaN where a degenerate resample makes the fit fail)."""
    Theta = est.library_matrix(S)
    out = np.empty((idx.shape[0], D.shape[1], Theta.shape[1]))
    for r, rows in enumerate(idx):
        try:
            out[r] = est.regress_batch(Theta[rows], D[rows])
        except Exception:  # noqa: BLE001 - a degenerate resample is an invalid fit
            out[r] = np.nan
    return out


def term_stability(est, trajs: list[Trajectory], opts: TermStabilityOptions | None = None,
                   *, inputs: dict[str, str] | None = None) -> TermStability:
    """Inclusion probability of each library term under a bootstrap over intervals (see module doc)."""
    from cape_kernels import resample_indices

    opts = opts or TermStabilityOptions()
    trajs = [trajs] if isinstance(trajs, Trajectory) else list(trajs)
    scale = units_factor(est.units)
    S, D, fam = stacked_rows(trajs, "forward", scale)  # interval rows: midpoints, changes per decade
    if len(S) < 2:
        raise DataError("term stability needs >= 2 intervals in the training families")
    full = est.clone().fit_rows(S, D, benchmarks=trajs[0].benchmarks)
    idx = resample_indices(fam if opts.stratify else None, opts.n_resamples, opts.seed, n=len(S))
    coefs = _refit_coefs(full, S, D, idx)
    valid = np.all(np.isfinite(coefs), axis=(1, 2))
    cv = coefs[valid]
    nz = cv != 0.0
    inclusion = nz.mean(axis=0) if len(cv) else np.full(full.coef_.shape, np.nan)
    sgn = np.sign(full.coef_)
    with np.errstate(invalid="ignore"):
        agree = (np.sign(cv) == sgn[None]).mean(axis=0) if len(cv) else np.full(full.coef_.shape, np.nan)
    agree = np.where(sgn == 0, np.nan, agree)
    prov = Provenance("dynamics/term_stability", opts.to_dict(), seed=opts.seed, n_resamples=opts.n_resamples,
                      inputs=dict(inputs or {}))
    return TermStability(est.kind, list(full.terms_), list(full.benchmarks_), est.units, inclusion, agree, full.coef_ != 0.0,
                         int(len(S)), opts.n_resamples, int(valid.sum()), opts.seed, opts.stratify, prov)


def phase_fits(df: pd.DataFrame, opts: PhaseFitOptions | None = None) -> PhaseFitResult:
    """dB2/dlog10N = a + b * B1_mid, fitted by least squares over tax and over bonus intervals."""
    from cape_hpc.analysis.coupling import local_coupling

    opts = opts or PhaseFitOptions()
    cr = local_coupling(df, narrow(opts, CouplingOptions))
    fits = []
    for phase in ("tax", "bonus"):
        ivs = [iv for iv in cr.intervals if iv.phase == phase]
        xs = np.array([iv.b1_mid for iv in ivs])
        ys = np.array([iv.d_b2_per_decade for iv in ivs])
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
    prov = Provenance("dynamics/phase_fits", opts.to_dict(), inputs={"scores": table_sha256(df)})
    return PhaseFitResult(opts.b1, opts.b2, opts.units, fits, ratio, prov)


def _error_definition(include_start: bool, internal: tuple[str, ...] = ()) -> str:
    text = "mean|pred-actual|/mean(actual) in percent over " + (
        "every size, the start model included" if include_start else "the sizes after the start model")
    if internal:
        text += (f"; pooled over the score columns only ({', '.join(internal)}: 100 x the coupling, scored "
                 f"per column)")
    return text


def _inputs(df: pd.DataFrame, internals: pd.DataFrame | None, internal: tuple[str, ...]) -> dict[str, str]:
    inputs = {"scores": table_sha256(df)}
    if internal and internals is not None:
        inputs["internals"] = table_sha256(internals)
    return inputs


def discover(df: pd.DataFrame, opts: DynamicsOptions | None = None, *,
             internals: pd.DataFrame | None = None) -> DynamicsResult:
    """Fit on ``opts.train``, cross-predict ``opts.holdout`` (see module doc).  ``n_resamples=0`` skips
    term stability.

    ``anchor_baselines`` shifts each baseline polynomial through the held-out family's starting model
    (see ``PolyBaseline``); ``include_start`` also counts each family's starting model in the errors
    (where the simulation equals the data by construction); the default scores only the later sizes.

    ``internals``: one row per model (``model`` and the couplings ``final``, ``mean``, ...), needed
    when ``opts.state`` names ``internal:<quantity>`` variables (``cape_hpc.dynamics.internals``).
    """
    opts = opts or DynamicsOptions()
    train_l, hold_l = list(opts.train), list(opts.holdout)
    internal = opts.internal_state
    inputs = _inputs(df, internals, internal)
    df = join_internals(df, internals, opts.columns, train_l + hold_l)
    df = on_scale(df, opts, families=train_l + hold_l)   # N, or the step under --scale step
    benchmarks = check_benchmarks(df, opts.columns)
    est = make_model(opts.ode())
    tr = trajectories(df, train_l, benchmarks, option="--train", column=SCALE)
    ho = trajectories(df, hold_l, benchmarks, option="--holdout", column=SCALE) if hold_l else []
    est.fit(tr)

    skip = not opts.include_start
    fit_by = {t.family: est.errors([t], skip) for t in tr}
    fit_err = est.errors(tr, skip)
    ho_by = {t.family: est.errors([t], skip) for t in ho}
    ho_err = est.errors(ho, skip) if ho else None

    base_scores, base_models = [], {}
    for d in opts.baseline_degrees:
        pb = PolyBaseline(int(d), anchored=opts.anchor_baselines).fit(tr)
        base_models[int(d)] = pb
        if ho:
            e = pb.errors(ho, skip)
            base_scores.append(BaselineScore(int(d), e.rel_mae, e.mape, e.mae_points, pb.valid_, e.per_benchmark))

    def table(trajs):
        out = []
        for t in trajs:
            preds = {"ode": est.predict(t), **{f"poly{d}": pb.predict(t) for d, pb in base_models.items()}}
            for name, pred in preds.items():
                for i in range(1, t.n):
                    for j, b in enumerate(benchmarks):
                        out.append(PredictionRow(t.family, t.models[i], b, float(t.x[i]), float(t.Y[i, j]), name,
                                                 float(pred[i, j])))
        return out

    rows, fit_rows = table(ho), table(tr)
    ts = term_stability(est, tr, opts.term_stability(), inputs=inputs) if opts.n_resamples else None
    pf = None
    pf_opts = opts.phase_fit()
    if pf_opts is not None and all(c in df.columns for c in pf_opts.pair):
        pf = phase_fits(df, pf_opts)

    prov = Provenance(f"dynamics/{opts.model}", opts.to_dict(), seed=opts.seed, n_resamples=opts.n_resamples,
                      inputs=inputs)
    return DynamicsResult(opts.model, train_l, hold_l, list(benchmarks), opts.units, list(est.terms_),
                          est.coef_.copy(), est.equations(x=axis_of(opts).symbol),
                          [int(k) for k in est.active_terms_.sum(axis=1)],
                          fit_err, fit_by, ho_err, ho_by, base_scores, rows, fit_rows, ts, pf, INTEGRATOR,
                          _error_definition(opts.include_start, internal), prov)


# ------------------------------------------------------------------------------------------------
# prediction beyond the known sizes

@dataclass
class PredictResult(Result):
    """A family's scores (percent) predicted at a new size ``size`` (``cape predict``).

    ``band[benchmark]``: the bootstrap percentile intervals of the ODE prediction, one per level
    (``levels``); ``baselines['poly<d>']``: each baseline's prediction per benchmark.
    """

    family: str
    start_model: str
    start_log10_n: float
    size: float
    log10_n: float
    benchmarks: list[str]
    units: str                             # of the fit (scores are percent)
    start_scores: list[float]
    ode: list[float]
    band: dict[str, list[ConfidenceInterval]]
    n_valid: int
    baselines: dict[str, list[float]]
    equations: list[str]
    train: list[str]
    model: str
    provenance: Provenance

    def interval(self, benchmark: str, level: float = 0.95) -> ConfidenceInterval:
        for ci in self.band.get(benchmark, []):
            if abs(ci.level - level) < 1e-12:
                return ci
        return ConfidenceInterval.undefined(level)


def _prediction_band(est, tr: list[Trajectory], opts: PredictOptions, y0: np.ndarray, grid: np.ndarray,
                     benchmarks) -> tuple[dict[str, list[ConfidenceInterval]], int]:
    """({benchmark: percentile interval per level}, valid refits) of the scores at ``grid[-1]`` simulated
    from ``y0`` by the system refitted on resamples of the point fit's own rows (stratified by family
    when ``opts.stratify``); a refit that fails or an integration that fails is left out."""
    from cape_kernels import resample_indices

    if not opts.n_resamples:
        return {b: [] for b in benchmarks}, 0
    S, D, fam = stacked_rows(tr, opts.derivative, units_factor(opts.units))  # the point fit's own rows
    idx = resample_indices(fam if opts.stratify else None, opts.n_resamples, opts.seed, n=len(S))
    sims = [est.with_coefficients(c).simulate(y0, grid)[-1] for c in _refit_coefs(est, S, D, idx)
            if np.all(np.isfinite(c))]
    sims = np.array([s for s in sims if np.all(np.isfinite(s))]).reshape(-1, len(benchmarks))
    band = {b: [percentile_interval(sims[:, j], lv) for lv in opts.levels] for j, b in enumerate(benchmarks)}
    return band, int(len(sims))


def predict_size(df: pd.DataFrame, opts: PredictOptions, *, internals: pd.DataFrame | None = None) -> PredictResult:
    """Integrate from ``opts.family``'s largest known model to ``opts.size`` parameters (see module doc).

    The ODE is trained on ``opts.train`` (default: the family itself).  The band: the system is
    refitted on ``n_resamples`` resamples of the training rows and integrated from the same start;
    percentile intervals over the resamples that integrate without failure.
    """
    train_l = list(opts.train_families)
    inputs = _inputs(df, internals, opts.internal_state)
    df = join_internals(df, internals, opts.columns, list(dict.fromkeys([opts.family, *train_l])))
    df = on_scale(df, opts, families=[opts.family, *train_l])   # N, or the step under --scale step
    benchmarks = check_benchmarks(df, opts.columns)
    target = family_trajectory(df, opts.family, benchmarks, option="--family", column=SCALE)
    if target.n < 1:
        raise DataError(f"family {opts.family!r} has no model with all of {', '.join(benchmarks)}")
    tr = trajectories(df, train_l, benchmarks, option="--train", column=SCALE)
    est = make_model(opts.ode()).fit(tr)
    x0, y0 = float(target.x[-1]), target.Y[-1]
    xt = math.log10(opts.size)
    grid = np.array([x0, xt])
    ode = est.simulate(y0, grid)[-1]

    band, n_valid = _prediction_band(est, tr, opts, y0, grid, benchmarks)
    baselines = {}
    for d in opts.baseline_degrees:
        pb = PolyBaseline(int(d)).fit(tr)
        baselines[f"poly{int(d)}"] = [float(v) for v in pb.predict_x(np.array([xt]))[0]]
    prov = Provenance("dynamics/predict", opts.to_dict(), seed=opts.seed, n_resamples=opts.n_resamples,
                      inputs=inputs)
    return PredictResult(opts.family, target.models[-1], x0, opts.size, xt, list(benchmarks), opts.units,
                         [float(v) for v in y0], [float(v) for v in ode], band, n_valid, baselines,
                         est.equations(x=axis_of(opts).symbol),
                         train_l, opts.model, prov)
