"""`cape steer`: calibrate a truthfulness direction at the probe layer and compare batched greedy
generation with and without the fused steering injection."""
from __future__ import annotations

import argparse

from cape_hpc.commands.common import add_output_args, emit_json, print_table
from cape_hpc.commands.internals import store_status
from cape_hpc.models.options import ModelOptions
from cape_hpc.steering.options import SteerOptions


def register(sub) -> None:
    p = sub.add_parser("steer", help="steered vs unsteered generation, intervention rate with a Wilson interval",
                       description="Calibrate the direction (true vs false statements) at the probe layer, run "
                                   "batched greedy generation with and without h <- h + alpha*s*v there, and "
                                   "print per-prompt baseline/steered text, the changed flag, cos(h, v) and the "
                                   "intervention rate (docs/METHODS.md §4).")
    ModelOptions.add_arguments(p)
    p.add_argument("--calibration", default=None, metavar="JSONL",
                   help="true/false statements (default: data/prompts/calibration.jsonl)")
    p.add_argument("--prompts", default=None, metavar="JSONL",
                   help="prompts to generate from (default: data/prompts/contrastive.jsonl, see --set)")
    SteerOptions.add_arguments(p)
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cape_hpc.internals import load_prompts
    from cape_hpc.io.store import update_results
    from cape_hpc.steering import run_steering

    mopts, opts = ModelOptions.from_args(args), SteerOptions.from_args(args)
    cal = load_prompts(args.calibration, calibration=True)
    ps = load_prompts(args.prompts)
    loaded = mopts.load()
    res = run_steering(loaded, cal, ps, opts)
    status = None
    if args.out:
        status = store_status(update_results(args.out, {res.group: res}, force=args.force), res.group)
    if args.json:
        emit_json(res)
        return 0
    tau = "none" if res.tau is None else f"{res.tau:g}"
    print(f"model {res.model}: {res.source}, dtype {res.dtype}, backend {res.backend}")
    print(f"direction: {res.method} at layer {res.probe_layer} of {loaded.adapter.n_layers} from "
          f"{cal.path} ({sum(p.true is True for p in cal.prompts)} true / "
          f"{sum(p.true is False for p in cal.prompts)} false)")
    print(f"injection: alpha {res.alpha:g}, scale {res.scale}, positions {res.positions}, gate tau {tau}; "
          f"greedy, {res.max_new_tokens} new tokens, batch {res.batch_size}, "
          f"chat template {'on' if res.chat_template else 'off'}")

    def short(s: str, n: int = 60) -> str:
        s = s.replace("\n", "\\n")
        return s if len(s) <= n else s[:n - 3] + "..."

    rows = [(r.id, round(r.cos, 4), "yes" if r.changed else "no", short(r.baseline), short(r.steered))
            for r in res.per_prompt]
    print_table(rows, ["id", "cos(h,v)", "changed", "baseline", "steered"], title="Per prompt")
    ci = res.rate_ci
    print(f"\nintervention rate: {res.n_changed}/{res.n_prompts} = {res.rate:.3f} "
          f"({ci.level:.0%} Wilson interval {ci.low:.3f} .. {ci.high:.3f}); "
          f"{res.n_injected} positions injected")
    if status:
        print(f"{status}: {args.out} {res.group}")
    return 0
