"""`cape dynamics`, `cape predict`, `cape reproduce`.

--out merges into an existing results file (``cape_hpc.io.store.update_results``: atomic rewrite that
keeps every other group; a group of the same name with different content is refused without --force).
Groups: ``/dynamics/<model>/<train>--<holdout>``, ``/dynamics/predict/<family>/<size>``, ``/reproduce``.
"""
from __future__ import annotations

import math
import re

import numpy as np

from cape_hpc.commands.common import add_output_args, add_scores_arg, emit_json, fmt, print_table
from cape_hpc.errors import OptionError


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def _families(v: list[str] | None) -> list[str]:
    out: list[str] = []
    for item in v or []:
        out += [s.strip() for s in item.split(",") if s.strip()]
    return out


def _write(args, groups) -> None:
    if getattr(args, "out", None):
        from cape_hpc.io.store import update_results

        outcome = update_results(args.out, groups, force=args.force)
        if not args.json:
            print(f"\n{args.out}: " + ", ".join(f"{k} {v}" for k, v in outcome.items()))


def _size(text: str) -> float:
    """'70B', '1.3b', '350M', '7e9' -> parameters."""
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*([kKmMbBtT]?)\s*", str(text))
    if not m:
        raise OptionError(f"option '--size': {text!r} is not a size (e.g. 70B, 350M, 7e9)")
    mult = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return float(m.group(1)) * mult


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _model_opts(p) -> None:
    p.add_argument("--model", choices=("sindy", "linear"), default="sindy", help="ODE class (default sindy)")
    p.add_argument("--degree", type=int, default=3, help="SINDy polynomial library degree (default 3)")
    p.add_argument("--threshold", type=float, default=0.1, help="SINDy STLSQ threshold, in --units (default 0.1)")
    p.add_argument("--alpha", type=float, default=0.05, help="STLSQ ridge alpha (default 0.05)")
    p.add_argument("--ridge", type=float, default=0.0, help="ridge penalty of the linear model (default 0)")
    p.add_argument("--units", choices=("fraction", "percent"), default="fraction",
                   help="scores as fractions (default) or percent when fitting")
    p.add_argument("--derivative", choices=("gradient", "forward"), default="gradient",
                   help="finite differences: second-order non-uniform gradient per model (default) or "
                        "forward differences per interval")
    p.add_argument("--benchmarks", default="HS,TQA,ARC,WG,MMLU", help="score columns (default all five)")
    p.add_argument("--baseline-degrees", default="1,2,3,4", help="polynomial baseline degrees (default 1,2,3,4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unstratified", action="store_true",
                   help="resample intervals across families instead of within each family")


def _common_kwargs(args) -> dict:
    try:
        degrees = [int(d) for d in args.baseline_degrees.split(",") if d.strip()]
    except ValueError:
        raise OptionError(f"option '--baseline-degrees': {args.baseline_degrees!r} is not a list of integers") from None
    return dict(model=args.model, benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()],
                units=args.units, degree=args.degree, threshold=args.threshold, alpha=args.alpha, ridge=args.ridge,
                derivative=args.derivative, baseline_degrees=degrees, seed=args.seed,
                stratify=not args.unstratified)


# ------------------------------------------------------------------------------------------------

def run_dynamics(args) -> int:
    from cape_hpc.dynamics.discovery import discover
    from cape_hpc.io.scores import load_scores

    df = load_scores(args.scores)
    train, hold = _families(args.train), _families(args.holdout)
    res = discover(df, train=train, holdout=hold, n_resamples=args.n_resamples, include_start=args.include_start,
                   anchor_baselines=args.anchor_baselines, **_common_kwargs(args))
    if args.json:
        emit_json(res)
    else:
        print_dynamics(res)
    name = f"/dynamics/{res.model}/{_key('+'.join(res.train))}--{_key('+'.join(res.holdout) or 'none')}"
    _write(args, {name: res})
    return 0


def print_dynamics(res) -> None:
    print(f"ODE ({res.model}) trained on {', '.join(res.train)}; units {res.options['units']}, "
          f"derivative {res.options['derivative']}"
          + (f", degree {res.options['degree']}, threshold {res.options['threshold']:g}" if res.model == "sindy" else ""))
    print("error = mean|pred - actual| / mean(actual) over the sizes after each family's smallest model")
    rows = [["fit", ", ".join(res.train), _pct(res.fit_error.rel_mae), _pct(res.fit_error.mape),
             fmt(res.fit_error.mae_points), res.fit_error.n_points]]
    if res.holdout_error is not None:
        rows.append([f"holdout ({res.model})", ", ".join(res.holdout), _pct(res.holdout_error.rel_mae),
                     _pct(res.holdout_error.mape), fmt(res.holdout_error.mae_points), res.holdout_error.n_points])
        for b in res.baselines:
            rows.append([f"poly deg {b.degree}", ", ".join(res.holdout), _pct(b.rel_mae), _pct(b.mape),
                         fmt(b.mae_points), "" if b.valid else "invalid (too few sizes)"])
    print_table(rows, ["", "families", "rel. MAE", "MAPE", "MAE (pts)", "points"], title="Errors")
    per = [["fit"] + [_pct(res.fit_error.per_benchmark[b]) for b in res.benchmarks]]
    if res.holdout_error is not None:
        per.append(["holdout"] + [_pct(res.holdout_error.per_benchmark[b]) for b in res.benchmarks])
    print_table(per, [""] + res.benchmarks, title="Per benchmark (rel. MAE)")
    print("\nEquations (x = log10 N):")
    for eq in res.equations:
        print("  " + eq)
    ts = res.term_stability
    if ts is not None:
        what = "inclusion probability" if res.model == "sindy" else "sign agreement with the full fit (dense model)"
        mat = ts.inclusion if res.model == "sindy" else ts.sign_agreement
        used = np.where(np.any(ts.full_active, axis=0) | np.any(ts.inclusion >= 0.05, axis=0))[0] \
            if res.model == "sindy" else np.arange(len(ts.terms))
        if len(used) == 0:
            print(f"\nTerm stability: no term is selected in >= 5% of {ts.n_valid} resamples")
        else:
            rows = [[b] + [fmt(float(mat[i, j]), 3) for j in used] for i, b in enumerate(ts.benchmarks)]
            print_table(rows, ["eq"] + [ts.terms[j] for j in used],
                        title=f"Term stability: {what} over {ts.n_valid}/{ts.n_resamples} bootstrap resamples of "
                              f"{ts.n_rows} intervals ({'stratified by family' if ts.stratified else 'unstratified'}, "
                              f"seed {ts.seed})")
            if res.model == "sindy":
                print("  terms shown: selected by the full fit or in >= 5% of resamples")
    if res.phase_fits is not None:
        pf = res.phase_fits
        rows = [[f.phase, f.n_intervals, fmt(f.a), fmt(f.b), fmt(f.b_se), ", ".join(f.families)] for f in pf.fits]
        print_table(rows, ["phase", "intervals", "a", "b", "se(b)", "families"],
                    title=f"Per-phase fits d{pf.b2}/dlog10N = a + b * {pf.b1}_mid ({pf.units})")
        print(f"  |b_bonus| / |b_tax| = {fmt(pf.ratio_bonus_over_tax)}")


def run_predict(args) -> int:
    from cape_hpc.dynamics.discovery import predict_size
    from cape_hpc.io.scores import load_scores

    df = load_scores(args.scores)
    res = predict_size(df, args.family, _size(args.size), train=_families(args.train) or None,
                       n_resamples=args.n_resamples, **_common_kwargs(args))
    if args.json:
        emit_json(res)
    else:
        print(f"{res.family}: integrate the {res.model} ODE (trained on {', '.join(res.train)}) from "
              f"{res.start_model} (log10 N = {res.start_log10_n:.3f}) to N = {res.size:.4g} "
              f"(log10 N = {res.log10_n:.3f})")
        rows = []
        for j, b in enumerate(res.benchmarks):
            band = res.band.get("0.95", [[math.nan, math.nan]] * len(res.benchmarks))[j]
            rows.append([b, fmt(res.start_scores[j]), fmt(res.ode[j]), f"[{fmt(band[0])}, {fmt(band[1])}]"]
                        + [fmt(v[j]) for v in res.baselines.values()])
        print_table(rows, ["benchmark", "start", "ODE", "95% band"] + list(res.baselines),
                    title=f"Predicted scores (percent); band over {res.n_valid} bootstrap refits")
        print("\nEquations:\n  " + "\n  ".join(res.equations))
    _write(args, {f"/dynamics/predict/{_key(res.family)}/{_key(f'{res.size:.6g}')}": res})
    return 0


def run_reproduce(args) -> int:
    from cape_hpc.analysis.reproduce import run_audit
    from cape_hpc.io.scores import load_frontier, load_loss, load_scores

    res = run_audit(load_scores(args.scores), frontier=load_frontier(args.frontier), loss=load_loss(args.loss),
                    claims_path=args.claims, internals=args.internals, n_resamples=args.n_resamples,
                    seed=args.seed, only=_families(args.claim) or None)
    if args.json:
        emit_json(res)
    else:
        print_audit(res, verbose=args.verbose_alternatives)
    _write(args, {"/reproduce": res})
    return 0


def print_audit(res, verbose: bool = False) -> None:
    rows = []
    for c in res.claims:
        why = c.alternative or (c.reason if c.verdict.startswith(("needs", "not computable")) or c.reason else "")
        if len(why) > 72 and not verbose:
            why = why[:69] + "..."
        rows.append([c.id, c.paper, c.value, c.verdict if not c.alternative else "reproduced only with alternative",
                     why])
    print_table(rows, ["claim", "paper", "value (stated method)", "verdict", "alternative that reproduces it / why"],
                title=f"Reproduction audit ({len(res.claims)} claims, registry {res.registry})")
    if verbose:
        for c in res.claims:
            if c.alternatives_tried:
                print(f"\n{c.id}: {c.gist}\n  stated: {c.method} -> {c.value}")
                for a in c.alternatives_tried:
                    mark = {True: "MATCH", False: "no", None: "?"}[a.matches]
                    print(f"  alt  {a.name}: {a.value} ({mark}){' ' + a.reason if a.reason else ''}")
    print("\nverdicts: " + ", ".join(f"{k}: {v}" for k, v in sorted(res.counts.items())))


# ------------------------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser("dynamics", help="SINDy / linear ODE in benchmark space: fit, holdout, baselines",
                       description="Fit dB/dlog10N on training families, integrate each held-out family from "
                                   "its smallest model, compare with polynomial baselines; equations, term "
                                   "inclusion probabilities (bootstrap over intervals), per-phase fits.")
    add_scores_arg(p)
    p.add_argument("--train", action="append", default=None, metavar="FAMILY[,FAMILY]",
                   help="training families (repeat or comma-separate; default Pythia)")
    p.add_argument("--holdout", action="append", default=None, metavar="FAMILY[,FAMILY]",
                   help="held-out families (default Llama-2)")
    _model_opts(p)
    p.add_argument("--n-resamples", type=int, default=1000, help="term-stability resamples (0 = skip; default 1000)")
    p.add_argument("--anchor-baselines", action="store_true",
                   help="shift each baseline polynomial through the held-out family's smallest model")
    p.add_argument("--include-start", action="store_true",
                   help="count each family's starting model in the errors (default: later sizes only)")
    add_output_args(p)
    p.set_defaults(func=_with_defaults(run_dynamics, train=["Pythia"], holdout=["Llama-2"]))

    q = sub.add_parser("predict", help="integrate the fitted ODE from a family's largest model to a size",
                       description="Predict a family's scores at N: the ODE (with a bootstrap band) and each "
                                   "polynomial baseline.")
    add_scores_arg(q)
    q.add_argument("--family", required=True)
    q.add_argument("--size", required=True, help="target parameter count, e.g. 70B, 350M, 7e9")
    q.add_argument("--train", action="append", default=None, metavar="FAMILY[,FAMILY]",
                   help="families to fit the ODE on (default: --family itself)")
    _model_opts(q)
    q.add_argument("--n-resamples", type=int, default=200, help="bootstrap refits for the band (default 200)")
    add_output_args(q)
    q.set_defaults(func=run_predict)

    r = sub.add_parser("reproduce", help="audit every quantitative claim of the paper against the data",
                       description="Recompute each claim of data/claims.yaml with the stated method, then with "
                                   "the named alternatives; verdict per claim.")
    add_scores_arg(r)
    r.add_argument("--frontier", metavar="CSV", default=None, help="frontier table (default data/frontier.csv)")
    r.add_argument("--loss", metavar="CSV", default=None, help="loss table (default data/pythia_loss.csv)")
    r.add_argument("--claims", metavar="YAML", default=None, help="claims registry (default data/claims.yaml)")
    r.add_argument("--internals", metavar="FILE.h5", default=None, help="results file with /internals groups")
    r.add_argument("--claim", action="append", default=None, metavar="ID[,ID]", help="audit only these claims")
    r.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples for N_c CIs (default 1000, as the paper)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--alternatives", dest="verbose_alternatives", action="store_true",
                   help="also list every alternative tried and its value")
    add_output_args(r)
    r.set_defaults(func=run_reproduce)


def _with_defaults(func, **defaults):
    def run(args):
        for k, v in defaults.items():
            if getattr(args, k, None) is None:
                setattr(args, k, v)
        return func(args)
    return run
