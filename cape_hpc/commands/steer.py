"""`cape steer`: calibrate a truthfulness direction at the probe layer and compare batched greedy
generation with and without the fused steering injection."""
from __future__ import annotations

from cape_hpc.commands.common import add_output_args, emit_json, print_table
from cape_hpc.commands.internals import add_model_args, merge_write


def register(sub) -> None:
    p = sub.add_parser("steer", help="steered vs unsteered generation, intervention rate with a Wilson interval",
                       description="Calibrate the direction (true vs false statements) at the probe layer, run "
                                   "batched greedy generation with and without h <- h + alpha*s*v there, and "
                                   "print per-prompt baseline/steered text, the changed flag, cos(h, v) and the "
                                   "intervention rate (SPEC section 4).")
    add_model_args(p)
    p.add_argument("--calibration", default=None, metavar="JSONL",
                   help="true/false statements (default: data/prompts/calibration.jsonl)")
    p.add_argument("--prompts", default=None, metavar="JSONL",
                   help="prompts to generate from (default: the 'truthfulness' set of data/prompts/contrastive.jsonl)")
    p.add_argument("--set", default=None, dest="set_name",
                   help="use only prompts of this set (default: 'truthfulness' when present, else all)")
    p.add_argument("--alpha", type=float, default=0.5, help="injection strength (default 0.5)")
    p.add_argument("--scale", default="relative", choices=("relative", "absolute"),
                   help="relative: alpha * |h| * v (default); absolute: alpha * v")
    p.add_argument("--positions", default="all", choices=("all", "last", "generated"),
                   help="all: every prompt and generated position; last: the last prompt token only; "
                        "generated: generated tokens only")
    p.add_argument("--tau", type=float, default=None,
                   help="gate: inject only where cos(h, v) < tau (default: no gate)")
    p.add_argument("--probe-layer", type=int, default=None, help="default n_layers // 4")
    p.add_argument("--direction", default="mean-diff", choices=("mean-diff", "pca"))
    p.add_argument("--pooling", default="last", choices=("last", "mean"), help="pooling of the calibration states")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--max-prompts", type=int, default=None, metavar="N")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--chat-template", default="auto", choices=("auto", "on", "off"),
                   help="wrap prompts in the tokenizer's chat template (auto: when it has one)")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cape_hpc.errors import OptionError
    from cape_hpc.internals import load_prompts
    from cape_hpc.internals.prompts import PromptSet
    from cape_hpc.models import load_model
    from cape_hpc.steering import run_steering

    cal = load_prompts(args.calibration, calibration=True)
    ps = load_prompts(args.prompts)
    name = args.set_name or ("truthfulness" if "truthfulness" in ps.sets else None)
    chosen = ps.select(name) if name else list(ps.prompts)
    if name and not chosen:
        raise OptionError(f"--set {name!r}: no prompt of {ps.path} has that set (sets: {', '.join(ps.sets)})")
    if args.max_prompts is not None:
        if args.max_prompts < 1:
            raise OptionError(f"--max-prompts must be >= 1, got {args.max_prompts}")
        chosen = chosen[:args.max_prompts]
    prompts = PromptSet(chosen, path=ps.path, sha256=ps.sha256)
    loaded = load_model(args.model, revision=args.revision, dtype=args.dtype,
                        trust_remote_code=args.trust_remote_code)
    chat = args.chat_template == "on" or (args.chat_template == "auto" and bool(getattr(loaded.tokenizer, "chat_template", None)))
    res = run_steering(loaded, cal, prompts, alpha=args.alpha, scale=args.scale, positions=args.positions,
                       tau=args.tau, probe_layer=args.probe_layer, method=args.direction,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, backend=args.backend,
                       pooling=args.pooling, chat_template=chat)
    status = merge_write(args.out, res.group, res.to_store_tree(), force=args.force) if args.out else None
    if args.json:
        emit_json(res)
        return 0
    tau = "none" if res.tau is None else f"{res.tau:g}"
    print(f"model {res.model}: {res.source}, dtype {res.dtype}, backend {res.backend}")
    print(f"direction: {res.method} at layer {res.probe_layer} of {loaded.adapter.n_layers} from "
          f"{cal.path} ({sum(p.true for p in cal.prompts)} true / {sum(not p.true for p in cal.prompts)} false)")
    print(f"injection: alpha {res.alpha:g}, scale {res.scale}, positions {res.positions}, gate tau {tau}; "
          f"greedy, {res.max_new_tokens} new tokens, batch {res.batch_size}, chat template {'on' if chat else 'off'}")

    def short(s: str, n: int = 60) -> str:
        s = s.replace("\n", "\\n")
        return s if len(s) <= n else s[:n - 3] + "..."

    rows = [(r["id"], round(r["cos"], 4), "yes" if r["changed"] else "no", short(r["baseline"]), short(r["steered"]))
            for r in res.per_prompt]
    print_table(rows, ["id", "cos(h,v)", "changed", "baseline", "steered"], title="Per prompt")
    print(f"\nintervention rate: {res.n_changed}/{res.n_prompts} = {res.rate:.3f} "
          f"(95% Wilson interval {res.rate_ci_low:.3f} .. {res.rate_ci_high:.3f}); "
          f"{res.n_injected} positions injected")
    if status:
        print(f"{status}: {args.out} {res.group}")
    return 0
