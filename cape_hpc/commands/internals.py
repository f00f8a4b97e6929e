"""`cape internals`: per-layer and per-head couplings, projection bottleneck and d_rep of one model."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
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
def _group_hash(group) -> str:
    import h5py
    import numpy as np

    h = hashlib.sha256()

    def attrs(name, obj):
        for k in sorted(obj.attrs.keys()):
            v = obj.attrs[k]
            v = v.tolist() if isinstance(v, np.ndarray) else (None if isinstance(v, h5py.Empty) else v)
            h.update(f"{name}@{k}={json.dumps(v, default=str)}".encode())

    attrs(".", group)

    def visit(name, obj):
        attrs(name, obj)
        if isinstance(obj, h5py.Dataset):
            data = obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) is not None else obj[()]
            arr = np.asarray(data)
            h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes() if arr.dtype != object else json.dumps(arr.tolist()).encode())

    group.visititems(visit)
    return h.hexdigest()


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
    """Write ``tree`` at ``group`` of the results file ``path``, keeping every other group there.

    Read-existing + rewrite-atomically under a lock file: concurrent writers of other groups are
    serialised, a killed write leaves the old file.  The same group with different content is
    refused unless ``force``.  Returns 'written' or 'unchanged'.
    """
    import h5py

    from cape_hpc.errors import StoreError
    from cape_hpc.io.store import atomic_h5, write_tree

    path = Path(path)
    group = "/" + group.strip("/")
    with _file_lock(path):
        # the new group, built in memory, to compare with what is there
        with h5py.File(f"mem-{os.getpid()}-{id(tree)}.h5", "w", driver="core", backing_store=False) as mem:
            write_tree(mem.require_group(group.strip("/")), tree)
            new_hash = _group_hash(mem[group])
        old = None
        if path.exists():
            try:
                old = h5py.File(path, "r")
            except OSError as exc:
                raise StoreError(f"{path}: exists but is not a readable HDF5 file ({exc}); "
                                 f"remove it or choose another --out") from None
        try:
            if old is not None and group in old:
                if _group_hash(old[group]) == new_hash:
                    return "unchanged"
                if not force:
                    raise StoreError(f"{path}: {group} exists with different content; pass --force to "
                                     f"overwrite it (the file is kept)")
            with atomic_h5(path, force=True) as h5:
                if old is not None:
                    for k, v in old.attrs.items():
                        if k not in h5.attrs and k != "content_sha256":
                            h5.attrs[k] = v
                    _copy_except(old, h5, group)
                if group in h5:
                    del h5[group]
                write_tree(h5.require_group(group.strip("/")), tree)
        finally:
            if old is not None:
                old.close()
    return "written"


def _copy_except(src, dst, skip: str) -> None:
    """Copy every member of src into dst, except the group ``skip`` (and nothing inside it)."""
    import h5py

    for name, obj in src.items():
        full = obj.name
        if full == skip:
            continue
        if skip.startswith(full + "/") and isinstance(obj, h5py.Group):
            g = dst.require_group(full.strip("/"))
            for k, v in obj.attrs.items():
                g.attrs[k] = v
            _copy_except(obj, dst, skip)
        else:
            src.copy(obj, dst.require_group(obj.parent.name) if obj.parent.name != "/" else dst, name=name)


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
