"""Benchmark-level CAPE commands: one per analysis (docs/METHODS.md §2) and `cape analyze` (all of them).

Every command reads the shipped tables or any table in the same schema (``--scores``,
``--frontier``, ``--loss``), prints human-readable tables (or ``--json`` with every option, seed and
count), and can write its result to an HDF5 file (``--out``; atomic, refuses different content
without ``--force``) together with the input tables under ``/scores/...``.

The flags of a command are generated from its method's options class (``Opts.add_arguments``) and
read back with ``Opts.from_args``: a default lives in the option only.  ``cape analyze`` is a loop
over ``ANALYSES``, a table of (name, options class, function, input table, printer).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cape_hpc.analysis.deff import DeffOptions
from cape_hpc.analysis.nc import ESTIMATORS, NcOptions
from cape_hpc.analysis.options import (CouplingOptions, DiagnoseOptions, EigenOptions, FixedPointOptions,
                                       FrontierOptions, HFieldOptions, IsoclineOptions, IsoclineRule, LossOptions,
                                       PermutationOptions, PhasesOptions, PopulationOptions, WidthOptions)
from cape_hpc.commands.common import add_output_args, add_scores_arg, emit_json, fmt, print_table
from cape_hpc.errors import OptionError
from cape_hpc.options import Options, option
from cape_hpc.schema import Provenance
from cape_hpc.stats.options import BootstrapOptions

from numpy.linalg import LinAlgError  # a singular fit on degenerate data


# ----------------------------------------------------------------------------------------------
# inputs

def _load(table: str, args) -> Any:
    from cape_hpc.io import scores

    loader, flag = {"base": (scores.load_scores, "scores"), "frontier": (scores.load_frontier, "frontier"),
                    "loss": (scores.load_loss, "loss")}[table]
    return loader(getattr(args, flag, None))


def _add_input(p: argparse.ArgumentParser, table: str) -> None:
    if table == "base":
        add_scores_arg(p)
    elif table == "frontier":
        p.add_argument("--frontier", metavar="CSV", default=None, help="frontier table (default data/frontier.csv)")
    else:
        p.add_argument("--loss", metavar="CSV", default=None, help="loss table (default data/pythia_loss.csv)")


def _table_group(df):
    from cape_hpc.io.scores import InputTable

    return InputTable.of(df)


def _input_summary(df) -> dict[str, Any]:
    t = _table_group(df)
    return {"file": t.file, "sha256": t.sha256, "n_rows": t.n_rows}


def _progress(args) -> bool:
    return not getattr(args, "json", False) and sys.stderr.isatty()


def _check_out(args) -> None:
    """Check ``--out`` before anything is computed: a folder, a parent that is a file, a folder
    that cannot be written, an empty path or a NUL are one-line errors now, not after the run."""
    if getattr(args, "out", None) is not None:
        from cape_hpc.io.store import check_target

        check_target(args.out)


def _write(args, groups: dict[str, Any], tables: dict[str, Any]) -> None:
    if getattr(args, "out", None) is None:
        return
    from cape_hpc.io.store import write_results

    groups = {**groups, **{f"/scores/{k}": _table_group(v) for k, v in tables.items()}}
    write_results(args.out, groups, force=args.force)
    if not args.json:
        print(f"\nwrote {args.out}")


def _func(path: str) -> Callable:
    """'module:function' of cape_hpc.analysis, imported when the command runs (not at parse time)."""
    module, name = path.split(":")
    return getattr(importlib.import_module(f"cape_hpc.analysis.{module}"), name)


def _ci(summary, level=0.95, log=True, fit_range=None) -> str:
    """An interval as the tables print it; a bound of a log10 N interval beyond ``fit_range`` (the
    data's log10 N range) is printed as that edge ('>9.09': beyond the largest model), never as the
    extrapolated number (docs/METHODS.md §2.4, "Interval notes")."""
    ci = summary.interval(level)
    if not ci.defined:
        return "-"
    if log:
        return f"[{_log_b(ci.low, fit_range)}, {_log_b(ci.high, fit_range)}]"
    return f"[{ci.low:.4g}, {ci.high:.4g}]"


def _notes(summary, *extra: str) -> str:
    """The short notes column: the estimate's own reason, then the interval's tags (the share of
    valid resamples only when too few: the 'valid' column shows the count)."""
    tags = [t for t in summary.tags() if not (t[:1].isdigit() and not t.endswith("too few"))]
    return "; ".join(x for x in (*extra, *tags) if x)


def _log_b(v: float, fit_range) -> str:
    """A log10 N value in billions; beyond ``fit_range`` the data's edge ('>9.1') instead."""
    if not math.isfinite(v):
        return "-"
    if fit_range is not None and all(math.isfinite(x) for x in fit_range):
        if v < fit_range[0]:
            return f"<{_b(fit_range[0]):.3g}"
        if v > fit_range[1]:
            return f">{_b(fit_range[1]):.3g}"
    return f"{_b(v):.4g}"


def _b(log10_n: float) -> float:
    """10 ** log10_n in billions (inf beyond the largest float: a huge-N table prints, never overflows)."""
    return 10.0 ** log10_n / 1e9 if log10_n < 308.0 else math.inf


# ----------------------------------------------------------------------------------------------
# printers

def print_coupling(r) -> None:
    rows = [(iv.family, iv.prev_model, iv.model, iv.x_mid, iv.d_b1, iv.d_b2, iv.gamma, iv.phase or "-",
             iv.reason or "") for iv in r.intervals]
    print_table(rows, ["family", "from", "to", "x_mid", f"d{r.b1}", f"d{r.b2}", "gamma", "phase", "reason"],
                title=f"Local coupling gamma = d{r.b2}/d{r.b1} (min_delta {r.min_delta:g} {r.units})")
    if r.dropped:
        print(f"left out for a blank score: {', '.join(r.dropped)}")


def print_phases(r) -> None:
    rows = [(m.family, m.model, m.params / 1e9, m.gamma, m.phase or "-", m.reason) for m in r.models]
    print_table(rows, ["family", "model", "N (B)", "gamma", "phase", "note"],
                title=f"Phases ({r.b1}, {r.b2}): tax < {r.tax_below:g} <= transition <= {r.bonus_above:g} < bonus "
                      f"(min_delta {r.min_delta:g} {r.units})")
    print_table([(p, r.counts[p], r.families_per_phase.get(p, "-")) for p in r.counts],
                ["phase", "models", "families"], title="Counts")


def print_population(r) -> None:
    rows = [(g.group, g.n, g.pearson_r, g.pearson_p, g.spearman_rho, g.spearman_p, g.perm_pearson_p,
             g.perm_spearman_p, g.reason) for g in r.groups]
    phase = f"; phases with min_delta in {r.units}" if r.group_by == "phase" else ""
    print_table(rows, ["group", "n", "pearson r", "p", "spearman", "p", "perm p (r)", "perm p (rho)", "note"],
                title=f"Population coupling r({r.b1}, {r.b2}) by {r.group_by}, p: analytic + {r.p_method}{phase}")


def print_nc(results) -> None:
    from cape_hpc.analysis.nc import MIN_MODELS

    for r in results:
        rows = []
        small = [e.scope for e in r.estimates if e.n_models < MIN_MODELS]
        for e in r.estimates:
            if e.n_models < MIN_MODELS:
                continue
            b = e.bootstrap
            # an extrapolated point is not printed as a number (it can be 3e15 B): the data's edge instead
            point = e.nc / 1e9 if not e.extrapolated else f"{_log_b(e.log10_nc, e.fit_range)} (extrapolated)"
            rows.append((e.scope, e.n_models, point, _ci(b, 0.95, fit_range=e.fit_range),
                         _ci(b, 0.68, fit_range=e.fit_range), _log_b(b.median, e.fit_range),
                         f"{b.n_valid}/{b.n_resamples}" if b.n_resamples else "-",
                         _notes(b, e.reason, "extrapolated" if e.extrapolated and not b.extrapolated else "")))
        opts = r.provenance.options
        print_table(rows, ["scope", "models", "N_c (B)", "95% CI (B)", "68% CI (B)", "boot median (B)", "valid",
                           "note"],
                    title=f"N_c [{r.estimator}] pair ({r.b1}, {r.b2}), min_delta in {opts.get('units', '-')}; "
                          f"bootstrap: {opts.get('ci_method', 'none')}, stratify={opts.get('stratify', '-')}, "
                          f"seed={r.provenance.seed}")
        if small:
            print(f"fewer than {MIN_MODELS} models (no estimate): {', '.join(small)}")


def print_deff(r) -> None:
    rows = [(g.group, g.n_models, g.n_families, g.d_eff, _ci(g.bootstrap, 0.95, log=False),
             _ci(g.bootstrap, 0.68, log=False), f"{g.bootstrap.n_valid}/{g.bootstrap.n_resamples}",
             _notes(g.bootstrap, g.reason)) for g in r.groups]
    o = r.provenance.options
    print_table(rows, ["group", "models", "families", "d_eff", "95% CI", "68% CI", "valid", "note"],
                title=f"d_eff ({r.matrix}, {', '.join(r.columns)}); bootstrap {o.get('ci_method', 'none')}, "
                      f"stratify={o.get('stratify', '-')}, seed={r.provenance.seed}")
    if r.dropped:
        print(f"left out for a blank score: {', '.join(r.dropped)}")


def print_width(r) -> None:
    rows = [(f.family, f.n, f.r_before, f.r_after, f.null_mean, f"[{fmt(f.null_q025)}, {fmt(f.null_q975)}]",
             f.null_frac_positive, f.p_null, ("exact" if f.exact else f.n_null) if f.n_null else "-", f.reason)
            for f in r.families]
    print_table(rows, ["family", "n", "r before", "r after", "null mean", "null 95%", "null >0", "p_null",
                       "perms", "note"],
                title=f"Width normalisation s / (d_model / {r.d_ref:g}): r({r.b1}, {r.b2}) with the "
                      f"permuted-width control (r does not depend on units)")


def print_hfield(r) -> None:
    print(f"\nPopulation line: {r.b2} = {r.beta1:.4g} * {r.b1} + {r.beta0:.4g}  (n = {r.n_fit}, {r.units})")
    print_table([(g.group, g.count, g.mean_h, g.std_h) for g in r.groups], [r.group_by, "n", "mean h", "std h"],
                title=f"h per group ({r.units})")


def print_isocline(r) -> None:
    print(f"\nIsocline {r.b2}_c = sqrt(k * {r.b1}) (fractions), k = {r.k:.5g} from {r.calibration}; rule {r.rule}; "
          f"min_delta {r.min_delta:g} {r.units}")
    print_table([(f.family, f.n_intervals, f.n_agree, f.fraction, f.n_above) for f in r.families],
                ["family", "intervals", "agree", "fraction", "above"], title="Agreement per family")
    print(f"total: {r.total_agree}/{r.total_intervals}")


def print_loss(r) -> None:
    print_table([("E", r.E, r.E_se), ("A", r.A, r.A_se), ("alpha", r.alpha, r.alpha_se)],
                ["parameter", "value", "std error"],
                title=f"Loss law L = E + A (N / {r.n_scale:g})^-alpha")
    print(f"R^2 = {r.r2:.6f}; CV of N^alpha (L - E) = {100 * r.cv:.3f}% (ddof {r.cv_ddof}); "
          f"A for N in parameters = {r.A_raw:.4g}")


def print_fixedpoint(r) -> None:
    print(f"\nFixed point of gamma ({r.family}, min_delta {fmt(r.min_delta)} {r.units}): dgamma/dlogN = a gamma + b, "
          f"a = {fmt(r.a)}, b = {fmt(r.b)}, gamma* = {fmt(r.gamma_star)} ({r.stability}; {r.n_points} derivative "
          f"points) {r.reason}")


def print_eigen(r) -> None:
    rows = [(w.first_model, w.last_model, w.n_models, w.lambda1, w.lambda2,
             " ".join(f"{v:+.2f}" for v in w.e2), w.e2_angle_deg, w.e2_step_deg) for w in r.windows]
    print_table(rows, ["from", "to", "n", "lambda1", "lambda2", f"e2 ({' '.join(r.columns)})", "angle", "step"],
                title=f"Eigen-geometry {r.family} ({r.matrix}, {r.mode} windows, scores in {r.units})")
    print(f"lambda2 ~ N^{fmt(r.power_exponent)} (R^2 = {fmt(r.power_r2)}, {r.n_power_points} windows)")


def print_frontier(r) -> None:
    print(f"\nFrontier ({r.cohort}, n = {r.n}, {r.units}): {r.b2} = {r.slope:.4g} * {r.b1} + {r.intercept:.4g}, "
          f"r = {r.r:.4f}, p = {r.p:.3g}")
    print_table([(lf.lab, lf.n, lf.slope, lf.intercept, lf.holdout_mae, lf.mean_h) for lf in r.labs],
                ["lab", "n", "own slope", "own intercept", "LOLO MAE", "mean h"],
                title=f"Labs with >= {r.min_lab_size} models (leave-one-lab-out)")
    print(f"LOLO MAE mean = {r.lolo_mae_mean:.3f}, std = {r.lolo_mae_std_ddof0:.3f} (ddof 0) / "
          f"{r.lolo_mae_std_ddof1:.3f} (ddof 1) over {r.n_lolo_labs} labs ({r.units})")


def print_diagnose_model(m) -> None:
    print(f"\nDiagnose model ({m.b1}, {m.b2}; {m.units}): min_delta {m.min_delta:g}, line {m.b2} = {m.beta1:.4g} * "
          f"{m.b1} + {m.beta0:.4g}, isocline k = {m.k:.5g} ({m.calibration}, {m.rule}), "
          f"{len(m.panel_model)} panel models")


def print_diagnosis(d) -> None:
    rows = [("model", d.name or "-"), ("family", d.family or "-"), ("N", f"{d.params:.4g}"),
            ("scores", f"{fmt(d.b1)}, {fmt(d.b2)} ({d.units})"),
            ("gamma (own interval)", f"{fmt(d.gamma_prev)} from {d.prev_model or '-'}"),
            ("gamma (next interval)", f"{fmt(d.gamma_next)} to {d.next_model or '-'}"),
            ("phase", f"{d.phase or 'unknown'} ({d.phase_source or '-'})"),
            ("isocline side", f"{d.isocline_side or '-'} (isocline at {fmt(d.isocline_b2)}, predicts "
                              f"{'+' if d.predicted_sign > 0 else '-' if d.predicted_sign < 0 else '?'})"),
            ("h", f"{fmt(d.h)} ({d.units})")]
    print_table(rows, ["", ""], title="Diagnosis")
    for line in d.levers:
        print(f"  lever: {line}")
    for line in d.notes + ([d.gamma_reason] if d.gamma_reason else []):
        print(f"  note: {line}")


# ----------------------------------------------------------------------------------------------
# one command per analysis: (name, summary, options class, function, input table, printer)

@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    options: type
    func: str                   # 'module:function' in cape_hpc.analysis, called as func(table, opts)
    table: str                  # input table: base | frontier | loss
    printer: Callable
    section: str                # of docs/METHODS.md


COMMANDS = (
    Command("coupling", "local coupling gamma = dB2/dB1 between consecutive sizes of each family",
            CouplingOptions, "coupling:local_coupling", "base", print_coupling, "§2.1"),
    Command("phases", "phase (tax / transition / bonus) of every model", PhasesOptions, "phases:phases", "base",
            print_phases, "§2.2"),
    Command("population", "Pearson and Spearman coupling over all models, per family or per phase",
            PopulationOptions, "population:population_coupling", "base", print_population, "§2.3"),
    Command("width", "width-normalised r per family with the permuted-width control", WidthOptions,
            "width:width_normalisation", "base", print_width, "§2.6"),
    Command("hfield", "residual field h against the population line, by family or lab", HFieldOptions,
            "hfield:h_field", "base", print_hfield, "§2.7"),
    Command("isocline", "isocline side of every interval and its sign agreement per family", IsoclineOptions,
            "isocline:isocline", "base", print_isocline, "§2.8"),
    Command("loss", "loss law L = E + A N^-alpha (curve_fit)", LossOptions, "losslaw:loss_law", "loss", print_loss, "§2.9"),
    Command("fixedpoint", "fixed point of dgamma/dlogN = a gamma + b in one family", FixedPointOptions,
            "fixedpoint:coupling_fixed_point", "base", print_fixedpoint, "§2.10"),
    Command("eigen", "PCA windows along N in one family: lambda1, lambda2, e2, power law", EigenOptions,
            "eigen:eigen_geometry", "base", print_eigen, "§2.11"),
    Command("frontier", "frontier regression GPQA ~ SWE, per-lab slopes, leave-one-lab-out", FrontierOptions,
            "frontier:frontier_fit", "frontier", print_frontier, "§2.12"),
)


def _table_of(cmd: Command, opts: Options) -> str:
    if cmd.name == "hfield":  # the h-field runs on either panel
        return opts.panel
    return cmd.table


def run_command(cmd: Command, args) -> int:
    opts = cmd.options.from_args(args)
    _check_out(args)
    table = _table_of(cmd, opts)
    df = _load(table, args)
    result = _func(cmd.func)(df, opts)
    if args.json:
        emit_json(result)
    else:
        cmd.printer(result)
    _write(args, {f"/analysis/{cmd.name}": result}, {table: df})
    return 0


# ----------------------------------------------------------------------------------------------
# nc and deff (methods with a bootstrap; options NcOptions / DeffOptions)

SCOPES = {"per-family": (False,), "pooled": (True,), "both": (False, True)}


@dataclass(frozen=True)
class NcRunOptions(Options):
    """Which N_c results `cape nc` computes: estimators x scopes, one NcResult each."""

    estimators: tuple[str, ...] = option(ESTIMATORS, flag="--estimator", help="N_c estimators to run",
                                         choices=ESTIMATORS)
    scope: str = option("both", help="per family, over the pooled families, or both", choices=tuple(SCOPES))


def nc_results(df, opts: NcOptions, run: NcRunOptions, progress: bool) -> dict[str, Any]:
    """{'<estimator>[_pooled]': NcResult}: every estimator of ``run`` in every scope of ``run``."""
    return {est + ("_pooled" if pooled else ""): _func("nc:estimate_nc")(df, opts.replace(estimator=est, pooled=pooled),
                                                               progress=progress)
            for est in run.estimators for pooled in SCOPES[run.scope]}


def run_nc(args) -> int:
    opts, run = NcOptions.from_args(args), NcRunOptions.from_args(args)
    _check_out(args)
    df = _load("base", args)
    res = nc_results(df, opts, run, _progress(args))
    if args.json:
        emit_json(res)
    else:
        print_nc(list(res.values()))
    _write(args, {"/analysis/nc": res}, {"base": df})
    return 0


def run_deff(args) -> int:
    opts = DeffOptions.from_args(args)
    _check_out(args)
    df = _load("base", args)
    r = _deff(df, opts, args)
    if args.json:
        emit_json(r)
    else:
        print_deff(r)
    _write(args, {"/analysis/deff": r}, {"base": df})
    return 0


# ----------------------------------------------------------------------------------------------
# diagnose: the method's options (generated flags) and the query (the model asked about: an input)

def _count(text: str) -> float:
    """'7B', '125M', '1.3e9', '70000000' -> a parameter count."""
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][+-]?\d+)?)\s*([kKmMbBtT]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a parameter count: {text!r} (e.g. 7B, 125M, 1.3e9)")
    mult = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return float(m.group(1)) * mult


def _score_kv(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k.strip(), float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number in {text!r}") from None


def _add_query(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("the model to diagnose")
    q.add_argument("--params", type=_count, default=None, help="parameter count (7B, 125M, 1.3e9)")
    q.add_argument("--name", default="", help="model name (a table model fills family and scores)")
    q.add_argument("--family", default="", help="its family (the neighbours for gamma)")
    q.add_argument("--score", type=_score_kv, action="append", metavar="COL=VALUE",
                   help="a score in --units, e.g. --score HS=62.5 (repeat for B1 and B2)")
    q.add_argument("--d-model", type=float, default=None, help="its width (for the width factor)")


def run_diagnose(args) -> int:
    from cape_hpc.analysis.diagnose import diagnose_point, fit_diagnose_model

    opts = DiagnoseOptions.from_args(args)
    _check_out(args)
    df = _load("base", args)
    params = args.params
    if params is None:
        if args.name and args.name in set(df["model"]):
            params = float(df.loc[df["model"] == args.name, "params"].iloc[0])
        else:
            raise OptionError("option '--params': required unless --name is a model of the score table")
    model = fit_diagnose_model(df, opts)
    d = diagnose_point(model, params, family=args.family or None, scores=dict(args.score or []),
                       d_model=args.d_model, name=args.name)
    if args.json:
        emit_json(d)
    else:
        print_diagnosis(d)
    _write(args, {"/analysis/diagnose": d, "/analysis/diagnose_model": model}, {"base": df})
    return 0


# ----------------------------------------------------------------------------------------------
# cape analyze: a loop over a table of analyses

@dataclass(frozen=True)
class AnalyzeOptions(Options):
    """The families of the two single-family analyses that `cape analyze` runs, and ``--set`` for any
    other option of any analysis."""

    fixedpoint_family: str = option(FixedPointOptions.default_of("family"), help="family of the fixed-point fit")
    eigen_family: str = option(EigenOptions.default_of("family"), help="family of the eigen-geometry")
    set: tuple[str, ...] | None = option(
        None, flag="--set", metavar="ANALYSIS.OPTION=VALUE",
        help="any option of one analysis, e.g. --set isocline.calibration=Pythia --set eigen.mode=sliding "
             "--set nc.window=8,11 (lists: commas; none: 'none'; the option names of `cape <analysis> --help` "
             "with _ for -); repeat for several")


#: the option classes whose flags `cape analyze` offers; each analysis takes those of its own fields
ANALYZE_FLAGS = (CouplingOptions, BootstrapOptions, PermutationOptions, IsoclineRule, AnalyzeOptions)


@dataclass(frozen=True)
class Analysis:
    """One row of `cape analyze`: stored as /analysis/<name> and printed (when ``printer``) in order."""

    name: str
    options: type
    func: Callable | str        # 'module:function' (func(table, opts)) or a callable (table, opts, args)
    table: str                  # base | frontier | loss
    printer: Callable | None = None
    fixed: dict[str, Any] = field(default_factory=dict)     # options fixed for this row
    own: tuple[str, ...] = ()                               # fields that keep their default here
    from_flags: dict[str, str] = field(default_factory=dict)  # field <- analyze flag (AnalyzeOptions)
    family: bool = False        # a single-family analysis: skipped when its family is not in the table


def _nc_six(df, opts, args):
    """The six N_c results (every estimator, per family and pooled): `cape nc` at its defaults."""
    return nc_results(df, opts, NcRunOptions(), _progress(args))


def _deff(df, opts, args):
    return _func("deff:effective_dimension")(df, opts, progress=_progress(args))


def analyses() -> tuple[Analysis, ...]:
    """The rows of `cape analyze`, in the order they run and print."""
    return (
        Analysis("coupling", CouplingOptions, "coupling:local_coupling", "base", print_coupling),
        Analysis("phases", PhasesOptions, "phases:phases", "base", print_phases),
        Analysis("population", PopulationOptions, "population:population_coupling", "base",
                 fixed={"group_by": "family"}),
        Analysis("population_all", PopulationOptions, "population:population_coupling", "base", print_population,
                 fixed={"group_by": "all"}),
        Analysis("population_phase", PopulationOptions, "population:population_coupling", "base", print_population,
                 fixed={"group_by": "phase"}),
        Analysis("nc", NcOptions, _nc_six, "base", lambda res: print_nc(list(res.values())), own=("estimator", "pooled")),
        Analysis("deff", DeffOptions, _deff, "base", print_deff),
        Analysis("width", WidthOptions, "width:width_normalisation", "base", print_width),
        Analysis("hfield", HFieldOptions, "hfield:h_field", "base", print_hfield),
        Analysis("isocline", IsoclineOptions, "isocline:isocline", "base", print_isocline),
        Analysis("loss", LossOptions, "losslaw:loss_law", "loss", print_loss),
        Analysis("fixedpoint", FixedPointOptions, "fixedpoint:coupling_fixed_point", "base", print_fixedpoint,
                 from_flags={"family": "fixedpoint_family"}, family=True),
        Analysis("eigen", EigenOptions, "eigen:eigen_geometry", "base", print_eigen,
                 from_flags={"family": "eigen_family"}, family=True),
        Analysis("frontier", FrontierOptions, "frontier:frontier_fit", "frontier", print_frontier, own=("pair",)),
        Analysis("frontier_hfield", HFieldOptions, "hfield:h_field", "frontier", own=("pair",),
                 fixed={"panel": "frontier", "fit_cohort": "main"}),
        Analysis("diagnose_model", DiagnoseOptions, "diagnose:fit_diagnose_model", "base", print_diagnose_model),
    )


def parse_sets(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``--set ANALYSIS.OPTION=VALUE`` items -> {analysis: {field: value}} (OptionError naming the item)."""
    rows = {a.name: a for a in analyses()}
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, eq, text = item.partition("=")
        name, dot, fld = key.strip().partition(".")
        fld = fld.replace("-", "_")
        if not eq or not dot or not fld:
            raise OptionError(f"option '--set': expected ANALYSIS.OPTION=VALUE, got {item!r}")
        if name not in rows:
            raise OptionError(f"option '--set': unknown analysis {name!r} (analyses: {', '.join(rows)})")
        a = rows[name]
        fields = {f.name for f in dataclasses.fields(a.options)}
        if fld not in fields:
            raise OptionError(f"option '--set': {name} has no option {fld!r} "
                              f"(its options: {', '.join(sorted(settable(a)))})")
        if fld not in settable(a):
            why = ("fixed for this row" if fld in a.fixed else
                   f"set by --{a.from_flags[fld].replace('_', '-')}" if fld in a.from_flags else
                   "every value is run by this row")
            raise OptionError(f"option '--set': {name}.{fld} cannot be set ({why})")
        out.setdefault(name, {})[fld] = a.options.parse_field(fld, text, label=f"option '--set {name}.{fld}'")
    return out


def settable(a: Analysis) -> set[str]:
    """The options of one row that ``--set`` may change (all but ``own``, ``fixed`` and ``from_flags``)."""
    return {f.name for f in dataclasses.fields(a.options)} - set(a.own) - set(a.fixed) - set(a.from_flags)


def analysis_options(a: Analysis, args, sets: dict[str, dict[str, Any]] | None = None) -> Options:
    """The options of one row: the analyze flags it declares (but ``own``), then ``fixed``,
    ``from_flags`` and the row's ``--set`` items."""
    names = {f.name for f in dataclasses.fields(a.options)} - set(a.own)
    taken = argparse.Namespace(**{n: getattr(args, n) for n in names if hasattr(args, n)})
    mine = (sets or {}).get(a.name, {})
    try:
        return a.options.from_args(taken, **a.fixed, **{k: getattr(args, v) for k, v in a.from_flags.items()},
                                   **mine)
    except OptionError as exc:
        if mine:
            raise OptionError(f"{a.name} (--set {', '.join(f'{a.name}.{k}' for k in mine)}): {exc}") from None
        raise


def run_analyze(args) -> int:
    """Every analysis of ``analyses()``, printed in order and optionally stored.  An analysis that
    cannot run on this table is skipped with its reason (printed, in --json, and stored under
    ``/analyze``); the others still run and are stored."""
    import logging

    from cape_hpc.errors import CapeError, DataError
    from cape_hpc.io.runs import AnalyzeRun, SkippedAnalysis

    log = logging.getLogger(__name__)
    run_opts = AnalyzeOptions.from_args(args)
    sets = parse_sets(run_opts.set)
    rows = [(a, analysis_options(a, args, sets)) for a in analyses()]   # bad flags fail before any work
    _check_out(args)
    tables = {t: _load(t, args) for t in ("base", "frontier", "loss")}
    families = set(tables["base"]["family"]) if args.families is None else set(args.families)
    res: dict[str, Any] = {}
    skipped: list[SkippedAnalysis] = []
    printers = []
    for a, opts in rows:
        if a.family and opts.family not in families:
            flag = "--" + a.from_flags.get("family", "family").replace("_", "-")
            skipped.append(SkippedAnalysis(a.name, f"family {opts.family!r} is not in the table (set {flag})"))
            continue
        df = tables[a.table]
        try:
            res[a.name] = a.func(df, opts, args) if callable(a.func) else _func(a.func)(df, opts)
        except CapeError as exc:
            skipped.append(SkippedAnalysis(a.name, str(exc)))
            continue
        except (ArithmeticError, ValueError, RuntimeError, LinAlgError) as exc:  # a fit that fails on these data
            log.debug("%s", exc, exc_info=True)
            skipped.append(SkippedAnalysis(a.name, f"{type(exc).__name__}: {exc}"))
            continue
        if a.printer is not None:
            printers.append((a.printer, res[a.name]))
    if not res:
        raise DataError("no analysis could run on these tables: " +
                        "; ".join(f"{s.name}: {s.reason}" for s in skipped[:4]))
    summary = AnalyzeRun(list(res), skipped, Provenance("cape analyze", run_opts.to_dict(),
                                                        inputs={k: str(v.attrs.get("sha256", "")) for k, v in tables.items()}))
    if args.json:
        emit_json({"analysis": res, "skipped": skipped, "inputs": {k: _input_summary(v) for k, v in tables.items()}})
    else:
        for printer, r in printers:
            printer(r)
        for s_ in skipped:
            print(f"skipped {s_.name}: {s_.reason}")
    _write(args, {**{f"/analysis/{k}": v for k, v in res.items()}, "/analyze": summary}, tables)
    return 0


# ----------------------------------------------------------------------------------------------
# registration

def register(sub) -> None:
    def parser(name, help_, func, tables=("base",), section="§2"):
        p = sub.add_parser(name, help=help_, description=f"{help_} (docs/METHODS.md {section})")
        for t in tables:
            _add_input(p, t)
        add_output_args(p)
        p.set_defaults(func=func)
        return p

    for cmd in COMMANDS:
        tables = ("base", "frontier") if cmd.name == "hfield" else (cmd.table,)
        p = parser(cmd.name, cmd.summary, lambda args, cmd=cmd: run_command(cmd, args), tables, cmd.section)
        cmd.options.add_arguments(p)

    p = parser("nc", "critical scale N_c by the named estimators, with a bootstrap", run_nc, section="§2.4")
    NcRunOptions.add_arguments(p)
    NcOptions.add_arguments(p, skip=("estimator", "pooled"))

    p = parser("deff", "effective dimensionality d_eff per phase with a family-stratified bootstrap", run_deff,
               section="§2.5")
    DeffOptions.add_arguments(p)

    p = parser("diagnose", "where one model sits: gamma, phase, isocline side, h, levers", run_diagnose,
               section="§2.14")
    DiagnoseOptions.add_arguments(p)
    _add_query(p)

    p = parser("analyze", "run every benchmark-level analysis (--out writes them all; one that cannot run is "
                          "skipped)", run_analyze,
               ("base", "frontier", "loss"))
    # --set repeats (each item adds to the list)
    p.add_argument("--set", dest="set", action="extend", nargs="+", default=None, metavar="ANALYSIS.OPTION=VALUE",
                   help=AnalyzeOptions.__dataclass_fields__["set"].metadata["cape"]["help"])
    for cls in ANALYZE_FLAGS:
        cls.add_arguments(p)
