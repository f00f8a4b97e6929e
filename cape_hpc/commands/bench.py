"""`cape bench`: the roofline table of the coupling and steering kernels (cape_kernels.bench)."""
from __future__ import annotations

import sys


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(sub) -> None:
    from cape_hpc.commands.common import add_output_args

    p = sub.add_parser(
        "bench", help="roofline table of the kernels: time, bytes, GB/s, %% of copy bandwidth, x torch",
        description="Time every coupling/steering op on every available backend at the sweep shapes "
                    "(layers: B=32, P=Q=64, D=4096; heads: B=1024, P=Q=64, D=128) and a huge prompt "
                    "set (B=1, P=Q=8192, D=1024); print time, bytes moved, GB/s, the fraction of the "
                    "copy bandwidth and (pairwise) of the matmul rate measured in the same run, and "
                    "the ratio against the torch reference.")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when present; default)")
    p.add_argument("--shapes", default="layers,heads,huge", help="comma list of layers, heads, huge")
    p.add_argument("--ops", default="pooled_tap,set_mean_cosine,pairwise,steer", help="comma list of ops")
    p.add_argument("--backends", default=None,
                   help="comma list (default: every backend available for the device; torch is always "
                        "timed first as the reference when listed)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per cell, median reported (default 5)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--no-graphs", action="store_true", help="CUDA: time eager calls, not CUDA-graph replays")
    p.add_argument("--quick", action="store_true",
                   help="layers and heads shapes only, 3 repeats (about a minute on 2 CPU cores)")
    add_output_args(p, out=False)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from cape_hpc.commands.common import emit_json
    from cape_hpc.errors import OptionError
    from cape_kernels import bench

    shapes = _csv(args.shapes)
    ops = _csv(args.ops)
    repeats = args.repeats
    if args.quick:
        shapes = [s for s in shapes if s != "huge"] or ["layers"]
        repeats = min(repeats, 3)
    for s in shapes:
        if s not in bench.SHAPES:
            raise OptionError(f"--shapes: unknown shape {s!r} (choose from {', '.join(bench.SHAPES)})")
    for o in ops:
        if o not in bench.OPS:
            raise OptionError(f"--ops: unknown op {o!r} (choose from {', '.join(bench.OPS)})")
    if repeats < 1:
        raise OptionError(f"--repeats must be >= 1, got {repeats}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"--device {device}: no CUDA device is visible")
    backends = _csv(args.backends) if args.backends else None
    try:
        res = bench.run_bench(device, shapes=shapes, ops=ops, backends=backends, repeats=repeats,
                              dtype=getattr(torch, args.dtype), graphs=not args.no_graphs,
                              progress=None if args.json else (lambda m: print(f"  timing {m}", file=sys.stderr)))
    except RuntimeError as exc:
        raise OptionError(str(exc)) from None
    if args.json:
        emit_json(res)
    else:
        print(bench.format_table(res))
    return 0
