"""`cape bench`: the roofline table of the coupling and steering kernels (cape_kernels.bench)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from cape_hpc.options import Options, option


def _split(value):
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple(p.strip() for v in items for p in str(v).split(",") if p.strip())


@dataclass(frozen=True)
class BenchOptions(Options):
    """What ``cape_kernels.bench.run_bench`` times (shapes, ops and backends are checked against the
    bench's own tables when it runs: cape_kernels.bench is not imported to build the parser)."""

    device: str = option("auto", help="cpu, cuda, cuda:N or auto (cuda when present)")
    shapes: tuple[str, ...] | None = option(None, help="shapes: layers, heads, huge (none: all)", metavar="SHAPE")
    ops: tuple[str, ...] | None = option(None, help="ops: pooled_tap, set_mean_cosine, pairwise, steer (none: all)",
                                         metavar="OP")
    backends: tuple[str, ...] | None = option(None, help="backends (none: every backend available for the "
                                                         "device; torch is timed first as the reference when "
                                                         "listed)", metavar="BACKEND")
    baselines: tuple[str, ...] | None = option(("eager", "compile"),
                                               help="baselines timed beside the kernels: eager (the torch a user "
                                                    "writes), compile (the same under torch.compile); 'none' for "
                                                    "neither", metavar="BASELINE")
    repeats: int = option(5, help="timed repeats per cell", minimum=1)
    stat: str = option("min", help="statistic of the repeats reported (min resists a busy machine)",
                       choices=("min", "median"))
    threads: int | None = option(None, help="CPU threads for torch and numba during the run (none: as set)",
                                 minimum=1, maximum=1024)
    csv: str | None = option(None, help="append one row per op, shape and backend/baseline to this CSV file "
                                        "(keyed by device, library versions and commit)", metavar="FILE")
    dtype: str = option("float32", help="tensor dtype", choices=("float32", "float16", "bfloat16"))
    graphs: bool = option(True, help="CUDA: time CUDA-graph replays (--no-graphs: eager calls)")
    quick: bool = option(False, help="layers and heads shapes only, at most 3 repeats (about a minute on 2 CPU "
                                     "cores)")

    def __post_init__(self) -> None:
        for name in ("shapes", "ops", "backends", "baselines"):
            object.__setattr__(self, name, _split(getattr(self, name)))
        if self.baselines is not None and tuple(self.baselines) in (("none",), ()):
            object.__setattr__(self, "baselines", ())
        super().__post_init__()


def register(sub) -> None:
    from cape_hpc.commands.common import add_output_args

    p = sub.add_parser(
        "bench", help="roofline table of the kernels: time, bytes, GB/s, %% of copy bandwidth, x torch, x best "
                      "baseline",
        description="Time every coupling/steering op on every available backend at the sweep shapes "
                    "(layers: B=32, P=Q=64, D=4096; heads: B=1024, P=Q=64, D=128) and a huge prompt "
                    "set (B=1, P=Q=8192, D=1024), beside two baselines (the unfused torch a user writes, "
                    "and the same under torch.compile); print time, bytes moved, GB/s, the fraction of "
                    "the copy bandwidth and (pairwise) of the matmul rate measured in the same run, the "
                    "ratios against the torch reference and the faster baseline, and which goals are met. "
                    "--csv appends the rows to a file for comparing machines.")
    BenchOptions.add_arguments(p)
    add_output_args(p, out=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from cape_hpc.commands.common import check_out_first, emit_json
    from cape_hpc.errors import OptionError
    from cape_kernels import bench

    opts = BenchOptions.from_args(args)
    check_out_first(args, option="csv", flag="--csv")
    shapes = list(opts.shapes or bench.SHAPES)
    ops = list(opts.ops or bench.OPS)
    repeats = opts.repeats
    if opts.quick:
        shapes = [s for s in shapes if s != "huge"] or ["layers"]
        repeats = min(repeats, 3)
    for s in shapes:
        if s not in bench.SHAPES:
            raise OptionError(f"option '--shapes': unknown shape {s!r} (choose from {', '.join(bench.SHAPES)})")
    for o in ops:
        if o not in bench.OPS:
            raise OptionError(f"option '--ops': unknown op {o!r} (choose from {', '.join(bench.OPS)})")
    device = opts.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"option '--device': {device}: no CUDA device is visible")
    backends = list(opts.backends) if opts.backends else None
    try:
        res = bench.run_bench(device, shapes=shapes, ops=ops, backends=backends, repeats=repeats,
                              dtype=getattr(torch, opts.dtype), graphs=opts.graphs,
                              baselines=bench.BASELINES if opts.baselines is None else opts.baselines,
                              stat=opts.stat, threads=opts.threads,
                              progress=None if args.json else (lambda m: print(f"  timing {m}", file=sys.stderr)))
    except RuntimeError as exc:  # cape_kernels.bench names itself; the CLI adds "cape bench: error:"
        raise OptionError(str(exc).removeprefix("cape bench: ")) from None
    if opts.csv:
        try:
            n = bench.write_csv(res, opts.csv)
        except (OSError, ValueError) as exc:
            raise OptionError(f"option '--csv': {exc}") from None
        print(f"cape bench: appended {n} rows to {opts.csv}", file=sys.stderr)
    if args.json:
        emit_json(res)
    else:
        print(bench.format_table(res))
    return 0
