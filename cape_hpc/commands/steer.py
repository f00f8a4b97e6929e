"""`cape steer`: the held-out multiple-choice outcome of steering over an alpha grid and a layer
scan (dose-response table, fluency cost, chosen operating point), then the qualitative view:
batched greedy generation with and without the injection at the chosen point."""
from __future__ import annotations

import argparse
import math

from cape_hpc.commands.common import (add_output_args, add_progress_arg, check_out_first, emit_json, print_table,
                                     progress_shown)
from cape_hpc.commands.internals import store_status
from cape_hpc.models.options import ModelOptions, PlacementOptions
from cape_hpc.steering.options import OutcomeOptions


def register(sub) -> None:
    p = sub.add_parser("steer", help="steering: held-out correction/damage over alpha and layer, fluency cost, "
                                     "operating point, generation",
                       description="Score multiple-choice items by length-normalised log-probability with the "
                                   "truthfulness direction injected at each candidate layer and alpha (one "
                                   "alpha per batch row), the direction calibrated on the training folds and "
                                   "judged on the held-out items (k-fold).  Prints the dose-response table "
                                   "(accuracy, correction and damage rates with Wilson intervals, exact McNemar "
                                   "p, KL and perplexity on neutral text) and the operating point chosen by the "
                                   "stated rule, then greedy generation with and without the injection at that "
                                   "point (docs/METHODS.md §4).")
    ModelOptions.add_arguments(p)
    PlacementOptions.add_arguments(p)
    p.add_argument("--items", default=None, metavar="JSONL",
                   help="multiple-choice items and true/false statements (default: data/mc_items.jsonl; "
                        "schema in docs/METHODS.md §4.3)")
    p.add_argument("--neutral", default=None, metavar="JSONL",
                   help="neutral texts for the fluency cost (default: data/prompts/neutral.jsonl)")
    p.add_argument("--prompts", default=None, metavar="JSONL",
                   help="prompts of the generation view (default: data/prompts/contrastive.jsonl, see --set)")
    OutcomeOptions.add_arguments(p)
    add_output_args(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def _ci(ci) -> str:
    return "-" if not ci.defined else f"{ci.low:.2f}-{ci.high:.2f}"


def _rate(k: int, n: int, r: float) -> str:
    return f"{k}/{n}" + ("" if not math.isfinite(r) else f" = {r:.2f}")


def print_outcome(res, n_layers: int) -> None:
    tau = "none" if res.tau is None else f"{res.tau:g}"
    print(f"model {res.model}: {res.source}, dtype {res.dtype}, backend {res.backend}")
    dom = ", ".join(f"{d} {k}" for d, k in sorted(res.domains.items()))
    print(f"items: {res.n_items} from {res.items_path} ({dom}); {res.n_folds}-fold held-out, seed {res.fold_seed}")
    print(f"direction: {res.method} at layers {', '.join(map(str, res.layers))} of {n_layers}, calibrated on "
          f"{res.calibration}")
    print(f"injection: scale {res.scale}, positions {res.positions}, gate tau {tau}; fluency on "
          f"{res.n_neutral} neutral texts ({res.n_neutral_tokens} next-token positions)")
    print(f"baseline: accuracy {res.baseline_accuracy:.3f} ({res.level:.0%} Wilson {_ci(res.baseline_accuracy_ci)}), "
          f"MC2 {res.baseline_mc2:.3f}")
    rows = []
    for p in res.points:
        mark = "*" if (p.layer == res.chosen_layer and p.alpha == res.chosen_alpha) else ("ok" if p.eligible else "")
        rows.append((p.layer, p.alpha, round(p.accuracy, 3), _ci(p.accuracy_ci), round(p.mc2, 3),
                     _rate(p.n_corrected, p.n_base_wrong, p.correction_rate), _ci(p.correction_ci),
                     _rate(p.n_damaged, p.n_base_right, p.damage_rate), _ci(p.damage_ci), p.mcnemar_p, p.kl,
                     p.perplexity, mark))
    print_table(rows, ["layer", "alpha", "acc", "acc CI", "MC2", "corrected", "corr CI", "damaged", "dmg CI",
                       "McNemar p", "KL", "ppl", "pick"],
                title=f"Dose-response (held-out; intervals: {res.level:.0%} Wilson; KL in nats)")
    print(f"\noperating-point rule: {res.rule}")
    best = res.chosen
    if best is None:
        print("operating point: none (no (layer, alpha) meets the bounds with at least one correction)")
    else:
        print(f"operating point: layer {best.layer}, alpha {best.alpha:g}: correction "
              f"{_rate(best.n_corrected, best.n_base_wrong, best.correction_rate)} ({_ci(best.correction_ci)}), "
              f"damage {_rate(best.n_damaged, best.n_base_right, best.damage_rate)} ({_ci(best.damage_ci)}), "
              f"accuracy {res.baseline_accuracy:.3f} -> {best.accuracy:.3f}, McNemar p {best.mcnemar_p:.3g}, "
              f"KL {best.kl:.3g}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cape_hpc.internals import load_prompts
    from cape_hpc.io.store import update_results
    from cape_hpc.steering import evaluate_steering, load_items, load_neutral, run_steering
    from cape_hpc.steering.steer import Direction

    mopts, opts = ModelOptions.from_args(args), OutcomeOptions.from_args(args)
    check_out_first(args, update=True)
    items = load_items(args.items)
    neutral = load_neutral(args.neutral) if opts.max_neutral != 0 else None
    ps = load_prompts(args.prompts) if opts.generate else None
    with progress_shown(args):
        loaded = mopts.load(PlacementOptions.from_args(args))
        res = evaluate_steering(loaded, items, opts, neutral=neutral)
        groups = {res.group: res}
        gen = None
        if opts.generate:
            best = res.chosen
            layer = best.layer if best else res.layers[0]
            alpha = best.alpha if best else opts.alpha
            li = res.layers.index(layer)
            direction = Direction(vector=np.asarray(res.directions[li]), probe_layer=layer, method=res.method,
                                  n_true=0, n_false=0, calibration_sha256=res.items_sha256)
            gen = run_steering(loaded, None, ps, opts, direction=direction, alpha=alpha)
            groups[gen.group] = gen
    status = None
    if args.out:
        status = update_results(args.out, groups, force=args.force)
    if args.json:
        emit_json({"outcome": res, **({"generation": gen} if gen is not None else {})})
        return 0
    print_outcome(res, loaded.adapter.n_layers)
    if gen is not None:
        def short(s: str, n: int = 50) -> str:
            s = s.replace("\n", "\\n")
            return s if len(s) <= n else s[:n - 3] + "..."

        rows = [(r.id, round(r.cos, 4), "yes" if r.changed else "no", short(r.baseline), short(r.steered))
                for r in gen.per_prompt]
        print_table(rows, ["id", "cos(h,v)", "changed", "baseline", "steered"],
                    title=f"Generation at layer {gen.probe_layer}, alpha {gen.alpha:g} (greedy, "
                          f"{gen.max_new_tokens} tokens; qualitative view)")
        ci = gen.rate_ci
        print(f"\nintervention rate (outputs whose tokens changed, not a measure of correction): "
              f"{gen.n_changed}/{gen.n_prompts} = {gen.rate:.3f} ({ci.level:.0%} Wilson interval {ci.low:.3f} .. "
              f"{ci.high:.3f}); {gen.n_injected} positions injected")
    if status is not None:
        for g in groups:
            print(f"{store_status(status, g)}: {args.out} {g}")
    return 0
