"""ODE discovery in benchmark space: dB/dlog10 N = f(B), as estimators with fit / predict / score.

Two model classes (docs/METHODS.md §2.13), both fitted to finite-difference derivatives of one or more family
trajectories (see ``trajectories``):

``SindyODE``   PySINDy: PolynomialLibrary(degree) and STLSQ(threshold, alpha); the library's
               constant term is included.  Sparse: terms whose coefficient STLSQ sets to zero drop out.
``LinearODE``  dense least squares dB/dlog10N = C B + c0 (``numpy.linalg.lstsq``, minimum-norm when
               underdetermined; optional ridge).

Both take one ``ODEOptions`` (``SindyODE(ODEOptions(degree=2))``, or its fields by keyword:
``SindyODE(degree=2)``); the options hold the defaults and validate, the estimators never repeat
them.  ``units='fraction'`` divides the percent scores by 100 before fitting, so thresholds and
coefficients are in fraction units; predictions always come back in percent, like the tables.  Results are attributes ending in ``_``;
nothing is printed.  ``simulate`` integrates the fitted system with ``scipy.integrate.solve_ivp``
(LSODA, rtol 1e-8, atol 1e-10); a trajectory that fails or leaves a bounded box (|B| > 10^3 x the
percent scale) is NaN from the failure on.  ``score`` returns the paper's error
mean|pred - actual| / mean(actual) over the sizes after the starting model (lower is better; unlike
scikit-learn's ``score``, which is higher-better).
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Sequence

import numpy as np
from scipy.integrate import solve_ivp

from cape_hpc.dynamics.internals import score_columns
from cape_hpc.dynamics.metrics import ErrorSummary, trajectory_errors
from cape_hpc.dynamics.options import ODEOptions
from cape_hpc.dynamics.trajectories import Trajectory, stacked_rows
from cape_hpc.errors import DataError, OptionError
from cape_hpc.options import units_factor

BLOWUP_PERCENT = 1e3 * 100.0


def _check_trajs(trajs) -> list[Trajectory]:
    if isinstance(trajs, Trajectory):
        trajs = [trajs]
    trajs = list(trajs)
    if not trajs:
        raise DataError("no training trajectories (need at least one family with >= 2 models)")
    b = trajs[0].benchmarks
    for t in trajs:
        if t.benchmarks != b:
            raise DataError(f"family {t.family!r}: benchmarks {t.benchmarks} differ from {b}")
    return trajs


def format_equation(lhs: str, coefs: np.ndarray, terms: Sequence[str], precision: int = 3, x: str = "N") -> str:
    """'d(TQA)/dlog10N = 0.12 + -0.34 HS' style, zero terms left out; ``x``: the scale axis's symbol
    ('N', or 'step' under ``--scale step``)."""
    parts = []
    for c, name in zip(coefs, terms):
        if c == 0.0:
            continue
        v = f"{abs(c):.{precision}g}"
        sign = "-" if c < 0 else "+"
        body = v if name == "1" else f"{v} {name}"
        parts.append((sign, body))
    if not parts:
        return f"d({lhs})/dlog10{x} = 0"
    first_sign, first = parts[0]
    text = ("-" if first_sign == "-" else "") + first
    for sign, body in parts[1:]:
        text += f" {sign} {body}"
    return f"d({lhs})/dlog10{x} = {text}"


class _ODEBase:
    """Shared fit / simulate / predict / score; subclasses implement ``_regress`` and ``_library``."""

    kind = "ode"

    def __init__(self, opts: ODEOptions | None = None, **changes):
        """``opts`` (defaults when None), any field changed by keyword; its ``model`` is this class's."""
        opts = (opts or ODEOptions()).replace(**changes) if changes else (opts or ODEOptions())
        self.opts = opts if opts.model == self.kind else opts.replace(model=self.kind)

    @property
    def units(self) -> str:
        return self.opts.units

    @property
    def derivative(self) -> str:
        return self.opts.derivative

    def clone(self):
        """An unfitted estimator with the same options."""
        return type(self)(self.opts)

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, trajectories):
        """Fit to one Trajectory or a list of them (rows stacked; never differenced across families)."""
        scale = units_factor(self.units)
        trajs = _check_trajs(trajectories)
        S, D, fam = stacked_rows(trajs, self.derivative, scale)
        if len(S) == 0:
            raise DataError("no derivative rows: every training family needs >= 2 models")
        self.benchmarks_ = trajs[0].benchmarks
        self.families_ = [t.family for t in trajs]
        self.n_rows_ = int(len(S))
        self.scale_ = scale
        self.fit_rows(S, D)
        return self

    def fit_rows(self, states: np.ndarray, derivs: np.ndarray, benchmarks: Sequence[str] | None = None):
        """Fit directly to (state, derivative) rows in the estimator's units (used by the bootstrap);
        ``benchmarks`` name the state's columns (default: those of an earlier fit, else x0, x1, ...)."""
        self.scale_ = getattr(self, "scale_", units_factor(self.units))
        if benchmarks is not None:
            self.benchmarks_ = tuple(benchmarks)
        elif not hasattr(self, "benchmarks_"):
            self.benchmarks_ = tuple(f"x{i}" for i in range(states.shape[1]))
        self.coef_, self.terms_ = self._regress(np.asarray(states, float), np.asarray(derivs, float))
        return self

    # -- the fitted system -----------------------------------------------------------------------
    def with_coefficients(self, coef: np.ndarray):
        """A copy of this fitted estimator whose system uses ``coef`` [p, n_terms] (the same library,
        terms and units: a refit's coefficients, e.g. of a bootstrap resample); this one is unchanged."""
        self._check_fitted()
        coef = np.asarray(coef, dtype=float)
        if coef.shape != self.coef_.shape:
            raise ValueError(f"coefficients of shape {coef.shape}, the fitted system has {self.coef_.shape}")
        out = copy.copy(self)
        out.coef_ = coef
        return out

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise OptionError(f"{type(self).__name__} is not fitted: call fit() first")

    def library_matrix(self, states: np.ndarray) -> np.ndarray:
        """The library terms evaluated at states[m, p] (estimator units): [m, n_terms]."""
        self._check_fitted()
        return self._library(np.atleast_2d(np.asarray(states, float)))

    def rhs(self, states: np.ndarray) -> np.ndarray:
        """dB/dlog10N at states[m, p] (estimator units)."""
        self._check_fitted()
        return self._library(np.atleast_2d(states)) @ self.coef_.T

    def equations(self, precision: int = 3, x: str = "N") -> list[str]:
        """One fitted equation per benchmark (:func:`format_equation`; ``x``: the scale axis's symbol)."""
        self._check_fitted()
        return [format_equation(b, self.coef_[i], self.terms_, precision, x) for i, b in enumerate(self.benchmarks_)]

    @property
    def active_terms_(self) -> np.ndarray:
        """bool[p, n_terms]: which library terms each equation uses."""
        self._check_fitted()
        return self.coef_ != 0.0

    def simulate(self, y0_percent: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Integrate from scores ``y0_percent`` at x[0] through the grid x (increasing or decreasing).

        Returns percent scores [len(x), p]; NaN after a failed or diverging integration.
        """
        self._check_fitted()
        x = np.asarray(x, float)
        y0 = np.asarray(y0_percent, float) * self.scale_
        out = np.full((len(x), len(y0)), np.nan)
        out[0] = y0
        if len(x) == 1:
            return out / self.scale_
        bound = BLOWUP_PERCENT * self.scale_

        def fun(_t, y):
            return self.rhs(y[None, :])[0]

        def blowup(_t, y):
            return bound - float(np.max(np.abs(y)))
        blowup.terminal = True

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = solve_ivp(fun, (x[0], x[-1]), y0, t_eval=x, method="LSODA", rtol=1e-8, atol=1e-10,
                            events=blowup)
        if sol.y.size:
            k = sol.y.shape[1]
            out[:k] = sol.y.T
        if sol.status != 0 or not np.all(np.isfinite(out)):
            # rows past the failure point stay NaN
            bad = ~np.isfinite(out).all(axis=1)
            if bad.any():
                out[np.argmax(bad):] = np.nan
        return out / self.scale_

    def predict(self, trajectory: Trajectory) -> np.ndarray:
        """Simulated scores (percent) on the trajectory's grid, starting from its smallest model."""
        return self.simulate(trajectory.Y[0], trajectory.x)

    def errors(self, trajectories, skip_first: bool = True) -> ErrorSummary:
        """Errors of the simulated trajectories over every size after each starting model (pooled);
        ``skip_first=False`` also counts the starting model itself (error 0 there by construction)."""
        trajs = _check_trajs(trajectories)
        k = 1 if skip_first else 0
        preds = [self.predict(t)[k:] for t in trajs]
        acts = [t.Y[k:] for t in trajs]
        return trajectory_errors(np.concatenate(preds), np.concatenate(acts), self.benchmarks_,
                                 score_columns(self.benchmarks_))

    def score(self, trajectories) -> float:
        """mean|pred - actual| / mean(actual) of the simulation (lower is better)."""
        return self.errors(trajectories).rel_mae


class LinearODE(_ODEBase):
    """Dense linear system dB/dlog10N = C B + c0 by least squares (optional ridge penalty on C).

    Attributes after fit: ``coef_`` [p, p + 1] (columns: '1', then the benchmarks), ``terms_``,
    ``C_`` [p, p], ``c0_`` [p], ``benchmarks_``, ``families_``, ``n_rows_``, ``rank_``.
    """

    kind = "linear"

    def _library(self, S: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((S.shape[0], 1)), S])

    def _solve(self, A: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, int]:
        """(coefficients [p, n_terms], rank): least squares of D on the library matrix A, with the ridge."""
        ridge = self.opts.ridge
        if ridge > 0:
            p = A.shape[1]
            pen = math.sqrt(ridge) * np.eye(p)
            pen[0, 0] = 0.0  # never penalise the constant
            A = np.vstack([A, pen])
            D = np.vstack([D, np.zeros((p, D.shape[1]))])
        W, _res, rank, _sv = np.linalg.lstsq(A, D, rcond=None)
        return W.T, int(rank)

    def regress_batch(self, Theta: np.ndarray, D: np.ndarray) -> np.ndarray:
        """Coefficients [p, n_terms] for a precomputed library matrix (bootstrap refits; the fit unchanged)."""
        return self._solve(Theta, D)[0]

    def _regress(self, S, D):
        coef, self.rank_ = self._solve(self._library(S), D)
        self.c0_ = coef[:, 0].copy()
        self.C_ = coef[:, 1:].copy()
        return coef, ["1", *self.benchmarks_]


class SindyODE(_ODEBase):
    """PySINDy with PolynomialLibrary(degree) and STLSQ(threshold, alpha) on precomputed derivatives.

    Attributes after fit: ``coef_`` [p, n_terms], ``terms_`` (PySINDy feature names, e.g. 'HS TQA'),
    ``model_`` (the fitted ``pysindy.SINDy``), ``benchmarks_``, ``families_``, ``n_rows_``.
    """

    kind = "sindy"

    def optimizer(self):
        import pysindy as ps
        return ps.STLSQ(threshold=self.opts.threshold, alpha=self.opts.alpha, max_iter=self.opts.max_iter)

    def library(self):
        import pysindy as ps
        return ps.PolynomialLibrary(degree=self.opts.degree, include_bias=True)

    def _library(self, S: np.ndarray) -> np.ndarray:
        return self.library_.transform(S)

    def _regress(self, S, D):
        import pysindy as ps
        model = ps.SINDy(optimizer=self.optimizer(), feature_library=self.library())
        t = np.arange(len(S), dtype=float)  # unused: derivatives are given
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(S, t=t, x_dot=D, feature_names=list(self.benchmarks_))
        self.model_ = model
        self.library_ = model.feature_library
        return np.asarray(model.coefficients(), float).copy(), list(model.get_feature_names())

    def regress_batch(self, Theta: np.ndarray, D: np.ndarray) -> np.ndarray:
        """STLSQ coefficients [p, n_terms] for a precomputed library matrix (bootstrap helper)."""
        opt = self.optimizer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.fit(Theta, D)
        return np.asarray(opt.coef_, float)


MODEL_CLASSES = {"sindy": SindyODE, "linear": LinearODE}


def make_model(opts: ODEOptions | None = None) -> _ODEBase:
    """The estimator that ``opts`` names, with its options (docs/METHODS.md §2.13)."""
    opts = opts or ODEOptions()
    return MODEL_CLASSES[opts.model](opts)
