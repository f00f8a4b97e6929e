"""Per-family analyses on internal couplings (docs/METHODS.md §3.10), with the benchmark-level code.

A family's **ladder** is its models sorted by N (ties by name) with x = log10 N and y = the chosen
internal coupling (``quantity``: last layer, mean over layers, smallest layer, mean head coupling).
On it, unchanged:

- the **internal gamma** between neighbouring sizes: the gamma rule of docs/METHODS.md §2.1
  (``cape_hpc.analysis.coupling.family_intervals``) with B1 = log10 N and B2 = y, i.e.
  dy / dlog10 N, with ``min_delta`` 0 (only equal N is undefined) and the phase thresholds of §2.2;
- **N_c** by the three estimators of §2.4 (``cape_hpc.analysis.nc.estimate_nc`` on the ladder table
  with the pair (log10 N, y)): where the internal gamma turns from negative to positive (the bottom
  of a coupling dip), the zero of the gamma line, the vertex of the quadratic in x;
- the **fixed point** of §2.10 (``fixed_point_xy``) on (x, y): dy/dlog10 N = a y + b, y* = -b / a,
  the paper's internal-coupling fit;
- the ladder's least-squares **slope** per decade and Pearson r.

A family with fewer than ``min_models`` models (default 3) gets no estimate (N_c, fixed point,
slope), with the reason.

**Two-level bootstrap**: resample r draws the models of the family with replacement (stream r of
``seed``, as §2.4) and, for every model, the prompt blocks of block-bootstrap resample r (stream r of
``seed + 1``, the same blocks in every model: the prompts are shared); the estimator is refitted on
the drawn models' resampled couplings.  Invalid fits are dropped and the interval is summarised by
``cape_hpc.stats.summarize``.  Without block statistics a family falls back to resampling models
only, and says so.  N_c runs on the fused kernels of ``cape nc`` (:class:`TwoLevelNcStatistic`: one
kernel call per chunk of resamples), the slope and the fixed point on their batched fits
(:class:`TwoLevelRowsStatistic`: ``ols_rows``, ``fixed_points``), a chunk of resamples per call;
:class:`TwoLevelStatistic` evaluates any statistic one resample at a time (the reference).

Progress (``cape_hpc.progress``): the block bootstrap of the models (models per second), the families
and every bootstrap are tasks, shown when the CLI installed a display.
"""
from __future__ import annotations

import math
import re
from typing import Callable

import numpy as np
import pandas as pd

from cape_hpc.analysis import ols_rows
from cape_hpc.analysis.coupling import family_intervals, interval_rows
from cape_hpc.analysis.fixedpoint import fixed_point_xy, fixed_points
from cape_hpc.analysis.nc import GammaNcStatistic, NcOptions, estimate_nc, note_fit_range
from cape_hpc.analysis.options import FixedPointOptions, PhasesOptions, narrow
from cape_hpc.analysis.phases import classify_phase, phases
from cape_hpc.crossmodel.options import CrossModelOptions
from cape_hpc.crossmodel.results import (CompetingHeads, CrossModelResult, FamilyLadder, GenerationComparison,
                                         InternalFixedPoint, InternalGamma, InternalNc, ModelRow, PhaseAgreement,
                                         PhaseRow)
from cape_hpc.crossmodel.table import (ModelInput, check_prompt_sets, model_replicates, model_row,
                                       quantity_value)
from cape_hpc import progress
from cape_hpc.errors import DataError, OptionError
from cape_hpc.schema import BootstrapSummary, ConfidenceInterval, Provenance
from cape_hpc.stats import BatchStatistic, bootstrap, percentile_interval, summarize, wilson_interval

__all__ = ["cross_model_analysis", "analyse_family", "TwoLevelStatistic", "TwoLevelRowsStatistic",
           "TwoLevelNcStatistic", "lineage",
           "LADDER_X", "LADDER_Y"]

LADDER_X = "log10_params"
LADDER_Y = "internal_coupling"


class TwoLevelStatistic(BatchStatistic):
    """A statistic ``fn(values[n], idx[m]) -> float`` of a family's models, bootstrapped over models
    and prompt blocks: resample r evaluates ``fn(reps[r], idx_r)`` with ``idx_r`` the models drawn by
    stream r and ``reps[r]`` every model's value in block resample r (``reps`` None: the point values,
    models only).  A resample with a NaN value among the drawn models is invalid."""

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], float], point: np.ndarray, reps: np.ndarray | None,
                 name: str, discrete: bool = False):
        self.fn = fn
        self.point = np.asarray(point, dtype=np.float64)
        self.reps = None if reps is None else np.asarray(reps, dtype=np.float64)
        self.n = int(self.point.size)
        self.name = name
        self.discrete = bool(discrete)
        self.fused = False

    def _eval(self, vals: np.ndarray, idx: np.ndarray) -> float:
        if not np.isfinite(vals[idx]).all():
            return math.nan
        try:
            v = float(self.fn(vals, idx))
        except np.linalg.LinAlgError:
            return math.nan
        return v if math.isfinite(v) else math.nan

    def full(self) -> float:
        return self._eval(self.point, np.arange(self.n, dtype=np.int64))

    def batch(self, idx: np.ndarray) -> np.ndarray:
        return np.array([self._eval(self.point, row) for row in np.asarray(idx)], dtype=np.float64)

    def stream(self, strata, count: int, seed: int, start: int) -> np.ndarray:
        from cape_kernels.resample import resample_indices

        idx = resample_indices(strata, count, seed, n=self.n, start=start)
        out = np.empty(count, dtype=np.float64)
        for j in range(count):
            vals = self.point if self.reps is None else self.reps[start + j]
            out[j] = self._eval(vals, idx[j])
        return out

    def options(self):
        return {"statistic": self.name, "levels": "models" if self.reps is None else "models x prompt blocks"}


class TwoLevelRowsStatistic(TwoLevelStatistic):
    """A statistic of a family's drawn models, bootstrapped over models and prompt blocks exactly as
    :class:`TwoLevelStatistic` (resample r: the models drawn by stream r, with every model's value in
    block resample r, ``reps[r]``; ``reps`` None: the point values; a drawn NaN makes the resample
    invalid), a whole chunk of resamples per call: ``rows(x [c, m], y [c, m]) -> [c]`` gets the drawn
    models' x and values, one resample per row.  Non-finite values are invalid (NaN)."""

    def __init__(self, rows: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, point: np.ndarray,
                 reps: np.ndarray | None, name: str, discrete: bool = False):
        super().__init__(rows, point, reps, name, discrete)          # ``fn`` is ``rows`` here
        self.x = np.ascontiguousarray(x, dtype=np.float64)

    def _fit(self, vals: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """float64[c]: the statistic of resample j = the models ``idx[j]`` with the values ``vals[j]``."""
        out = np.full(idx.shape[0], np.nan)
        y = np.take_along_axis(vals, idx, axis=1)
        ok = np.isfinite(y).all(axis=1)
        if ok.any():
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                out[ok] = self.fn(self.x[idx[ok]], y[ok])
        out[~np.isfinite(out)] = np.nan
        return out

    def full(self) -> float:
        return float(self._fit(self.point[None, :], np.arange(self.n, dtype=np.int64)[None, :])[0])

    def batch(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return self._fit(np.broadcast_to(self.point, (idx.shape[0], self.n)), idx)

    def stream(self, strata, count: int, seed: int, start: int) -> np.ndarray:
        from cape_kernels.resample import resample_indices

        idx = resample_indices(strata, count, seed, n=self.n, start=start)
        if self.reps is None:
            return self.batch(idx)
        return self._fit(self.reps[start:start + count], idx)


class TwoLevelNcStatistic(TwoLevelRowsStatistic):
    """log10 N_c of a family's ladder (x = log10 N sorted, ``point`` y) by ``estimator``, bootstrapped
    over models and prompt blocks exactly as :class:`TwoLevelStatistic` (same streams: resample r fits
    the models drawn by stream r with every model's value in block resample r, ``reps[r]``; ``reps``
    None: the point values; a drawn NaN makes the resample invalid), but a whole chunk of resamples in
    one call of the fused N_c kernels of ``cape nc`` (``cape_kernels.quadratic_nc_batch``, centred at
    the ladder's mean x as for one ladder, and ``analysis.nc.GammaNcStatistic`` over ``gamma_nc_batch``):
    the chunk's c ladders are laid end to end (resample j's model k at row j * n + k) and resample j's
    drawn models are shifted by j * n.  ``lo``/``hi``: the quadratic vertex window (the gamma-fit zero
    unbounded: -inf/inf).  Every value equals the per-resample path's bit for bit."""

    def __init__(self, estimator: str, x: np.ndarray, point: np.ndarray, reps: np.ndarray | None, lo: float,
                 hi: float, attach: str):
        super().__init__(None, x, point, reps, f"internal_nc_{estimator}", discrete=estimator == "sign-change")
        self.estimator, self.attach = estimator, attach
        self.lo, self.hi = float(lo), float(hi)

    def _fit(self, vals: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """float64[c]: N_c of resample j = the models ``idx[j]`` with the values ``vals[j]`` ([c, n])."""
        c, n = idx.shape[0], self.n
        out = np.full(c, np.nan)
        if c == 0 or (self.estimator == "quadratic" and n < 3):   # a quadratic needs 3 distinct N
            return out
        ok = np.isfinite(np.take_along_axis(vals, idx, axis=1)).all(axis=1)
        y = np.where(np.isfinite(vals), vals, 0.0).reshape(-1)    # an undrawn NaN: any finite stand-in
        x = np.tile(self.x, c)
        rows = idx + (n * np.arange(c, dtype=np.int64))[:, None]
        if self.estimator == "quadratic":
            from cape_kernels import quadratic_nc_batch

            out[ok] = quadratic_nc_batch(x, y, rows[ok], self.lo, self.hi, center=float(self.x.mean()))
        else:
            stat = GammaNcStatistic(self.estimator, np.zeros(c * n, dtype=np.int64), x, x, y, 0.0, -math.inf,
                                    math.inf, self.attach)
            out[ok] = stat.batch(rows[ok])
        out[~np.isfinite(out)] = np.nan
        return out


def _two_level_summary(stat: BatchStatistic, opts: CrossModelOptions) -> BootstrapSummary:
    """The summary of ``stat``'s two-level bootstrap (models x prompt blocks) with ``opts``."""
    return summarize(bootstrap(stat, opts))


def _ladder_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope per decade of each row's drawn models (x, y [c, m]; NaN with < 2 distinct N)."""
    return ols_rows(x, y)[0]


def _no_bootstrap(opts: CrossModelOptions, note: str) -> BootstrapSummary:
    """An empty summary saying why no bootstrap was run."""
    return BootstrapSummary.empty(opts.levels, note=note)


def analyse_family(family: str, names: list[str], params: np.ndarray, y: np.ndarray, y_ci: list[ConfidenceInterval],
                   reps: np.ndarray | None, opts: CrossModelOptions, note: str = ""
                   ) -> tuple[FamilyLadder, list[InternalGamma], list[InternalNc], InternalFixedPoint]:
    """The analyses of one family's ladder (arrays sorted by N): see the module doc.  ``reps`` [R, n]:
    block-bootstrap replicates of y (resample r = stream r of ``seed + 1``), or None."""
    n = len(names)
    x = np.log10(np.asarray(params, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    level = opts.level
    # internal gamma between neighbours (the gamma rule with B1 = log10 N)
    gammas: list[InternalGamma] = []
    rep_slopes = interval_rows(x, reps.T)[2] if reps is not None else None     # [n - 1, R] per decade
    for i, iv in enumerate(family_intervals(family, names, params, x, y, 0.0, opts.tax_below, opts.bonus_above), 1):
        ci = ConfidenceInterval.undefined(level)
        if rep_slopes is not None and not iv.reason:
            g = rep_slopes[i - 1]
            ci = percentile_interval(g[np.isfinite(g)], level)
        gammas.append(InternalGamma(family, iv.model, iv.prev_model, iv.n, iv.prev_n, iv.x_mid, iv.d_b2, iv.gamma, ci,
                                    iv.phase, iv.reason))
    enough = n >= opts.min_models
    reason = "" if enough else f"{n} model(s) < {opts.min_models}: no ladder estimate"
    slope = intercept = r = math.nan
    slope_boot = _no_bootstrap(opts, reason or "not bootstrapped")
    if enough:
        if np.unique(x).size >= 2:
            slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
            r = float(np.corrcoef(x, y)[0, 1]) if np.std(y) > 0 else math.nan
        else:
            reason = "fewer than 2 distinct N"
        slope_boot = _two_level_summary(TwoLevelRowsStatistic(_ladder_slopes, x, y, reps, "ladder_slope"), opts)
    ladder = FamilyLadder(family, opts.quantity, n, list(names), list(map(float, x)), list(map(float, y)),
                          [float(c.low) for c in y_ci], [float(c.high) for c in y_ci], slope, intercept, r, slope_boot,
                          reason)
    # N_c by the three estimators (point and reason by estimate_nc; interval by the two-level bootstrap)
    ncs: list[InternalNc] = []
    table = pd.DataFrame({"model": names, "family": family, "params": np.asarray(params, float), LADDER_X: x,
                          LADDER_Y: y})
    for est in opts.estimators:
        if not enough:
            ncs.append(InternalNc(family, est, n, math.nan, math.nan, reason, False, _no_bootstrap(opts, reason),
                                  [math.nan, math.nan]))
            continue
        nopts = NcOptions(pair=(LADDER_X, LADDER_Y), units="percent", min_delta=0.0, tax_below=opts.tax_below,
                          bonus_above=opts.bonus_above, estimator=est, attach=opts.attach, bootstrap=False,
                          n_resamples=opts.n_resamples, seed=opts.seed, levels=opts.levels, ci_method=opts.ci_method)
        e = estimate_nc(table, nopts).estimates[0]
        lo, hi = (float(x.min()), float(x.max())) if est == "quadratic" else (-math.inf, math.inf)
        stat = TwoLevelNcStatistic(est, x, y, reps, lo, hi, opts.attach)
        boot = note_fit_range(_two_level_summary(stat, opts), *e.fit_range, est)
        ncs.append(InternalNc(family, est, n, e.log10_nc, e.nc, e.reason, e.extrapolated, boot, list(e.fit_range)))
    # fixed point of the internal ladder
    fpo = FixedPointOptions(family=family, at=opts.at)
    if enough:
        fp = fixed_point_xy(x, y, fpo)
        stat = TwoLevelRowsStatistic(lambda xs, ys: fixed_points(xs, ys, fpo.at), x, y, reps, "internal_fixed_point")
        fixed = InternalFixedPoint(family, n, fp.a, fp.b, fp.gamma_star, fp.stability, fp.n_points, opts.at, fp.reason,
                                   _two_level_summary(stat, opts))
    else:
        fixed = InternalFixedPoint(family, n, math.nan, math.nan, math.nan, "undefined", 0, opts.at, reason,
                                   _no_bootstrap(opts, reason))
    ladder.note = note
    return ladder, gammas, ncs, fixed


# ------------------------------------------------------------------------------------------------
# generations


_VERSION = re.compile(r"^(?P<base>.*?)[-_ ]?v?(?P<ver>\d+(?:\.\d+)*)$")


def lineage(family: str) -> tuple[str, tuple[float, ...]] | None:
    """('Qwen', (2, 5)) for 'Qwen2.5', ('Gemma', (3,)) for 'Gemma-3'; None without a version."""
    m = _VERSION.match(family.strip())
    if not m or not m.group("base"):
        return None
    return m.group("base").rstrip("-_ "), tuple(float(v) for v in m.group("ver").split("."))


def _generation_pairs(families: list[str], opts: CrossModelOptions) -> list[tuple[str, str, str]]:
    if opts.generations:
        out = []
        for g in opts.generations:
            a, _, b = g.partition(":")
            for f in (a, b):
                if f not in families:
                    raise OptionError(f"option '--generations': unknown family {f!r} (families: "
                                      f"{', '.join(sorted(families)) or 'none'})")
            out.append((a.split("-")[0], a, b))
        return out
    groups: dict[str, list[tuple[tuple[float, ...], str]]] = {}
    for f in families:
        lv = lineage(f)
        if lv is not None:
            groups.setdefault(lv[0].lower(), []).append((lv[1], f))
    out = []
    for members in groups.values():
        members.sort()
        base = lineage(members[0][1])[0]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                out.append((base, members[i][1], members[j][1]))
    return out


def _generations(rows: list[ModelRow], reps: dict[str, np.ndarray | None], opts: CrossModelOptions
                 ) -> list[GenerationComparison]:
    fams: dict[str, list[ModelRow]] = {}
    for r in rows:
        if r.family and math.isfinite(r.params):
            fams.setdefault(r.family, []).append(r)
    out = []
    for base, fa, fb in _generation_pairs(sorted(fams), opts):
        for b in sorted(fams[fb], key=lambda r: (r.params, r.model)):
            cands = [(abs(math.log10(b.params) - math.log10(a.params)), a.model, a) for a in fams[fa]]
            cands = [c for c in cands if c[0] <= opts.match_tolerance + 1e-12]
            if not cands:
                continue
            d, _, a = min(cands)
            va, vb = quantity_value(a, opts.quantity), quantity_value(b, opts.quantity)
            ra, rb = reps.get(a.model), reps.get(b.model)
            ci = ConfidenceInterval.undefined(opts.level)
            if ra is not None and rb is not None:
                diff = rb - ra
                ci = percentile_interval(diff[np.isfinite(diff)], opts.level)
            out.append(GenerationComparison(base, fa, a.model, fb, b.model, a.params, b.params,
                                            math.log10(b.params) - math.log10(a.params), va, vb, vb - va, ci,
                                            a.head_cooperative_share, b.head_cooperative_share))
    return out


# ------------------------------------------------------------------------------------------------
# heads, phases


def competing_heads(rows: list[ModelRow], level: float) -> CompetingHeads:
    """Models with zero competing heads among those whose heads were measured (Wilson interval)."""
    measured = [r for r in rows if r.n_heads_total > 0]
    k = sum(1 for r in measured if r.head_competing_count == 0)
    n = len(measured)
    ci = wilson_interval(k, n, level) if n else ConfidenceInterval.undefined(level)
    return CompetingHeads(n, k, k / n if n else math.nan, ci,
                          [r.model for r in measured if r.head_competing_count > 0],
                          [r.model for r in rows if r.n_heads_total == 0])


def phase_agreement(rows: list[ModelRow], gammas: list[InternalGamma], scores: pd.DataFrame | None,
                    opts: CrossModelOptions) -> tuple[list[PhaseRow], PhaseAgreement]:
    """The internal phase of each model beside its benchmark-level phase (docs/METHODS.md §2.2)."""
    level = opts.level
    if scores is None:
        return [], PhaseAgreement(0, 0, math.nan, ConfidenceInterval.undefined(level), "no score table given")
    bench = phases(scores, narrow(opts, PhasesOptions, families=None))
    by_model = {m.model.lower(): m for m in bench.models}
    attached = {g.model: g for g in gammas}
    out: list[PhaseRow] = []
    for r in rows:
        bm = by_model.get(r.model.lower())
        if bm is None:
            continue
        g = attached.get(r.model)
        if opts.phase_from == "slope":
            ig = g.gamma if g is not None else math.nan
            ip = (g.phase if g is not None else "")
            why = "" if g is not None and g.phase else ("smallest model of its ladder" if g is None else g.reason)
        else:
            ig = quantity_value(r, opts.quantity)
            ip = classify_phase(ig, opts.tax_below, opts.bonus_above) or ""
            why = "" if ip else "internal coupling undefined"
        if not bm.phase:
            why = "; ".join(x for x in (why, f"benchmark phase undefined ({bm.reason})") if x)
        agree = bool(ip and bm.phase and ip == bm.phase)
        out.append(PhaseRow(r.model, r.family, float(ig), ip, float(bm.gamma), bm.phase, agree, why))
    both = [p for p in out if p.internal_phase and p.benchmark_phase]
    k, n = sum(p.agree for p in both), len(both)
    ci = wilson_interval(k, n, level) if n else ConfidenceInterval.undefined(level)
    note = "" if n else "no model has both an internal and a benchmark-level phase"
    return out, PhaseAgreement(n, k, k / n if n else math.nan, ci, note)


# ------------------------------------------------------------------------------------------------
# everything


def _family_of(fam: str, members: list[ModelRow], reps: dict[str, np.ndarray | None], opts: CrossModelOptions):
    """``analyse_family`` of one family's rows: the usable models sorted by N, their block replicates
    stacked [R, n] (None when a model has none: models only), and the notes on what was left out."""
    usable = [r for r in members if math.isfinite(r.params) and r.params > 0
              and math.isfinite(quantity_value(r, opts.quantity))]
    left = [r.model for r in members if r not in usable]
    usable.sort(key=lambda r: (r.params, r.model))
    names = [r.model for r in usable]
    notes = []
    if left:
        notes.append(f"left out (no parameter count or no {opts.quantity} coupling): {', '.join(left)}")
    R = None
    if names and all(reps.get(m) is not None for m in names):
        R = np.stack([reps[m] for m in names], axis=1)
    elif names:
        notes.append("models only: no block statistics for " + ", ".join(m for m in names if reps.get(m) is None))
    y_ci = [getattr(r, f"{opts.quantity}_coupling_ci" if opts.quantity != "head_net" else "head_net_ci")
            for r in usable]
    return analyse_family(fam, names, np.array([r.params for r in usable]),
                          np.array([quantity_value(r, opts.quantity) for r in usable]), y_ci, R, opts, "; ".join(notes))


def cross_model_analysis(inputs: list[ModelInput], opts: CrossModelOptions | None = None,
                         scores: pd.DataFrame | None = None) -> CrossModelResult:
    """The cross-model table and every per-family analysis of ``inputs`` (``table.read_inputs``)."""
    opts = opts or CrossModelOptions()
    check_prompt_sets(inputs)
    if opts.families is not None:
        known = {mi.family for mi in inputs}
        unknown = [f for f in opts.families if f not in known]
        if unknown:
            raise OptionError(f"option '--families': unknown famil{'y' if len(unknown) == 1 else 'ies'} "
                              f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(k for k in known if k))})")
    level = opts.level
    rows: list[ModelRow] = []
    reps: dict[str, np.ndarray | None] = {}
    with progress.task("block bootstrap", total=len(inputs), unit="model") as advance:
        for mi in inputs:
            rep = model_replicates(mi.result, opts.n_resamples, opts.seed, level)
            rows.append(model_row(mi, rep, level))
            reps[mi.name] = None if rep is None or opts.quantity not in rep else rep[opts.quantity]
            del rep
            advance(1)
    ladders, gammas, ncs, fixed = [], [], [], []
    fams: dict[str, list[ModelRow]] = {}
    for r in rows:
        if r.family and (opts.families is None or r.family in opts.families):
            fams.setdefault(r.family, []).append(r)
    with progress.task("families", total=len(fams), unit="family") as advance:
        for fam, members in fams.items():
            lad, gam, nc, fp = _family_of(fam, members, reps, opts)
            ladders.append(lad)
            gammas += gam
            ncs += nc
            fixed.append(fp)
            advance(1)
    heads = competing_heads(rows, level)
    prow, agree = phase_agreement(rows, gammas, scores, opts)
    gens = _generations(rows, reps, opts)
    r0 = inputs[0].result
    blocks = next((mi.result.blocks for mi in inputs if mi.result.blocks.n_blocks), r0.blocks)
    inputs_list = sorted({mi.where.rsplit(":/internals/", 1)[0] for mi in inputs})
    prov_inputs = {mi.name: mi.result.prompt_set_sha256 for mi in inputs}
    if scores is not None:
        prov_inputs["scores"] = str(scores.attrs.get("sha256", ""))
    prov = Provenance("cape_hpc.crossmodel.cross_model_analysis", opts.to_dict(), seed=opts.seed,
                      n_resamples=opts.n_resamples, inputs=prov_inputs)
    return CrossModelResult(opts.quantity, r0.set_r, r0.set_t, r0.prompt_set_sha256, r0.pooling, int(blocks.n_blocks),
                            int(blocks.seed), rows, ladders, gammas, ncs, fixed, heads, prow, agree, gens, inputs_list,
                            prov)


def from_files(paths, opts: CrossModelOptions | None = None, scores: pd.DataFrame | None = None,
               counted: dict[str, float] | None = None) -> CrossModelResult:
    """``cross_model_analysis`` of every ``/internals`` group in ``paths``."""
    from cape_hpc.crossmodel.table import read_inputs

    if not paths:
        raise DataError("no input file given")
    return cross_model_analysis(read_inputs(paths, scores, counted), opts, scores)
