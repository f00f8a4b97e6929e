"""Benchmark-level CAPE commands: one per analysis (docs/METHODS.md §2) and `cape analyze` (all of them).

Every command reads the shipped tables or any table in the same schema (``--scores``,
``--frontier``, ``--loss``), prints human-readable tables (or ``--json`` with every option, seed and
count), and can write its result to an HDF5 file (``--out``; atomic, refuses different content
without ``--force``) together with the input tables under ``/scores/...``.

The flags of a command are generated from its method's options class (``Opts.add_arguments``) and
read back with ``Opts.from_args``: a default lives in the option only.

``ANALYSES`` holds one record per analysis (``Analysis``: command name, summary, docs/METHODS.md
section, options class, function, printer, input table, and the ``Run`` rows that `cape analyze`
runs of it with their settings); the commands, `cape analyze`'s rows (``analyses()``) and the
documentation check (tests/test_docs.py) are derived from it.  Adding an analysis is adding one
record.  The printers are in ``commands/analysis_print.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cape_hpc.analysis.options import (ESTIMATORS, CouplingOptions, DeffOptions, DiagnoseOptions, EigenOptions,
                                       FixedPointOptions, FrontierOptions, HFieldOptions, IsoclineOptions,
                                       IsoclineRule, LossOptions, NcOptions, PermutationOptions, PhasesOptions,
                                       PopulationOptions, WidthOptions)
from cape_hpc.commands import analysis_print as P
from cape_hpc.commands.common import add_output_args, add_progress_arg, add_scores_arg, emit_json, progress_shown
from cape_hpc.errors import OptionError
from cape_hpc.options import Options, option
from cape_hpc.schema import Provenance
from cape_hpc.stats.options import BootstrapOptions


# ----------------------------------------------------------------------------------------------
# inputs

def _load(table: str, args, frame: bool = True) -> Any:
    """The input table of ``args``; ``frame=False``: a base CSV as ``ScoreColumns`` (no pandas)."""
    from cape_hpc.io import scores

    if not frame and table == "base":
        return scores.load_scores(getattr(args, "scores", None), frame=False)
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


def _check_out(args) -> None:
    """Check ``--out`` before anything is computed: a folder, a parent that is a file, a folder
    that cannot be written, an empty path or a NUL are one-line errors now, not after the run."""
    if getattr(args, "out", None) is not None:
        from cape_hpc.io.store import check_target

        check_target(args.out)


def _write(args, groups: dict[str, Any], tables: dict[str, Any]) -> None:
    if getattr(args, "out", None) is None:
        return
    from cape_hpc.io.store import save_results

    groups = {**groups, **{f"/scores/{k}": _table_group(v) for k, v in tables.items()}}
    outcome = save_results(args.out, groups, force=args.force)
    if not args.json:
        print(f"\nwrote {args.out}" if outcome == "written" else f"\n{args.out}: unchanged (same content)")


def _func(path: str) -> Callable:
    """'module:function' of cape_hpc.analysis, imported when the command runs (not at parse time)."""
    module, name = path.split(":")
    return getattr(importlib.import_module(f"cape_hpc.analysis.{module}"), name)


# ----------------------------------------------------------------------------------------------
# one record per analysis: its command, its docs/METHODS.md section and its rows of `cape analyze`

@dataclass(frozen=True)
class Run:
    """One row of `cape analyze` for an analysis, stored as /analysis/<name>: the options it fixes,
    those that keep their default (``own``) and those an analyze flag sets (``from_flags``)."""

    name: str
    fixed: dict[str, Any] = field(default_factory=dict)
    own: tuple[str, ...] = ()
    from_flags: dict[str, str] = field(default_factory=dict)   # field <- analyze flag (AnalyzeOptions)
    family: bool = False              # a single-family analysis: skipped when its family is not in the table
    table: str | None = None          # default: the analysis's table
    func: str | None = None           # default: the analysis's function
    printer: Callable | None = None   # default: the analysis's printer
    printed: bool = True              # False: stored, not printed


@dataclass(frozen=True)
class Analysis:
    """One benchmark-level analysis: the command `cape <name>` (summary, options, input tables,
    printer), its section of docs/METHODS.md, and the rows `cape analyze` runs of it."""

    name: str
    summary: str
    section: str
    options: type
    func: str                         # 'module:function' of cape_hpc.analysis: the method's function
    printer: Callable
    table: str = "base"               # input table: base | frontier | loss
    inputs: tuple[str, ...] = ()      # the command's table flags (default: its table)
    panel: Callable[[Any], str] | None = None     # the table an option chooses (the h-field's --panel)
    flags: Callable[[argparse.ArgumentParser], None] | None = None  # default: the options' flags
    stored: Callable[[Any], dict[str, Any]] | None = None  # groups written (default /analysis/<name>)
    shown: Callable[[Any], Any] | None = None     # what is printed and emitted (default: the result)
    runs: tuple[Run, ...] | None = None           # rows of `cape analyze` (default: one, its name)
    compute: Callable | None = None   # (table, opts, args) -> result, when more than func(table, opts) runs
    # (opts, args) -> True when the function reads its table without pandas (ScoreColumns) for these options
    columns: Callable[[Any, Any], bool] | None = None


def _compute(func: str | Callable, df, opts, args):
    return func(df, opts, args) if callable(func) else _func(func)(df, opts)


# nc and deff (methods with a bootstrap; options NcOptions / DeffOptions) --------------------------

SCOPES = {"per-family": (False,), "pooled": (True,), "both": (False, True)}


@dataclass(frozen=True)
class NcRunOptions(Options):
    """Which N_c results `cape nc` computes: estimators x scopes, one NcResult each."""

    estimators: tuple[str, ...] = option(ESTIMATORS, flag="--estimator", help="N_c estimators to run",
                                         choices=ESTIMATORS)
    scope: str = option("both", help="per family, over the pooled families, or both", choices=tuple(SCOPES))


def nc_results(df, opts: NcOptions, run: NcRunOptions) -> dict[str, Any]:
    """{'<estimator>[_pooled]': NcResult}: every estimator of ``run`` in every scope of ``run``."""
    estimate = _func("nc:estimate_nc")
    return {est + ("_pooled" if pooled else ""): estimate(df, opts.replace(estimator=est, pooled=pooled))
            for est in run.estimators for pooled in SCOPES[run.scope]}


def _nc(df, opts, args):
    """`cape nc`: the estimators and scopes of its flags; `cape analyze` (no such flags): all six."""
    return nc_results(df, opts, NcRunOptions.from_args(args))


def _nc_columns(opts: NcOptions, args) -> bool:
    """`cape nc` reads its table without pandas (a new process is done before pandas would have
    loaded) on the parameter axis and when nothing is stored (``--out`` stores the table itself,
    ``InputTable.of`` a DataFrame)."""
    return opts.scale_axis == "params" and getattr(args, "out", None) is None


def _nc_flags(p: argparse.ArgumentParser) -> None:
    NcRunOptions.add_arguments(p)
    NcOptions.add_arguments(p, skip=("estimator", "pooled"))
    add_progress_arg(p)


def _deff_flags(p: argparse.ArgumentParser) -> None:
    DeffOptions.add_arguments(p)
    add_progress_arg(p)


# diagnose: the method's options (generated flags) and the query (the model asked about: an input) --

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


def _diagnose_flags(p: argparse.ArgumentParser) -> None:
    DiagnoseOptions.add_arguments(p)
    q = p.add_argument_group("the model to diagnose")
    q.add_argument("--params", type=_count, default=None, help="parameter count (7B, 125M, 1.3e9)")
    q.add_argument("--name", default="", help="model name (a table model fills family and scores)")
    q.add_argument("--family", default="", help="its family (the neighbours for gamma)")
    q.add_argument("--score", type=_score_kv, action="append", metavar="COL=VALUE",
                   help="a score in --units, e.g. --score HS=62.5 (repeat for B1 and B2)")
    q.add_argument("--d-model", type=float, default=None, help="its width (for the width factor)")


def _diagnose(df, opts, args) -> dict[str, Any]:
    """{'/analysis/diagnose': Diagnosis, '/analysis/diagnose_model': DiagnoseModel} of the query."""
    from cape_hpc.analysis.diagnose import diagnose_point, fit_diagnose_model
    from cape_hpc.analysis.scale import scale_values

    params = args.params
    if params is None:
        if args.name and args.name in set(df["model"]):
            params = float(scale_values(df.loc[df["model"] == args.name], opts)[0])   # N, or the step (--scale)
        else:
            raise OptionError("option '--params': required unless --name is a model of the score table")
    model = fit_diagnose_model(df, opts)
    d = diagnose_point(model, params, family=args.family or None, scores=dict(args.score or []),
                       d_model=args.d_model, name=args.name)
    return {"/analysis/diagnose": d, "/analysis/diagnose_model": model}


#: every benchmark-level analysis, in the order of docs/METHODS.md (commands and `cape analyze` rows)
ANALYSES = (
    Analysis("coupling", "local coupling gamma = dB2/dB1 between consecutive sizes of each family", "§2.1",
             CouplingOptions, "coupling:local_coupling", P.print_coupling),
    Analysis("phases", "phase (tax / transition / bonus) of every model", "§2.2", PhasesOptions, "phases:phases",
             P.print_phases),
    Analysis("population", "Pearson and Spearman coupling over all models, per family or per phase", "§2.3",
             PopulationOptions, "population:population_coupling", P.print_population,
             runs=(Run("population", fixed={"group_by": "family"}, printed=False),
                   Run("population_all", fixed={"group_by": "all"}),
                   Run("population_phase", fixed={"group_by": "phase"}))),
    Analysis("nc", "critical scale N_c by the named estimators, with a bootstrap", "§2.4", NcOptions,
             "nc:estimate_nc", P.print_nc, flags=_nc_flags, compute=_nc, runs=(Run("nc", own=("estimator", "pooled")),),
             columns=_nc_columns),
    Analysis("deff", "effective dimensionality d_eff per phase with a family-stratified bootstrap", "§2.5",
             DeffOptions, "deff:effective_dimension", P.print_deff, flags=_deff_flags),
    Analysis("width", "width-normalised r per family with the permuted-width control", "§2.6", WidthOptions,
             "width:width_normalisation", P.print_width),
    Analysis("hfield", "residual field h against the population line, by family or lab", "§2.7", HFieldOptions,
             "hfield:h_field", P.print_hfield, inputs=("base", "frontier"), panel=lambda opts: opts.panel,
             runs=(Run("hfield"), Run("frontier_hfield", table="frontier", own=("pair",), printed=False,
                                      fixed={"panel": "frontier", "fit_cohort": "main"}))),
    Analysis("isocline", "isocline side of every interval and its sign agreement per family", "§2.8",
             IsoclineOptions, "isocline:isocline", P.print_isocline),
    Analysis("loss", "loss law L = E + A N^-alpha (curve_fit)", "§2.9", LossOptions, "losslaw:loss_law",
             P.print_loss, table="loss"),
    Analysis("fixedpoint", "fixed point of dgamma/dlogN = a gamma + b in one family", "§2.10", FixedPointOptions,
             "fixedpoint:coupling_fixed_point", P.print_fixedpoint,
             runs=(Run("fixedpoint", from_flags={"family": "fixedpoint_family"}, family=True),)),
    Analysis("eigen", "PCA windows along N in one family: lambda1, lambda2, e2, power law", "§2.11", EigenOptions,
             "eigen:eigen_geometry", P.print_eigen,
             runs=(Run("eigen", from_flags={"family": "eigen_family"}, family=True),)),
    Analysis("frontier", "frontier regression GPQA ~ SWE, per-lab slopes, leave-one-lab-out", "§2.12",
             FrontierOptions, "frontier:frontier_fit", P.print_frontier, table="frontier",
             runs=(Run("frontier", own=("pair",)),)),
    Analysis("diagnose", "where one model sits: gamma, phase, isocline side, h, levers", "§2.14", DiagnoseOptions,
             "diagnose:diagnose_point", P.print_diagnosis, flags=_diagnose_flags, compute=_diagnose,
             stored=lambda groups: groups,
             shown=lambda groups: groups["/analysis/diagnose"],
             runs=(Run("diagnose_model", func="diagnose:fit_diagnose_model", printer=P.print_diagnose_model),)),
)


def run_command(a: Analysis, args) -> int:
    """`cape <analysis>`: options from the flags, the table, the function, then print (or --json) and
    --out (the result and its input table)."""
    opts = a.options.from_args(args)
    _check_out(args)
    table = a.panel(opts) if a.panel else a.table
    df = _load(table, args, frame=not (a.columns and a.columns(opts, args)))
    with progress_shown(args):       # the bootstrap bars of nc and deff (--progress)
        result = _compute(a.compute or a.func, df, opts, args)
    shown = a.shown(result) if a.shown else result
    if args.json:
        emit_json(shown)
    else:
        a.printer(shown)
    _write(args, a.stored(result) if a.stored else {f"/analysis/{a.name}": result}, {table: df})
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
class AnalyzeRow:
    """One row of `cape analyze` (a ``Run`` of an ``Analysis``, its defaults filled in): stored as
    /analysis/<name> and printed (when ``printer``) in order."""

    name: str
    options: type
    func: Callable | str        # 'module:function' (func(table, opts)) or a callable (table, opts, args)
    table: str                  # base | frontier | loss
    printer: Callable | None = None
    fixed: dict[str, Any] = field(default_factory=dict)     # options fixed for this row
    own: tuple[str, ...] = ()                               # fields that keep their default here
    from_flags: dict[str, str] = field(default_factory=dict)  # field <- analyze flag (AnalyzeOptions)
    family: bool = False        # a single-family analysis: skipped when its family is not in the table


def analyses() -> tuple[AnalyzeRow, ...]:
    """The rows of `cape analyze` (every ``Run`` of every analysis of ``ANALYSES``), in the order
    they run and print."""
    return tuple(AnalyzeRow(r.name, a.options, r.func or a.compute or a.func, r.table or a.table,
                            (r.printer or a.printer) if r.printed else None, r.fixed, r.own, r.from_flags, r.family)
                 for a in ANALYSES for r in (a.runs or (Run(a.name),)))


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


def settable(a: AnalyzeRow) -> set[str]:
    """The options of one row that ``--set`` may change (all but ``own``, ``fixed`` and ``from_flags``)."""
    return {f.name for f in dataclasses.fields(a.options)} - set(a.own) - set(a.fixed) - set(a.from_flags)


def analysis_options(a: AnalyzeRow, args, sets: dict[str, dict[str, Any]] | None = None) -> Options:
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

    from numpy.linalg import LinAlgError  # a singular fit on degenerate data

    from cape_hpc.analysis.scale import scale_values
    from cape_hpc.errors import CapeError, DataError
    from cape_hpc.io.runs import AnalyzeRun, SkippedAnalysis

    log = logging.getLogger(__name__)
    run_opts = AnalyzeOptions.from_args(args)
    sets = parse_sets(run_opts.set)
    rows = [(a, analysis_options(a, args, sets)) for a in analyses()]   # bad flags fail before any work
    _check_out(args)
    tables = {t: _load(t, args) for t in ("base", "frontier", "loss")}
    scale_values(tables["base"], args.scale_axis, args.families)   # --scale step: no step column -> one line, exit 2
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
            with progress_shown(args):    # the bootstrap bars of nc and deff (--progress)
                res[a.name] = _compute(a.func, df, opts, args)
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

def _parser(sub, name: str, summary: str, func: Callable, tables: Sequence[str], section: str):
    p = sub.add_parser(name, help=summary, description=f"{summary} (docs/METHODS.md {section})")
    for t in tables:
        _add_input(p, t)
    add_output_args(p)
    p.set_defaults(func=func)
    return p


def register(sub) -> None:
    """One command per record of ``ANALYSES``, then `cape analyze`."""
    for a in ANALYSES:
        p = _parser(sub, a.name, a.summary, lambda args, a=a: run_command(a, args), a.inputs or (a.table,),
                    a.section)
        (a.flags or a.options.add_arguments)(p)

    p = _parser(sub, "analyze", "run every benchmark-level analysis (--out writes them all; one that cannot run "
                                "is skipped)", run_analyze, ("base", "frontier", "loss"), "§2")
    # --set repeats (each item adds to the list)
    p.add_argument("--set", dest="set", action="extend", nargs="+", default=None, metavar="ANALYSIS.OPTION=VALUE",
                   help=AnalyzeOptions.__dataclass_fields__["set"].metadata["cape"]["help"])
    for cls in ANALYZE_FLAGS:
        cls.add_arguments(p)
    add_progress_arg(p)
