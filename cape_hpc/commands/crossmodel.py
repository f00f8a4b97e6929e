"""`cape crossmodel`: the cross-model internals table and the per-family analyses (docs/METHODS.md §3.10)."""
from __future__ import annotations

import argparse
import math

from cape_hpc.commands.common import add_output_args, add_progress_arg, emit_json, fmt, print_table, progress_shown
from cape_hpc.crossmodel.options import CrossModelOptions


SUMMARY = "cross-model internals table and per-family ladders (internal gamma, N_c, fixed point, heads, phases)"
DESCRIPTION = ("Read the /internals groups of merged sweep files (`cape merge`) and/or `cape internals --out` files, "
               "print one row per model with block-bootstrap intervals and the per-family analyses of the internal "
               "coupling ladders (docs/METHODS.md §3.10).")


def register(sub) -> None:
    p = sub.add_parser("crossmodel", help=SUMMARY, description=DESCRIPTION)
    p.add_argument("files", nargs="+", metavar="FILE.h5", help="results files with /internals/<model> groups")
    p.add_argument("--scores", metavar="CSV", default=None,
                   help="score table for families, parameter counts and benchmark phases (default: the shipped "
                        "data/base_models.csv; 'none' for no table)")
    p.add_argument("--job", metavar="JOB.yaml", action="append", default=None,
                   help="job spec(s) whose model entries give family and parameters (as a merged file's index)")
    p.add_argument("--count-params", action="store_true",
                   help="load each model whose parameter count is still unknown and count its parameters")
    CrossModelOptions.add_arguments(p)
    add_output_args(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def _spec_from_jobs(paths) -> dict[str, dict]:
    from cape_hpc.sweep.spec import load_job

    out: dict[str, dict] = {}
    for path in paths or ():
        job = load_job(path)
        for m in job.models:
            d = {"family": m.family or "", "params": float(m.params) if m.params is not None else math.nan}
            out[m.name] = d
            out.setdefault(m.id, d)
    return out


def _count(inputs) -> dict[str, float]:
    """Parameter counts of the models whose count is unknown, by loading them (``--count-params``)."""
    from cape_hpc import progress
    from cape_hpc.models import load_model

    out = {}
    todo = [mi for mi in inputs if not math.isfinite(mi.params)]
    with progress.task("counting parameters", total=len(todo), unit="model") as advance:
        for mi in todo:
            for spec in (mi.name, mi.result.source.replace("tiny:", "tiny-")):
                try:
                    loaded = load_model(spec)
                except Exception:  # noqa: BLE001 - try the next spelling; unknown stays unknown
                    continue
                out[mi.name] = float(sum(p.numel() for p in loaded.model.parameters()))
                del loaded
                break
            advance(1)
    return out


def run(args: argparse.Namespace) -> int:
    from cape_hpc.crossmodel.families import cross_model_analysis
    from cape_hpc.crossmodel.results import GROUP
    from cape_hpc.crossmodel.table import read_inputs

    opts = CrossModelOptions.from_args(args)
    if args.out:
        from cape_hpc.io.store import check_target

        check_target(args.out)
    scores = None
    if (args.scores or "").lower() != "none":
        from cape_hpc.io.scores import load_scores

        scores = load_scores(args.scores)
    with progress_shown(args):
        inputs = read_inputs(args.files, scores, spec=_spec_from_jobs(args.job))
        if args.count_params:
            counted = _count(inputs)
            for mi in inputs:
                if mi.name in counted:
                    mi.params, mi.params_source = counted[mi.name], "counted"
        res = cross_model_analysis(inputs, opts, scores)
    status = None
    if args.out:
        from cape_hpc.io.store import update_results

        status = update_results(args.out, {GROUP: res}, force=args.force).get(GROUP)
    if args.json:
        emit_json(res)
        return 0
    show(res)
    if status:
        print(f"\nwritten {GROUP} to {args.out} ({status})")
    return 0


def _ci(ci) -> str:
    return f"[{fmt(ci.low, 3)}, {fmt(ci.high, 3)}]" if ci.defined else "-"


def _outside(v, ci) -> bool:
    """An estimate outside its own percentile interval (the bootstrap distribution is biased)."""
    return ci.defined and isinstance(v, (int, float)) and math.isfinite(v) and not ci.contains(v)


def _v(v, ci, d: int = 3) -> str:
    return f"{fmt(v, d)} {_ci(ci)}{' !' if _outside(v, ci) else ''}" if ci.defined else fmt(v, d)


def outside_note(rows) -> str:
    """A note naming each model and quantity whose estimate lies outside its interval ('' if none)."""
    hits = [f"{r.model} {name[:-3]}" for r in rows for name in vars(r)
            if name.endswith("_ci") and hasattr(r, name[:-3]) and _outside(getattr(r, name[:-3]), getattr(r, name))]
    if not hits:
        return ""
    return ("note: '!' marks an estimate outside its own block-bootstrap percentile interval (the cosine of "
            "resampled sums is biased, so the interval is shifted; read the interval as a spread, not as "
            f"bounds on the estimate): {', '.join(hits)}")


def show(res) -> None:
    lv = f"{100 * res.heads.ci.level:g}%" if res.heads.ci.level else "95%"
    print(f"{len(res.rows)} models; prompts sha256 {res.prompt_set_sha256[:16]}, R = {res.set_r!r}, "
          f"T = {res.set_t!r}, pooling {res.pooling}; {res.n_blocks} prompt blocks (seed {res.block_seed}); "
          f"intervals: block bootstrap ({lv}), ladders: two-level bootstrap (models x prompt blocks), "
          f"{res.provenance.n_resamples} resamples, seed {res.provenance.seed}")
    rows = [(r.model, r.family or "-", r.params, r.params_source or "-", r.n_layers, r.d_model,
             _v(r.final_coupling, r.final_coupling_ci), _v(r.mean_coupling, r.mean_coupling_ci),
             f"{_v(r.min_coupling, r.min_coupling_ci)} @{r.min_layer}",
             f"{r.competing_layers} {_ci(r.competing_layers_ci)}", r.n_valid) for r in res.rows]
    print_table(rows, ["model", "family", "N", "N from", "L", "d", "final", "mean", "min @layer", "comp. layers",
                       "valid"], title="Cross-model internals table: layer coupling (block-bootstrap intervals)")
    rows = [(r.model, _v(r.head_net, r.head_net_ci), _v(r.head_median, r.head_median_ci),
             _v(r.head_cooperative_share, r.head_cooperative_share_ci),
             f"{r.head_competing_count} {_ci(r.head_competing_count_ci)}" if r.n_heads_total else "-",
             f"{fmt(r.d_rep_first, 3)} / {fmt(r.d_rep_last, 3)} / {fmt(r.d_rep_mean, 3)} / {fmt(r.d_rep_max, 3)}",
             _v(r.bottleneck_hidden, r.bottleneck_hidden_ci), r.bottleneck_logits, r.projection_gain, r.note or "")
            for r in res.rows]
    print_table(rows, ["model", "head net", "head median", "coop. heads", "comp. heads", "d_rep first/last/mean/max",
                       "hidden", "logits", "gain", "note"],
                title="Heads, d_rep (no interval: second moments are not kept per block) and bottleneck")
    if outside_note(res.rows):
        print(outside_note(res.rows))
    if res.ladders:
        print_table([(l.family, l.n_models, ", ".join(l.models), l.slope,
                      _ci(l.slope_boot.interval(0.95)), l.r, l.reason or l.note or "")
                     for l in res.ladders],
                    ["family", "models", "ladder (by N)", "slope /decade", "95% CI", "r", "note"],
                    title=f"Ladders of the {res.quantity} internal coupling against log10 N")
    if res.gammas:
        print_table([(g.family, f"{g.prev_model} -> {g.model}", g.x_mid, g.d_coupling, g.gamma, _ci(g.gamma_ci),
                      g.phase or "-", g.reason) for g in res.gammas],
                    ["family", "interval", "x_mid", "d coupling", "internal gamma", "95% CI", "phase", "reason"],
                    title="Internal gamma between neighbouring sizes (d coupling / d log10 N)")
    if res.nc:
        print_table([(e.family, e.estimator, e.log10_nc, e.nc / 1e9 if math.isfinite(e.nc) else math.nan,
                      _ci(e.bootstrap.interval(0.95)), e.bootstrap.n_valid, e.reason or e.bootstrap.note)
                     for e in res.nc],
                    ["family", "estimator", "log10 N_c", "N_c (B)", "95% CI (log10)", "valid", "reason / note"],
                    title="Internal N_c (two-level bootstrap)")
    if res.fixed_points:
        print_table([(f.family, f.a, f.b, f.gamma_star, _ci(f.bootstrap.interval(0.95)), f.stability, f.n_points,
                      f.reason) for f in res.fixed_points],
                    ["family", "a", "b", "coupling*", "95% CI", "stability", "points", "reason"],
                    title="Fixed point of the internal ladder: d coupling / d log10 N = a coupling + b")
    h = res.heads
    print(f"\nCompeting heads: {h.n_zero} of {h.n_models} models measured have zero competing heads "
          f"({fmt(100 * h.share, 3) if h.n_models else '-'}%; Wilson {lv}: "
          f"{fmt(100 * h.ci.low, 3)}-{fmt(100 * h.ci.high, 3)}%)"
          + (f"; with competing heads: {', '.join(h.with_competing)}" if h.with_competing else "")
          + (f"; heads not measured: {', '.join(h.not_measured)}" if h.not_measured else ""))
    if res.phases:
        print_table([(p.model, p.family, p.internal_gamma, p.internal_phase or "-", p.benchmark_gamma,
                      p.benchmark_phase or "-", "yes" if p.agree else "no", p.reason) for p in res.phases],
                    ["model", "family", "internal", "internal phase", "benchmark gamma", "benchmark phase", "agree",
                     "reason"], title="Internal vs benchmark-level phase")
    a = res.phase_agreement
    print(f"phase agreement: {a.n_agree} of {a.n_both} models with both phases"
          + (f" (Wilson {lv}: {fmt(100 * a.ci.low, 3)}-{fmt(100 * a.ci.high, 3)}%)" if a.n_both else "")
          + (f"; {a.note}" if a.note else ""))
    if res.generations:
        print_table([(g.lineage, f"{g.model_a} ({g.family_a})", f"{g.model_b} ({g.family_b})", g.d_log10_n,
                      g.coupling_a, g.coupling_b, g.difference, _ci(g.difference_ci), g.head_cooperative_share_a,
                      g.head_cooperative_share_b) for g in res.generations],
                    ["lineage", "older", "newer", "d log10 N", "coupling old", "coupling new", "difference", "95% CI",
                     "coop. heads old", "coop. heads new"], title="Generations at matched size")
