"""Roofline benchmark of the coupling and steering ops (used by ``cape bench`` and ``benchmarks/``).

For each op, shape and backend: the time (median of the repeats), the bytes the op must move
(inputs read once, outputs written once; derived from the shapes, not measured), the achieved
GB/s, its fraction of this machine's copy bandwidth measured in the same run (a ``copy_`` of a
large buffer, counting bytes read + written), for the pairwise statistics the GFLOP/s (2*B*P*Q*D)
and their fraction of a float matrix product measured in the same run, and the speed ratio against
the torch reference backend.

Shapes: ``layers`` (B=32 layers, P=Q=64 prompts, D=4096), ``heads`` (B=1024 heads, P=Q=64,
D=128), ``huge`` (B=1, P=Q=8192, D=1024).  Steering runs on h = [B*P, D] (B*P rows, the
activations of one batch across layers) and pooled tap (masked mean) on hidden [P, 16, D].
On CUDA, each op is timed by replaying a CUDA graph of at least 10 calls (so Python dispatch does
not hide the kernels; falls back to back-to-back eager calls where capture fails), cycling through
enough copies of the inputs to overflow the L2 cache three times (HBM, not L2, bandwidth).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch

SHAPES = {
    "layers": dict(B=32, P=64, Q=64, D=4096),
    "heads": dict(B=1024, P=64, Q=64, D=128),
    "huge": dict(B=1, P=8192, Q=8192, D=1024),
}
OPS = ("pooled_tap", "set_mean_cosine", "pairwise", "steer")
POOL_S = 16


@dataclass
class BenchRow:
    op: str
    shape: str
    backend: str
    dtype: str
    time_ms: float
    bytes: int
    gbps: float
    frac_copy: float
    gflops: float = float("nan")
    frac_matmul: float = float("nan")
    vs_torch: float = float("nan")
    timing: str = "wall"


@dataclass
class BenchResult:
    device: str
    device_name: str
    dtype: str
    copy_gbps: float
    matmul_gflops: float
    repeats: int
    rows: list = field(default_factory=list)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fns, device, repeats: int, graphs: bool = True) -> tuple[float, str]:
    """Median seconds per call of the callables ``fns`` (called in turn: each works on its own
    copy of the inputs, so that together they overflow the GPU's L2) and how it was timed."""
    if callable(fns):
        fns = [fns]
    for f in fns:
        f()
    fns[0]()  # warm-up: compile, autotune, allocator
    _sync(device)
    k = len(fns)

    def fn(i=[0]):  # noqa: B006 - a call counter
        fns[i[0] % k]()
        i[0] += 1

    if device.type == "cuda":
        inner = k * max(1, math.ceil(10 / k))
        if graphs:
            try:
                s = torch.cuda.Stream(device)
                s.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(s):
                    fn()
                torch.cuda.current_stream(device).wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(inner):
                        fn()
                g.replay()
                torch.cuda.synchronize(device)
                run, how = g.replay, "cuda-graph"
            except Exception:
                torch.cuda.synchronize(device)
                run, how = None, "eager"
        else:
            run, how = None, "eager"
        if run is None:
            def run():
                for _ in range(inner):
                    fn()
        times = []
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            run()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3 / inner)
        return statistics.median(times), how
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), "wall"


def measure_copy_gbps(device, repeats: int = 5) -> float:
    n = (1 << 28 if device.type == "cuda" else 1 << 26)  # 1 GiB / 256 MiB of float32
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t, _ = _time(lambda: dst.copy_(src), device, repeats, graphs=False)
    return 2 * n * 4 / t / 1e9


def measure_matmul_gflops(device, dtype, repeats: int = 5) -> float:
    M, K, N = (8192, 1024, 8192) if device.type == "cuda" else (2048, 1024, 2048)
    a = torch.randn(M, K, device=device).to(dtype)
    b = torch.randn(K, N, device=device).to(dtype)
    t, _ = _time(lambda: a @ b, device, repeats, graphs=False)
    return 2 * M * K * N / t / 1e9


def _inputs(op, shp, dtype, device):
    B, P, Q, D = shp["B"], shp["P"], shp["Q"], shp["D"]
    g = torch.Generator(device="cpu").manual_seed(0)
    el = torch.empty(0, dtype=dtype).element_size()
    if op == "pooled_tap":
        h = torch.randn(P, POOL_S, D, generator=g).to(device=device, dtype=dtype)
        m = torch.ones(P, POOL_S, dtype=torch.bool, device=device)
        m[:, POOL_S - 3:] = False
        return (h, m), P * POOL_S * D * el + P * POOL_S + P * D * 4, None
    if op in ("set_mean_cosine", "pairwise"):
        R = torch.randn(B, P, D, generator=g).to(device=device, dtype=dtype)
        T = torch.randn(B, Q, D, generator=g).to(device=device, dtype=dtype)
        flops = 2 * B * P * Q * D if op == "pairwise" else None
        return (R, T), B * (P + Q) * D * el + B * 4 * (2 if op == "pairwise" else 1), flops
    if op == "steer":
        h = torch.randn(B * P, D, generator=g).to(device=device, dtype=dtype)
        v = torch.randn(D, generator=g).to(device=device, dtype=dtype)
        return (h, v), 2 * B * P * D * el + D * el + B * P * 4, None
    raise ValueError(op)


def _call(op, args, backend):
    import cape_kernels as ck

    if op == "pooled_tap":
        return lambda: ck.pooled_tap(args[0], args[1], "mean", backend=backend)
    if op == "set_mean_cosine":
        return lambda: ck.set_mean_cosine(args[0], args[1], backend=backend)
    if op == "pairwise":
        return lambda: ck.pairwise_cosine_stats(args[0], args[1], threshold=-0.5, backend=backend)
    if op == "steer":
        return lambda: ck.steer_inject_(args[0], args[1], 1e-3, scale="relative", backend=backend)
    raise ValueError(op)


def run_bench(device: str = "cpu", shapes=None, ops=None, backends=None, repeats: int = 5,
              dtype: torch.dtype = torch.float32, graphs: bool = True, progress=None) -> BenchResult:
    """Run the roofline benchmark; ``backends=None`` takes every backend available for the device
    (the Triton interpreter is never benchmarked)."""
    from cape_kernels.backends import available_backends

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("cape bench: --device cuda but no CUDA device is visible")
    shapes = list(shapes or SHAPES)
    ops = list(ops or OPS)
    avail = [b for b in available_backends(dev.type) if not (b == "triton" and dev.type == "cpu")]
    backends = [b for b in (backends or avail)]
    missing = [b for b in backends if b not in available_backends(dev.type)]
    if missing:
        raise RuntimeError(f"cape bench: backend(s) {', '.join(missing)} unavailable on {dev.type}")
    if "torch" in backends:  # the reference first: every ratio needs it
        backends = ["torch"] + [b for b in backends if b != "torch"]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    copy = measure_copy_gbps(dev, repeats)
    mm = measure_matmul_gflops(dev, dtype, repeats)
    res = BenchResult(device=str(dev), device_name=name, dtype=str(dtype).replace("torch.", ""),
                      copy_gbps=copy, matmul_gflops=mm, repeats=repeats)
    for shape in shapes:
        shp = SHAPES[shape]
        for op in ops:
            ref_t = None
            for be in backends:
                args, nbytes, flops = _inputs(op, shp, dtype, dev)
                sets = [args]
                if dev.type == "cuda":  # copies of the inputs until they overflow L2 three times
                    l2 = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 50 << 20)
                    n = min(16, max(1, math.ceil(3 * l2 / nbytes)))
                    sets += [tuple(a.clone() for a in args) for _ in range(n - 1)]
                if progress:
                    progress(f"{op} {shape} {be}")
                t, how = _time([_call(op, a, be) for a in sets], dev, repeats, graphs)
                gbps = nbytes / t / 1e9
                row = BenchRow(op=op, shape=shape, backend=be, dtype=res.dtype, time_ms=t * 1e3,
                               bytes=int(nbytes), gbps=gbps, frac_copy=gbps / copy, timing=how)
                if flops:
                    row.gflops = flops / t / 1e9
                    row.frac_matmul = row.gflops / mm
                if be == "torch":
                    ref_t = t
                row.vs_torch = (ref_t / t) if ref_t else float("nan")
                res.rows.append(row)
                del args, sets
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    return res


def format_table(res: BenchResult) -> str:
    head = (f"cape_kernels roofline on {res.device_name} ({res.device}), dtype {res.dtype}, "
            f"median of {res.repeats}\n"
            f"measured copy bandwidth {res.copy_gbps:.1f} GB/s (read + write); "
            f"matmul {res.matmul_gflops:.1f} GFLOP/s ({res.dtype})\n")
    cols = ["op", "shape", "backend", "time ms", "MB moved", "GB/s", "% copy", "GFLOP/s", "% matmul",
            "x torch", "timing"]
    rows = []
    for r in res.rows:
        rows.append([r.op, r.shape, r.backend, f"{r.time_ms:.4g}", f"{r.bytes / 1e6:.1f}", f"{r.gbps:.1f}",
                     f"{100 * r.frac_copy:.0f}%",
                     "-" if math.isnan(r.gflops) else f"{r.gflops:.1f}",
                     "-" if math.isnan(r.frac_matmul) else f"{100 * r.frac_matmul:.0f}%",
                     "-" if math.isnan(r.vs_torch) else f"{r.vs_torch:.2f}x", r.timing])
    w = [max(len(c), *(len(x[i]) for x in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(cols)), "  ".join("-" * x for x in w)]
    lines += ["  ".join(x[i].ljust(w[i]) for i in range(len(cols))) for x in rows]
    return head + "\n".join(lines)
