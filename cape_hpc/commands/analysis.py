"""Benchmark-level CAPE commands: one per analysis (SPEC section 2) and `cape analyze` (all of them).

Every command reads the shipped tables or any table in the same schema (``--scores``,
``--frontier``, ``--loss``), prints human-readable tables (or ``--json`` with every option, seed and
count), and can write its result to an HDF5 file (``--out``; atomic, refuses different content
without ``--force``) together with the input tables under ``/scores/...``.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from cape_hpc.commands.common import add_output_args, add_scores_arg, emit_json, fmt, print_table
from cape_hpc.errors import OptionError

ESTIMATORS = ("sign-change", "gamma-fit", "quadratic")
ATTACH = ("larger", "smaller", "midpoint")  # mirrors cape_hpc.analysis.nc.ATTACH (kept here: no numba at parse time)


# ----------------------------------------------------------------------------------------------
# argument helpers

def _count(text: str) -> float:
    """'7B', '125M', '1.3e9', '70000000' -> a parameter count."""
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][+-]?\d+)?)\s*([kKmMbBtT]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a parameter count: {text!r} (e.g. 7B, 125M, 1.3e9)")
    mult = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return float(m.group(1)) * mult


def _pair(p, default=("HS", "TQA")):
    p.add_argument("--pair", nargs=2, metavar=("B1", "B2"), default=list(default),
                   help=f"score columns (default: {' '.join(default)})")


def _families(p):
    p.add_argument("--families", nargs="+", metavar="FAMILY", default=None, help="only these families")


def _coupling_opts(p):
    p.add_argument("--min-delta", type=float, default=None,
                   help="|dB1| below which gamma is undefined, in --units (default 0.5 points)")
    p.add_argument("--units", choices=("percent", "fraction"), default="percent")
    p.add_argument("--tax-below", type=float, default=-0.1, help="gamma below this is tax (default -0.1)")
    p.add_argument("--bonus-above", type=float, default=0.1, help="gamma above this is bonus (default 0.1)")


def _boot_opts(p, stratify_help="resample within each family (default)"):
    p.add_argument("--n-resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stratify", action=argparse.BooleanOptionalAction, default=True, help=stratify_help)
    p.add_argument("--ci-method", choices=("percentile", "bca"), default="percentile")
    p.add_argument("--levels", type=float, nargs="+", default=[0.95, 0.68], help="interval levels")


def _progress(args) -> bool:
    return not getattr(args, "json", False) and sys.stderr.isatty()


def _scores(args):
    from cape_hpc.io.scores import load_scores

    return load_scores(getattr(args, "scores", None))


def _frontier_table(args):
    from cape_hpc.io.scores import load_frontier

    return load_frontier(getattr(args, "frontier", None))


def _loss_table(args):
    from cape_hpc.io.scores import load_loss

    return load_loss(getattr(args, "loss", None))


def _table_group(df) -> dict[str, Any]:
    cols = [c for c in df.columns if c != "_row"]
    return {"file": Path(str(df.attrs.get("path", ""))).name, "sha256": str(df.attrs.get("sha256", "")),
            "n_rows": int(len(df)), "table": df[cols]}


def _finish(args, name: str, result, tables: dict[str, Any], printer) -> int:
    if args.json:
        emit_json(result)
    else:
        printer(result)
    if getattr(args, "out", None):
        from cape_hpc.io.store import write_results

        groups = {f"/analysis/{name}": result, **{f"/scores/{k}": _table_group(v) for k, v in tables.items()}}
        write_results(args.out, groups, force=args.force)
        if not args.json:
            print(f"\nwrote {args.out}")
    return 0


def _ci(summary, level=0.95, log=True) -> str:
    lo, hi = summary.interval(level)
    if math.isnan(lo):
        return "-"
    if log:
        return f"[{10 ** lo / 1e9:.3g}, {10 ** hi / 1e9:.3g}]"
    return f"[{lo:.4g}, {hi:.4g}]"


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
                title=f"Phases ({r.b1}, {r.b2}): tax < {r.tax_below:g} <= transition <= {r.bonus_above:g} < bonus")
    print_table([(p, r.counts[p], r.families_per_phase.get(p, "-")) for p in r.counts],
                ["phase", "models", "families"], title="Counts")


def print_population(r) -> None:
    rows = [(g.group, g.n, g.pearson_r, g.pearson_p, g.spearman_rho, g.spearman_p, g.perm_pearson_p,
             g.perm_spearman_p, g.reason) for g in r.groups]
    print_table(rows, ["group", "n", "pearson r", "p", "spearman", "p", "perm p (r)", "perm p (rho)", "note"],
                title=f"Population coupling r({r.b1}, {r.b2}), p: analytic + {r.p_method}")


def print_nc(results) -> None:
    from cape_hpc.analysis.nc import MIN_MODELS

    for r in results:
        rows = []
        small = [e.scope for e in r.estimates if e.n_models < MIN_MODELS]
        for e in r.estimates:
            if e.n_models < MIN_MODELS:
                continue
            b = e.bootstrap
            rows.append((e.scope, e.n_models, e.nc / 1e9, _ci(b, 0.95), _ci(b, 0.68),
                         10 ** b.median / 1e9 if not math.isnan(b.median) else math.nan,
                         f"{b.n_valid}/{b.n_resamples}" if b.n_resamples else "-",
                         e.reason or ("extrapolated: outside the data's N range" if e.extrapolated else "")))
        opts = r.provenance.options
        strat = opts.get("stratify", "-")
        print_table(rows, ["scope", "models", "N_c (B)", "95% CI (B)", "68% CI (B)", "boot median (B)", "valid",
                           "note"],
                    title=f"N_c [{r.estimator}] pair ({r.b1}, {r.b2}); bootstrap: {opts.get('ci_method', 'none')}, "
                          f"stratify={strat}, seed={r.provenance.seed}")
        if small:
            print(f"fewer than {MIN_MODELS} models (no estimate): {', '.join(small)}")


def print_deff(r) -> None:
    rows = [(g.group, g.n_models, g.n_families, g.d_eff, _ci(g.bootstrap, 0.95, log=False),
             _ci(g.bootstrap, 0.68, log=False), f"{g.bootstrap.n_valid}/{g.bootstrap.n_resamples}", g.reason)
            for g in r.groups]
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
                      f"permuted-width control")


def print_hfield(r) -> None:
    print(f"\nPopulation line: {r.b2} = {r.beta1:.4g} * {r.b1} + {r.beta0:.4g}  (n = {r.n_fit}, {r.units})")
    print_table([(g.group, g.count, g.mean_h, g.std_h) for g in r.groups], [r.group_by, "n", "mean h", "std h"],
                title="h per group")


def print_isocline(r) -> None:
    print(f"\nIsocline {r.b2}_c = sqrt(k * {r.b1}) (fractions), k = {r.k:.5g} from {r.calibration}; rule {r.rule}")
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
    print(f"\nFixed point of gamma ({r.family}): dgamma/dlogN = a gamma + b, a = {fmt(r.a)}, b = {fmt(r.b)}, "
          f"gamma* = {fmt(r.gamma_star)} ({r.stability}; {r.n_points} derivative points) {r.reason}")


def print_eigen(r) -> None:
    rows = [(w.first_model, w.last_model, w.n_models, w.lambda1, w.lambda2,
             " ".join(f"{v:+.2f}" for v in w.e2), w.e2_angle_deg, w.e2_step_deg) for w in r.windows]
    print_table(rows, ["from", "to", "n", "lambda1", "lambda2", f"e2 ({' '.join(r.columns)})", "angle", "step"],
                title=f"Eigen-geometry {r.family} ({r.matrix}, {r.mode} windows)")
    print(f"lambda2 ~ N^{fmt(r.power_exponent)} (R^2 = {fmt(r.power_r2)}, {r.n_power_points} windows)")


def print_frontier(r) -> None:
    print(f"\nFrontier ({r.cohort}, n = {r.n}): {r.b2} = {r.slope:.4g} * {r.b1} + {r.intercept:.4g}, "
          f"r = {r.r:.4f}, p = {r.p:.3g}")
    print_table([(lf.lab, lf.n, lf.slope, lf.intercept, lf.holdout_mae, lf.mean_h) for lf in r.labs],
                ["lab", "n", "own slope", "own intercept", "LOLO MAE", "mean h"],
                title=f"Labs with >= {r.min_lab_size} models (leave-one-lab-out)")
    print(f"LOLO MAE mean = {r.lolo_mae_mean:.3f}, std = {r.lolo_mae_std_ddof0:.3f} (ddof 0) / "
          f"{r.lolo_mae_std_ddof1:.3f} (ddof 1) over {r.n_lolo_labs} labs")


def print_diagnosis(d) -> None:
    rows = [("model", d.name or "-"), ("family", d.family or "-"), ("N", f"{d.params:.4g}"),
            ("scores", f"{fmt(d.b1)}, {fmt(d.b2)}"),
            ("gamma (own interval)", f"{fmt(d.gamma_prev)} from {d.prev_model or '-'}"),
            ("gamma (next interval)", f"{fmt(d.gamma_next)} to {d.next_model or '-'}"),
            ("phase", f"{d.phase or 'unknown'} ({d.phase_source or '-'})"),
            ("isocline side", f"{d.isocline_side or '-'} (isocline at {fmt(d.isocline_b2)}, predicts "
                              f"{'+' if d.predicted_sign > 0 else '-' if d.predicted_sign < 0 else '?'})"),
            ("h", fmt(d.h))]
    print_table(rows, ["", ""], title="Diagnosis")
    for line in d.levers:
        print(f"  lever: {line}")
    for line in d.notes + ([d.gamma_reason] if d.gamma_reason else []):
        print(f"  note: {line}")


# ----------------------------------------------------------------------------------------------
# commands

def run_coupling(args) -> int:
    from cape_hpc.analysis.coupling import local_coupling

    df = _scores(args)
    r = local_coupling(df, *args.pair, min_delta=args.min_delta, units=args.units, tax_below=args.tax_below,
                       bonus_above=args.bonus_above, families=args.families)
    return _finish(args, "coupling", r, {"base": df}, print_coupling)


def run_phases(args) -> int:
    from cape_hpc.analysis.phases import phases

    df = _scores(args)
    r = phases(df, *args.pair, min_delta=args.min_delta, units=args.units, tax_below=args.tax_below,
               bonus_above=args.bonus_above, families=args.families)
    return _finish(args, "phases", r, {"base": df}, print_phases)


def run_population(args) -> int:
    from cape_hpc.analysis.population import population_coupling

    df = _scores(args)
    r = population_coupling(df, *args.pair, group_by=args.group_by, families=args.families, p_method=args.p_method,
                            n_permutations=args.n_permutations, seed=args.seed, min_delta=args.min_delta)
    return _finish(args, "population", r, {"base": df}, print_population)


def _nc_all(df, args, estimators, pooled_modes) -> dict[str, Any]:
    from cape_hpc.analysis.nc import estimate_nc

    out = {}
    for est in estimators:
        for pooled in pooled_modes:
            out[est + ("_pooled" if pooled else "")] = estimate_nc(
                df, est, families=args.families, pooled=pooled, b1=args.pair[0], b2=args.pair[1],
                min_delta=args.min_delta, units=args.units, window=args.window, bootstrap=not args.no_bootstrap,
                n_resamples=args.n_resamples, seed=args.seed, stratify=args.stratify, ci_method=args.ci_method,
                levels=args.levels, progress=_progress(args), attach=getattr(args, "attach", "larger"))
    return out


def run_nc(args) -> int:
    df = _scores(args)
    ests = ESTIMATORS if args.estimator == "all" else (args.estimator,)
    modes = {"per-family": (False,), "pooled": (True,), "both": (False, True)}[args.scope]
    res = _nc_all(df, args, ests, modes)
    return _finish(args, "nc", res, {"base": df}, lambda r: print_nc(list(r.values())))


def run_deff(args) -> int:
    from cape_hpc.analysis.deff import effective_dimension

    df = _scores(args)
    r = effective_dimension(df, columns=args.columns, matrix=args.matrix, b1=args.pair[0], b2=args.pair[1],
                            min_delta=args.min_delta, families=args.families, bootstrap=not args.no_bootstrap,
                            n_resamples=args.n_resamples, seed=args.seed, stratify=args.stratify,
                            ci_method=args.ci_method, levels=args.levels, progress=_progress(args))
    return _finish(args, "deff", r, {"base": df}, print_deff)


def run_width(args) -> int:
    from cape_hpc.analysis.width import width_normalisation

    df = _scores(args)
    r = width_normalisation(df, *args.pair, d_ref=args.d_ref, n_permutations=args.n_permutations, seed=args.seed,
                            families=args.families)
    return _finish(args, "width", r, {"base": df}, print_width)


def run_hfield(args) -> int:
    from cape_hpc.analysis.hfield import h_field

    if args.panel == "frontier":
        df = _frontier_table(args)
        pair = args.pair or ["SWE", "GPQA"]
        r = h_field(df, *pair, group_by=args.group_by or "lab", units=args.units)
        tables = {"frontier": df}
    else:
        df = _scores(args)
        pair = args.pair or ["HS", "TQA"]
        r = h_field(df, *pair, group_by=args.group_by or "family", units=args.units)
        tables = {"base": df}
    return _finish(args, "hfield", r, tables, print_hfield)


def _calibration(text: str):
    try:
        return float(text)
    except ValueError:
        return text.split(",") if "," in text else text


def run_isocline(args) -> int:
    from cape_hpc.analysis.isocline import isocline

    df = _scores(args)
    r = isocline(df, *args.pair, calibration=_calibration(args.calibration), rule=args.rule,
                 min_delta=args.min_delta, exclude_calibration=args.exclude_calibration, families=args.families)
    return _finish(args, "isocline", r, {"base": df}, print_isocline)


def run_loss(args) -> int:
    from cape_hpc.analysis.losslaw import loss_law

    df = _loss_table(args)
    r = loss_law(df, n_scale=args.n_scale, cv_ddof=args.cv_ddof)
    return _finish(args, "loss", r, {"loss": df}, print_loss)


def run_fixedpoint(args) -> int:
    from cape_hpc.analysis.fixedpoint import coupling_fixed_point

    df = _scores(args)
    r = coupling_fixed_point(df, args.family, *args.pair, min_delta=args.min_delta, at=args.at)
    return _finish(args, "fixedpoint", r, {"base": df}, print_fixedpoint)


def run_eigen(args) -> int:
    from cape_hpc.analysis.eigen import eigen_geometry

    df = _scores(args)
    r = eigen_geometry(df, args.family, columns=args.columns, matrix=args.matrix, mode=args.mode, width=args.width,
                       min_window=args.min_window, units=args.units)
    return _finish(args, "eigen", r, {"base": df}, print_eigen)


def run_frontier(args) -> int:
    from cape_hpc.analysis.frontier import frontier_fit

    df = _frontier_table(args)
    r = frontier_fit(df, *args.pair, cohort=args.cohort, min_lab_size=args.min_lab_size, units=args.units)
    return _finish(args, "frontier", r, {"frontier": df}, print_frontier)


def _score_kv(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k.strip(), float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number in {text!r}") from None


def run_diagnose(args) -> int:
    from cape_hpc.analysis.diagnose import diagnose_point, fit_diagnose_model

    df = _scores(args)
    params = args.params
    if params is None:
        if args.name and args.name in set(df["model"]):
            params = float(df.loc[df["model"] == args.name, "params"].iloc[0])
        else:
            raise OptionError("option '--params': required unless --name is a model of the score table")
    model = fit_diagnose_model(df, *args.pair, min_delta=args.min_delta, calibration=_calibration(args.calibration),
                               rule=args.rule)
    d = diagnose_point(model, params, family=args.family, scores=dict(args.score or []), d_model=args.d_model,
                       name=args.name or "")
    if args.json:
        emit_json(d)
    else:
        print_diagnosis(d)
    if args.out:
        from cape_hpc.io.store import write_results

        write_results(args.out, {"/analysis/diagnose": d, "/analysis/diagnose_model": model,
                                 "/scores/base": _table_group(df)}, force=args.force)
    return 0


def run_analyze(args) -> int:
    """Every analysis with its defaults (and the shared options), printed and optionally stored."""
    from cape_hpc.analysis.coupling import local_coupling
    from cape_hpc.analysis.deff import effective_dimension
    from cape_hpc.analysis.diagnose import fit_diagnose_model
    from cape_hpc.analysis.eigen import eigen_geometry
    from cape_hpc.analysis.fixedpoint import coupling_fixed_point
    from cape_hpc.analysis.frontier import frontier_fit
    from cape_hpc.analysis.hfield import h_field
    from cape_hpc.analysis.isocline import isocline
    from cape_hpc.analysis.losslaw import loss_law
    from cape_hpc.analysis.phases import phases
    from cape_hpc.analysis.population import population_coupling
    from cape_hpc.analysis.width import width_normalisation

    df, fr, loss = _scores(args), _frontier_table(args), _loss_table(args)
    b1, b2 = args.pair
    prog = _progress(args)
    common = dict(min_delta=args.min_delta, tax_below=args.tax_below, bonus_above=args.bonus_above)
    res: dict[str, Any] = {}
    res["coupling"] = local_coupling(df, b1, b2, units=args.units, families=args.families, **common)
    res["phases"] = phases(df, b1, b2, units=args.units, families=args.families, **common)
    res["population"] = population_coupling(df, b1, b2, group_by="family", families=args.families, **common)
    res["population_phase"] = population_coupling(df, b1, b2, group_by="phase", families=args.families, **common)
    res["population_all"] = population_coupling(df, b1, b2, families=args.families)
    args.window = None
    args.no_bootstrap = False
    res["nc"] = _nc_all(df, args, ESTIMATORS, (False, True))
    res["deff"] = effective_dimension(df, b1=b1, b2=b2, families=args.families, n_resamples=args.n_resamples,
                                      seed=args.seed, stratify=args.stratify, ci_method=args.ci_method,
                                      levels=args.levels, progress=prog, **common)
    res["width"] = width_normalisation(df, b1, b2, n_permutations=args.n_permutations, seed=args.seed,
                                       families=args.families)
    res["hfield"] = h_field(df, b1, b2, group_by="family", units=args.units)
    # isocline and diagnose take min_delta in percentage points
    md_points = None if args.min_delta is None else args.min_delta * (100.0 if args.units == "fraction" else 1.0)
    res["isocline"] = isocline(df, b1, b2, rule=args.rule, min_delta=md_points, families=args.families)
    res["loss"] = loss_law(loss)
    fams = set(df["family"]) if args.families is None else set(args.families)
    if args.fixedpoint_family in fams:
        res["fixedpoint"] = coupling_fixed_point(df, args.fixedpoint_family, b1, b2, min_delta=md_points)
    if args.eigen_family in fams:
        res["eigen"] = eigen_geometry(df, args.eigen_family)
    res["frontier"] = frontier_fit(fr)
    res["frontier_hfield"] = h_field(fr, "SWE", "GPQA", group_by="lab", fit_rows=(fr["cohort"] == "main").to_numpy())
    res["diagnose_model"] = fit_diagnose_model(df, b1, b2, min_delta=md_points, rule=args.rule)
    if args.json:
        emit_json({"analysis": res, "inputs": {k: _table_group(v) | {"table": None}
                                               for k, v in (("base", df), ("frontier", fr), ("loss", loss))}})
    else:
        print_coupling(res["coupling"])
        print_phases(res["phases"])
        print_population(res["population_all"])
        print_population(res["population_phase"])
        print_nc(list(res["nc"].values()))
        print_deff(res["deff"])
        print_width(res["width"])
        print_isocline(res["isocline"])
        print_loss(res["loss"])
        print_frontier(res["frontier"])
    if args.out:
        from cape_hpc.io.store import write_results

        groups = {f"/analysis/{k}": v for k, v in res.items()}
        groups.update({"/scores/base": _table_group(df), "/scores/frontier": _table_group(fr),
                       "/scores/loss": _table_group(loss)})
        write_results(args.out, groups, force=args.force)
        if not args.json:
            print(f"\nwrote {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------
# registration

def register(sub) -> None:
    def parser(name, help_, func, *, scores=True, out=True):
        p = sub.add_parser(name, help=help_, description=help_)
        if scores:
            add_scores_arg(p)
        add_output_args(p, out=out)
        p.set_defaults(func=func)
        return p

    p = parser("coupling", "local coupling gamma = dB2/dB1 between consecutive sizes of each family", run_coupling)
    _pair(p), _families(p), _coupling_opts(p)

    p = parser("phases", "phase (tax / transition / bonus) of every model", run_phases)
    _pair(p), _families(p), _coupling_opts(p)

    p = parser("population", "Pearson and Spearman coupling over all models, per family or per phase",
               run_population)
    _pair(p), _families(p)
    p.add_argument("--group-by", choices=("all", "family", "phase"), default="all")
    p.add_argument("--p-method", choices=("analytic", "permutation", "exact"), default="analytic")
    p.add_argument("--n-permutations", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-delta", type=float, default=None)

    p = parser("nc", "critical scale N_c by the named estimators, with a bootstrap", run_nc)
    _pair(p), _families(p), _coupling_opts(p), _boot_opts(p, "pooled bootstrap: resample within each family "
                                                               "(default) or across all models")
    p.add_argument("--estimator", choices=(*ESTIMATORS, "all"), default="all")
    p.add_argument("--scope", choices=("per-family", "pooled", "both"), default="both")
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="quadratic vertex window in log10 N (default: the data's range)")
    p.add_argument("--no-bootstrap", action="store_true")
    p.add_argument("--attach", choices=ATTACH, default="larger",
                   help="sign-change: N_c at the crossing interval's larger model (default), smaller model or midpoint")

    p = parser("deff", "effective dimensionality d_eff per phase with a family-stratified bootstrap", run_deff)
    _pair(p), _families(p), _boot_opts(p)
    p.add_argument("--matrix", choices=("covariance", "correlation"), default="covariance")
    p.add_argument("--columns", nargs="+", default=["HS", "TQA", "ARC", "WG", "MMLU"])
    p.add_argument("--min-delta", type=float, default=None)
    p.add_argument("--no-bootstrap", action="store_true")

    p = parser("width", "width-normalised r per family with the permuted-width control", run_width)
    _pair(p), _families(p)
    p.add_argument("--d-ref", type=float, default=512.0)
    p.add_argument("--n-permutations", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)

    p = parser("hfield", "residual field h against the population line, by family or lab", run_hfield)
    p.add_argument("--pair", nargs=2, metavar=("B1", "B2"), default=None,
                   help="default HS TQA (base) or SWE GPQA (frontier)")
    p.add_argument("--panel", choices=("base", "frontier"), default="base")
    p.add_argument("--frontier", metavar="CSV", default=None)
    p.add_argument("--group-by", default=None, help="grouping column (default family / lab)")
    p.add_argument("--units", choices=("percent", "fraction"), default="percent")

    p = parser("isocline", "isocline side of every interval and its sign agreement per family", run_isocline)
    _pair(p), _families(p)
    p.add_argument("--calibration", default="OLMo", help="family, model[,model...] or k (default OLMo)")
    p.add_argument("--rule", choices=("above-positive", "above-negative"), default="above-positive")
    p.add_argument("--min-delta", type=float, default=None, help="in percentage points (default 0.5)")
    p.add_argument("--exclude-calibration", action="store_true")

    p = parser("loss", "loss law L = E + A N^-alpha (curve_fit)", run_loss, scores=False)
    p.add_argument("--loss", metavar="CSV", default=None, help="loss table (default data/pythia_loss.csv)")
    p.add_argument("--n-scale", type=float, default=1e9, help="N unit of the fit (default 1e9)")
    p.add_argument("--cv-ddof", type=int, choices=(0, 1), default=0)

    p = parser("fixedpoint", "fixed point of dgamma/dlogN = a gamma + b in one family", run_fixedpoint)
    _pair(p)
    p.add_argument("--family", default="OPT")
    p.add_argument("--min-delta", type=float, default=None)
    p.add_argument("--at", choices=("mid", "left"), default="mid")

    p = parser("eigen", "PCA windows along N in one family: lambda1, lambda2, e2, power law", run_eigen)
    p.add_argument("--family", default="Pythia")
    p.add_argument("--columns", nargs="+", default=["HS", "TQA", "ARC", "WG", "MMLU"])
    p.add_argument("--matrix", choices=("correlation", "covariance"), default="correlation")
    p.add_argument("--mode", choices=("cumulative", "sliding"), default="cumulative")
    p.add_argument("--width", type=int, default=4, help="sliding window size")
    p.add_argument("--min-window", type=int, default=3)
    p.add_argument("--units", choices=("percent", "fraction"), default="percent")

    p = parser("frontier", "frontier regression GPQA ~ SWE, per-lab slopes, leave-one-lab-out", run_frontier,
               scores=False)
    _pair(p, ("SWE", "GPQA"))
    p.add_argument("--frontier", metavar="CSV", default=None, help="frontier table (default data/frontier.csv)")
    p.add_argument("--cohort", choices=("main", "all"), default="main")
    p.add_argument("--min-lab-size", type=int, default=3)
    p.add_argument("--units", choices=("percent", "fraction"), default="percent")

    p = parser("diagnose", "where one model sits: gamma, phase, isocline side, h, levers", run_diagnose)
    _pair(p)
    p.add_argument("--params", type=_count, default=None, help="parameter count (7B, 125M, 1.3e9)")
    p.add_argument("--name", default=None, help="model name (a table model fills family and scores)")
    p.add_argument("--family", default=None)
    p.add_argument("--score", type=_score_kv, action="append", metavar="COL=VALUE", help="e.g. --score HS=62.5")
    p.add_argument("--d-model", type=float, default=None)
    p.add_argument("--calibration", default="OLMo")
    p.add_argument("--rule", choices=("above-positive", "above-negative"), default="above-positive")
    p.add_argument("--min-delta", type=float, default=None)

    p = parser("analyze", "run every benchmark-level analysis (print; --out writes them all)", run_analyze)
    _pair(p), _families(p), _coupling_opts(p), _boot_opts(p)
    p.add_argument("--frontier", metavar="CSV", default=None)
    p.add_argument("--loss", metavar="CSV", default=None)
    p.add_argument("--n-permutations", type=int, default=10000, help="width control permutations")
    p.add_argument("--rule", choices=("above-positive", "above-negative"), default="above-positive")
    p.add_argument("--fixedpoint-family", default="OPT")
    p.add_argument("--eigen-family", default="Pythia")
