"""`cape internals`: per-layer and per-head couplings, projection bottleneck and d_rep of one model."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import warnings
from pathlib import Path
from typing import Any

from cape_hpc.commands.common import add_output_args, emit_json, print_table


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="embedded alias (smollm2-135m, gemma3-270m), tiny-<arch>, a GGUF file, a local "
                        "folder or a HuggingFace id (default: smollm2-135m)")
    p.add_argument("--revision", default=None, help="HuggingFace revision (commit, tag or branch)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "float64"))
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a HuggingFace model's own Python code to run (off by default)")
    p.add_argument("--backend", default=None, choices=("torch", "numba", "triton", "cupy"),
                   help="cape_kernels backend (default: automatic)")


def register(sub) -> None:
    p = sub.add_parser("internals", help="per-layer / per-head couplings, projection bottleneck, d_rep of a model",
                       description="Stream the contrastive prompts through a model, pool each tap on the fly "
                                   "and print the per-layer table and the per-head summary (SPEC section 3).")
    add_model_args(p)
    p.add_argument("--prompts", default=None, metavar="JSONL",
                   help="prompt set (default: data/prompts/contrastive.jsonl)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pooling", default="last", choices=("last", "mean"))
    p.add_argument("--taps", default="residual,heads,final,logits",
                   help="comma-separated taps: residual, heads, final, logits")
    p.add_argument("--max-prompts", type=int, default=None, metavar="N",
                   help="use at most N prompts (the first N/2 of each set)")
    add_output_args(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- merged, atomic writes
@contextlib.contextmanager
def _file_lock(path: Path):
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def merge_write(path: str | os.PathLike, group: str, tree: dict[str, Any], *, force: bool = False) -> str:
    """Write ``tree`` at ``group`` of the results file ``path``, keeping every other group there
    (``cape_hpc.io.store.update_results``: atomic rewrite; the same group with different content is
    refused unless ``force``), serialised with other cape writers of this file by a lock file.
    Returns 'written' or 'unchanged'."""
    from cape_hpc.io.store import update_results

    path = Path(path)
    with _file_lock(path):
        outcome = update_results(path, {group: tree}, force=force)
    return "unchanged" if outcome.get(group) == "unchanged" else "written"


# --------------------------------------------------------------------------- command
def run(args) -> int:
    from cape_hpc.errors import OptionError
    from cape_hpc.internals import extract_internals, load_prompts
    from cape_hpc.models import load_model

    if args.max_prompts is not None and args.max_prompts < 2:
        raise OptionError(f"--max-prompts must be >= 2, got {args.max_prompts}")
    prompts = load_prompts(args.prompts).subset(args.max_prompts)
    loaded = load_model(args.model, revision=args.revision, dtype=args.dtype,
                        trust_remote_code=args.trust_remote_code)
    taps = [t.strip() for t in args.taps.split(",") if t.strip()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = extract_internals(loaded, prompts, batch_size=args.batch_size, pooling=args.pooling,
                                taps=taps, backend=args.backend)
    status = None
    if args.out:
        status = merge_write(args.out, res.group, res.to_store_tree(), force=args.force)
    if args.json:
        emit_json(res)
        return 0
    for w in caught:
        print(f"warning: {w.message}")
    print(f"model {res.model}: {res.source}, revision {res.revision}, dtype {res.dtype}, backend {res.backend}")
    print(f"prompts: {prompts.path} (sha256 {res.prompt_set_sha256[:16]}...), R = {res.set_r!r} "
          f"({res.n_r}), T = {res.set_t!r} ({res.n_t}), pooling {res.pooling}")
    if "residual" in res.taps:
        rows = [(l, res.layer_coupling[l], res.layer_pairwise_mean[l], res.layer_competing_fraction[l],
                 "yes" if res.layer_competes[l] else "no", res.d_rep[l]) for l in range(res.n_layers)]
        print_table(rows, ["layer", "coupling", "pairwise_mean", "frac<-0.5", "competes", "d_rep"],
                    title="Per-layer coupling (residual stream after each block)")
        print(f"competing layers: {int(res.layer_competes.sum())} of {res.n_layers}")
    if res.head_summary:
        s = res.head_summary
        print_table([(s["n_heads_total"], s["cooperative_share"], s["competing_count"], s["near_zero_share"],
                      s["net"], s["median"], s["early"], s["mid"], s["late"])],
                    ["heads", "coop_share", "competing", "near_zero", "net", "median", "early", "mid", "late"],
                    title=f"Per-head coupling ({res.n_layers} layers x {res.n_heads} heads, attention output "
                          f"before the output projection)")
    b = res.bottleneck
    if b:
        ks = list(b["pca_k"])
        show = [k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k in ks] + ([ks[-1]] if ks and ks[-1] > 100 else [])
        print_table([("final hidden", b["hidden"]), ("logits", b.get("logits", float("nan")))]
                    + [(f"top-{k} PCA", b["pca_coupling"][k - 1]) for k in show],
                    ["representation", "coupling"], title="Projection bottleneck")
        print(f"caveat: {b['caveat']}")
    if status:
        print(f"{status}: {args.out} {res.group}")
    return 0
