"""`cape internals`: per-layer and per-head couplings, projection bottleneck and d_rep of one model."""
from __future__ import annotations

import argparse
import warnings

from cape_hpc.commands.common import (add_output_args, add_progress_arg, check_out_first, emit_json, print_table,
                                     progress_shown)
from cape_hpc.internals.options import ExtractOptions
from cape_hpc.models.options import ModelOptions, PlacementOptions


def register(sub) -> None:
    p = sub.add_parser("internals", help="per-layer / per-head couplings, projection bottleneck, d_rep of a model",
                       description="Stream the contrastive prompts through a model, pool each tap on the fly "
                                   "and print the per-layer table and the per-head summary (docs/METHODS.md §3).")
    ModelOptions.add_arguments(p)
    PlacementOptions.add_arguments(p)
    p.add_argument("--prompts", default=None, metavar="JSONL",
                   help="prompt set (default: data/prompts/contrastive.jsonl)")
    ExtractOptions.add_arguments(p)
    add_output_args(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def store_status(outcome: dict[str, str], group: str) -> str:
    """'written' or 'unchanged', from ``update_results``'s outcome of one group."""
    return "unchanged" if outcome.get(group) == "unchanged" else "written"


def run(args: argparse.Namespace) -> int:
    from cape_hpc.internals import extract_internals, load_prompts
    from cape_hpc.io.store import update_results

    mopts, opts = ModelOptions.from_args(args), ExtractOptions.from_args(args)
    check_out_first(args, update=True)
    prompts = load_prompts(args.prompts)
    with progress_shown(args):
        loaded = mopts.load(PlacementOptions.from_args(args))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = extract_internals(loaded, prompts, opts, overwrite=bool(getattr(args, "force", False)))
    status = None
    if args.out:
        status = store_status(update_results(args.out, {res.group: res}, force=args.force), res.group)
    if args.json:
        emit_json(res)
        return 0
    for w in caught:
        print(f"warning: {w.message}")
    print(f"model {res.model}: {res.source}, revision {res.revision}, dtype {res.dtype}, backend {res.backend}")
    print(f"prompts: {prompts.path} (sha256 {res.prompt_set_sha256[:16]}...), R = {res.set_r!r} "
          f"({res.n_r}), T = {res.set_t!r} ({res.n_t}), pooling {res.pooling}")
    bl = res.blocks
    level = f"{100 * bl.level:g}%"
    print(f"blocks: {bl.n_blocks} ({bl.n_nonempty} non-empty, seed {bl.seed}), block bootstrap: "
          f"{bl.n_resamples} resamples; pairs: {res.pairs_mode}"
          + (f" (reservoir of {res.reservoir_size} per set)" if res.pairs_mode == "reservoir" else "")
          + f"; d_rep: {res.d_rep_mode}" + (f" (sketch k = {res.d_rep_sketch})" if res.d_rep_mode == "sketch" else "")
          + f"; streaming state {res.state_bytes / 2 ** 20:.1f} MiB")
    if "residual" in res.taps:
        rows = [(r.layer, r.coupling, f"[{r.coupling_ci.low:.3f}, {r.coupling_ci.high:.3f}]", r.pairwise_mean,
                 r.competing_fraction, "yes" if r.competes else "no", r.d_rep)
                + ((r.competing_fraction_se,) if res.pairs_mode == "reservoir" else ())
                + ((r.d_rep_se,) if res.d_rep_mode == "sketch" else ())
                for r in res.layers]
        print_table(rows, ["layer", "coupling", f"coupling {level} CI", "pairwise_mean", "frac<-0.5", "competes",
                           "d_rep"] + (["frac_se"] if res.pairs_mode == "reservoir" else [])
                    + (["d_rep_se"] if res.d_rep_mode == "sketch" else []),
                    title="Per-layer coupling (residual stream after each block)")
        print(f"competing layers: {int(res.layer_competes.sum())} of {res.n_layers}")
    if "heads" in res.taps:
        s = res.head_summary
        print_table([(s.n_heads_total, s.cooperative_share, s.competing_count, s.near_zero_share,
                      s.net, s.median, s.early, s.mid, s.late)],
                    ["heads", "coop_share", "competing", "near_zero", "net", "median", "early", "mid", "late"],
                    title=f"Per-head coupling ({res.n_layers} layers x {res.n_heads} heads, attention output "
                          f"before the output projection)")
    b = res.bottleneck
    if b.measured:
        ks = [r.k for r in b.pca]
        show = [k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k in ks] + ([ks[-1]] if ks and ks[-1] > 100 else [])
        print_table([("final hidden", b.hidden), ("logits", b.logits)]
                    + [(f"top-{k} PCA", b.pca[k - 1].coupling) for k in show],
                    ["representation", "coupling"], title="Projection bottleneck")
        print(f"caveat: {b.caveat}")
        if b.note:
            print(f"note: {b.note}")
    if status:
        print(f"{status}: {args.out} {res.group}")
    return 0
