"""Roofline benchmark of the coupling and steering ops (used by ``cape bench`` and ``benchmarks/``).

For each op, shape and implementation: the time (the minimum, or median, of the repeats), the bytes
the op must move (inputs read once, outputs written once; derived from the shapes, not measured),
the achieved GB/s, its fraction of this machine's copy bandwidth (a ``copy_`` of a large buffer,
counting bytes read + written, timed in the same interleaved rounds as the op), for the pairwise
statistics the GFLOP/s (2*B*P*Q*D) and their fraction of a float matrix product timed in the same
rounds, and two
speed ratios: against the torch reference backend (``x torch``) and against the faster of the two
baselines a user would otherwise pick (``x best``):

* ``eager``: the unfused torch a user writes, a few lines per op (``USER_CODE``: F.normalize,
  a matrix product, ``cosine_similarity`` of the means, ``addr_`` in place for steering);
* ``compile``: the same functions under ``torch.compile`` (inductor: C++/OpenMP on the CPU, Triton
  on CUDA).

Shapes: ``layers`` (B=32 layers, P=Q=64 prompts, D=4096), ``heads`` (B=1024 heads, P=Q=64,
D=128), ``huge`` (B=1, P=Q=8192, D=1024).  Steering runs on h = [B*P, D] (B*P rows, the
activations of one batch across layers) and pooled tap (masked mean) on hidden [P, 16, D].
On CUDA, each op is timed by replaying a CUDA graph of at least 10 calls (so Python dispatch does
not hide the kernels; falls back to back-to-back eager calls where capture fails).  Calls cycle
through enough copies of the inputs to overflow the last-level cache three times (the GPU's L2,
the CPU's L3), so the bandwidth is that of HBM / DRAM, not of a cache.  The implementations of
one (op, shape) share those inputs and are timed in interleaved rounds (each round times every one
of them once, in turn), so that a change in a shared machine's load falls on all of them alike:
their ratios hold even where the absolute times do not.

``write_csv`` appends one row per (op, shape, implementation), keyed by the device, the library
versions (torch, numba, triton, cupy, cape_kernels) and the commit, so that runs on different
machines can be compared; ``goals`` checks the targets of the roofline (docs in README.md).
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = {
    "layers": dict(B=32, P=64, Q=64, D=4096),
    "heads": dict(B=1024, P=64, Q=64, D=128),
    "huge": dict(B=1, P=8192, Q=8192, D=1024),
}
OPS = ("pooled_tap", "set_mean_cosine", "pairwise", "steer")
BASELINES = ("eager", "compile")
POOL_S = 16
THRESHOLD = -0.5
ALPHA = 1e-3
# targets (README.md, "Performance"): the automatic backend of the device against the faster
# baseline, memory-bound ops against the copy bandwidth, pairwise against the matmul rate
GOAL_VS_BASELINE = 1.0
GOAL_COPY = {"cpu": 0.5, "cuda": 0.7}
GOAL_MATMUL = 0.5


@dataclass
class BenchRow:
    op: str
    shape: str
    backend: str          # a cape_kernels backend, or a baseline name ("eager", "compile")
    dtype: str
    time_ms: float
    bytes: int
    gbps: float
    frac_copy: float
    gflops: float = float("nan")
    frac_matmul: float = float("nan")
    vs_torch: float = float("nan")
    vs_baseline: float = float("nan")  # time of the faster baseline / this time
    timing: str = "wall"
    kind: str = "kernel"  # "kernel" (a cape_kernels backend) or "baseline"
    copy_gbps: float = float("nan")      # the copy probe, timed in the same rounds as this row
    matmul_gflops: float = float("nan")  # the matmul probe (pairwise), in the same rounds


@dataclass
class BenchResult:
    device: str
    device_name: str
    dtype: str
    copy_gbps: float
    matmul_gflops: float
    repeats: int
    stat: str = "min"
    threads: int = 0
    versions: dict = field(default_factory=dict)
    commit: str = "unknown"
    rows: list = field(default_factory=list)


# ------------------------------------------------------------------ the baselines a user writes
def user_pooled_mean(h, m):
    """Masked mean over positions: hidden [N, S, D], mask [N, S] -> [N, D]."""
    w = m.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1)


def user_set_mean_cosine(R, T):
    """cos(mean_p R[b], mean_q T[b]) -> [B]."""
    return F.cosine_similarity(R.mean(1), T.mean(1), dim=-1)


def user_pairwise(R, T, threshold: float = THRESHOLD):
    """Mean pairwise cosine and the fraction of pairs below the threshold -> ([B], [B])."""
    C = F.normalize(R, dim=-1) @ F.normalize(T, dim=-1).transpose(1, 2)
    return C.mean((1, 2)), (C < threshold).float().mean((1, 2))


def user_steer_relative_(h, v, alpha: float = ALPHA):
    """h += alpha |h| v/|v| in place (rows of h [T, D]); returns cos(h_before, v) [T]."""
    u = v / v.norm()
    hn = h.norm(dim=-1)
    proj = (h @ u) / hn
    h.addr_(hn, u, alpha=alpha)
    return proj


USER_CODE = {"pooled_tap": user_pooled_mean, "set_mean_cosine": user_set_mean_cosine,
             "pairwise": user_pairwise, "steer": user_steer_relative_}


# ------------------------------------------------------------------ timing
def cache_bytes(device) -> int:
    """The last-level cache: the GPU's L2, or the CPU's L3 from sysfs (32 MiB when unreadable)."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip().upper()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        return int(text.rstrip("KMG")) * mult
    except (OSError, ValueError):
        return 32 << 20


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(fns, device, graphs: bool = True):
    """Warm the callables ``fns`` up (compile, autotune, allocator) and return ``(run, inner, how)``:
    ``run()`` makes ``inner`` calls, cycling through ``fns`` (each works on its own copy of the
    inputs, so that together they overflow the last-level cache); on CUDA a CUDA graph of them is
    replayed when it can be captured (``how``: "cuda-graph", "eager" or "wall")."""
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

    if device.type != "cuda":
        return fn, 1, "wall"
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
            return g.replay, inner, "cuda-graph"
        except Exception:
            torch.cuda.synchronize(device)

    def run():
        for _ in range(inner):
            fn()
    return run, inner, "eager"


def _once(run, inner: int, device) -> float:
    """Seconds per call of one timed ``run()`` (CUDA events on a GPU, the wall clock on a CPU)."""
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / 1e3 / inner
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) / inner


def _agg(stat: str):
    return min if stat == "min" else statistics.median


def _time(fns, device, repeats: int, graphs: bool = True, stat: str = "min") -> tuple[float, str]:
    """Seconds per call (min or median of the repeats) of the callables ``fns`` and how it was timed."""
    run, inner, how = _prepare(fns, device, graphs)
    return _agg(stat)([_once(run, inner, device) for _ in range(repeats)]), how


def _time_interleaved(plans: list, device, repeats: int, graphs, stat: str) -> list:
    """(seconds per call, how) of each list of callables in ``plans``, timed in interleaved rounds:
    each round times every plan once, in turn, so that a change in the machine's load (a shared
    node) falls on all of them alike and their ratios hold; min (or median) over the rounds.
    ``graphs``: one flag for all plans, or one per plan."""
    flags = graphs if isinstance(graphs, (list, tuple)) else [graphs] * len(plans)
    prepared = [_prepare(fns, device, g) for fns, g in zip(plans, flags)]
    times = [[] for _ in prepared]
    for _ in range(repeats):
        for i, (run, inner, _) in enumerate(prepared):
            times[i].append(_once(run, inner, device))
    return [(_agg(stat)(t), how) for t, (_, _, how) in zip(times, prepared)]


def copy_probe(device):
    """(call, bytes): a ``copy_`` of a large buffer (1 GiB / 256 MiB of float32), bytes read + written."""
    n = (1 << 28 if device.type == "cuda" else 1 << 26)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * n * 4


def matmul_probe(device, dtype):
    """(call, flops): a float matrix product of the benchmark's dtype."""
    M, K, N = (8192, 1024, 8192) if device.type == "cuda" else (2048, 1024, 2048)
    a = torch.randn(M, K, device=device).to(dtype)
    b = torch.randn(K, N, device=device).to(dtype)
    return (lambda: a @ b), 2 * M * K * N


def measure_copy_gbps(device, repeats: int = 5, stat: str = "min") -> float:
    call, nbytes = copy_probe(device)
    t, _ = _time(call, device, repeats, graphs=False, stat=stat)
    return nbytes / t / 1e9


def measure_matmul_gflops(device, dtype, repeats: int = 5, stat: str = "min") -> float:
    call, flops = matmul_probe(device, dtype)
    t, _ = _time(call, device, repeats, graphs=False, stat=stat)
    return flops / t / 1e9


# ------------------------------------------------------------------ inputs and calls
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
        return lambda: ck.pairwise_cosine_stats(args[0], args[1], threshold=THRESHOLD, backend=backend)
    if op == "steer":
        return lambda: ck.steer_inject_(args[0], args[1], ALPHA, scale="relative", backend=backend)
    raise ValueError(op)


_COMPILED: dict = {}


def _baseline_call(op, args, kind):
    fn = USER_CODE[op]
    if kind == "compile":
        if op not in _COMPILED:
            _COMPILED[op] = torch.compile(fn, dynamic=False)
        fn = _COMPILED[op]
    elif kind != "eager":
        raise ValueError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")
    return lambda: fn(*args)


# ------------------------------------------------------------------ provenance
def library_versions() -> dict:
    """Versions of torch, numba, triton, cupy and cape_kernels from the installed metadata ('' when
    absent; cupy is distributed as cupy-cudaXXx, whose name is kept).  Nothing is imported."""
    from importlib import metadata

    import cape_kernels

    out = {"torch": torch.__version__, "numba": "", "triton": "", "cupy": "",
           "cape_kernels": cape_kernels.__version__}
    for name in ("numba", "triton"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    for dist in metadata.distributions():
        dn = (dist.metadata["Name"] or "").lower()
        if dn == "cupy" or dn.startswith("cupy-cuda"):
            out["cupy"] = f"{dist.version} ({dn})"
            break
    return out


def source_commit() -> str:
    """The git commit of the checkout cape_kernels was imported from ('+dirty' when it has changes
    under kernels/), or 'unknown' (an installed wheel, no git)."""
    here = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------ the run
def run_bench(device: str = "cpu", shapes=None, ops=None, backends=None, repeats: int = 5,
              dtype: torch.dtype = torch.float32, graphs: bool = True, progress=None,
              baselines=BASELINES, stat: str = "min", threads: int | None = None) -> BenchResult:
    """Run the roofline benchmark; ``backends=None`` takes every backend available for the device
    (the Triton interpreter is never benchmarked); ``baselines``: which of ``BASELINES`` to time
    beside them (() for none).  Rows per (shape, op): the torch reference, the baselines, then the
    other backends.  ``threads``: CPU threads for torch and numba during the run (None: as set)."""
    if threads is None:
        return _run_bench(device, shapes, ops, backends, repeats, dtype, graphs, progress, baselines, stat)
    from cape_kernels.numba_jit import numba

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    before = (torch.get_num_threads(), numba.get_num_threads())
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return _run_bench(device, shapes, ops, backends, repeats, dtype, graphs, progress, baselines, stat)
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _run_bench(device, shapes, ops, backends, repeats, dtype, graphs, progress, baselines, stat) -> BenchResult:
    from cape_kernels.backends import available_backends

    if stat not in ("min", "median"):
        raise ValueError(f"stat must be 'min' or 'median', got {stat!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("cape bench: --device cuda but no CUDA device is visible")
    shapes = list(shapes or SHAPES)
    ops = list(ops or OPS)
    baselines = list(baselines or ())
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise RuntimeError(f"cape bench: unknown baseline(s) {', '.join(bad)} (choose from {', '.join(BASELINES)})")
    avail = [b for b in available_backends(dev.type) if not (b == "triton" and dev.type == "cpu")]
    backends = [b for b in (backends or avail)]
    missing = [b for b in backends if b not in available_backends(dev.type)]
    if missing:
        raise RuntimeError(f"cape bench: backend(s) {', '.join(missing)} unavailable on {dev.type}")
    if "torch" in backends:  # the torch backend first: every x torch ratio needs it
        backends = ["torch"] + [b for b in backends if b != "torch"]
    plan = [(b, "kernel") for b in backends[:1] if b == "torch"] + [(b, "baseline") for b in baselines] + \
        [(b, "kernel") for b in backends if b != "torch"]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    llc = cache_bytes(dev)
    probes = (copy_probe(dev), matmul_probe(dev, dtype))
    copy = probes[0][1] / _time(probes[0][0], dev, repeats, graphs=False, stat=stat)[0] / 1e9
    mm = probes[1][1] / _time(probes[1][0], dev, repeats, graphs=False, stat=stat)[0] / 1e9
    res = BenchResult(device=str(dev), device_name=name, dtype=str(dtype).replace("torch.", ""),
                      copy_gbps=copy, matmul_gflops=mm, repeats=repeats, stat=stat,
                      threads=torch.get_num_threads(), versions=library_versions(), commit=source_commit())
    for shape in shapes:
        for op in ops:
            res.rows += _time_cell(op, shape, plan, dev, dtype, res, llc, probes, repeats, graphs, progress, stat)
    return res


def _time_cell(op, shape, plan, dev, dtype, res, llc, probes, repeats, graphs, progress, stat) -> list:
    """The rows of one (op, shape): every implementation of ``plan`` on the same inputs (copies
    until they overflow the last-level cache three times), timed in interleaved rounds together
    with the copy (and, for pairwise, the matmul) probe, so that % copy and % matmul compare
    times taken under the same load."""
    args, nbytes, flops = _inputs(op, SHAPES[shape], dtype, dev)
    n = min(16, max(1, math.ceil(3 * llc / nbytes)))
    sets = [args] + [tuple(a.clone() for a in args) for _ in range(n - 1)]
    if progress:
        progress(f"{op} {shape} " + " ".join(be for be, _ in plan))
    plans = [[(_call(op, a, be) if kind == "kernel" else _baseline_call(op, a, be)) for a in sets]
             for be, kind in plan]
    refs = [[probes[0][0]]] + ([[probes[1][0]]] if flops else [])
    timed = _time_interleaved(plans + refs, dev, repeats, [graphs] * len(plans) + [False] * len(refs), stat)
    copy_gbps = probes[0][1] / timed[len(plans)][0] / 1e9
    mm_gflops = probes[1][1] / timed[-1][0] / 1e9 if flops else float("nan")
    timed = timed[:len(plans)]
    del args, sets, plans
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    ref_t = next((t for (be, kind), (t, _) in zip(plan, timed) if be == "torch" and kind == "kernel"), None)
    base = [t for (_, kind), (t, _) in zip(plan, timed) if kind == "baseline"]
    rows = []
    for (be, kind), (t, how) in zip(plan, timed):
        gbps = nbytes / t / 1e9
        row = BenchRow(op=op, shape=shape, backend=be, dtype=res.dtype, time_ms=t * 1e3,
                       bytes=int(nbytes), gbps=gbps, frac_copy=gbps / copy_gbps, timing=how, kind=kind,
                       copy_gbps=copy_gbps, matmul_gflops=mm_gflops)
        if flops:
            row.gflops = flops / t / 1e9
            row.frac_matmul = row.gflops / mm_gflops
        row.vs_torch = (ref_t / t) if ref_t else float("nan")
        row.vs_baseline = (min(base) / t) if base else float("nan")
        rows.append(row)
    return rows


@dataclass
class Goal:
    op: str
    shape: str
    backend: str
    vs_baseline: float
    frac: float        # of copy bandwidth (memory-bound ops) or of the matmul rate (pairwise)
    frac_of: str       # "copy" or "matmul"
    met: bool


def goals(res: BenchResult) -> list[Goal]:
    """The targets for the device's automatic backend (numba on CPU, triton on CUDA when timed):
    at least GOAL_VS_BASELINE x the faster baseline, and at least GOAL_COPY of the copy bandwidth
    (memory-bound ops) or GOAL_MATMUL of the matmul rate (pairwise)."""
    from cape_kernels.backends import _PREFERENCE

    dtype = res.device.split(":")[0]
    timed = {r.backend for r in res.rows if r.kind == "kernel"}
    auto = next((b for b in _PREFERENCE.get(dtype, ("torch",)) if b in timed), None)
    out = []
    for r in res.rows:
        if r.kind != "kernel" or r.backend != auto:
            continue
        if r.op == "pairwise":
            frac, of, need = r.frac_matmul, "matmul", GOAL_MATMUL
        else:
            frac, of, need = r.frac_copy, "copy", GOAL_COPY.get(dtype, 0.5)
        ok = frac >= need and (math.isnan(r.vs_baseline) or r.vs_baseline >= GOAL_VS_BASELINE)
        out.append(Goal(r.op, r.shape, r.backend, r.vs_baseline, frac, of, bool(ok)))
    return out


def format_table(res: BenchResult) -> str:
    head = (f"cape_kernels roofline on {res.device_name} ({res.device}), dtype {res.dtype}, "
            f"{res.stat} of {res.repeats}; torch {res.versions.get('torch', '?')}, "
            f"numba {res.versions.get('numba') or '-'}, triton {res.versions.get('triton') or '-'}, "
            f"commit {res.commit[:12]}\n"
            f"copy bandwidth {res.copy_gbps:.1f} GB/s (read + write), matmul {res.matmul_gflops:.1f} GFLOP/s "
            f"({res.dtype}) at the start; % copy and % matmul use the probes timed in each op's rounds\n")
    cols = ["op", "shape", "backend", "time ms", "MB moved", "GB/s", "% copy", "GFLOP/s", "% matmul",
            "x torch", "x best", "timing"]
    rows = []
    for r in res.rows:
        name = r.backend if r.kind == "kernel" else f"[{r.backend}]"
        rows.append([r.op, r.shape, name, f"{r.time_ms:.4g}", f"{r.bytes / 1e6:.1f}", f"{r.gbps:.1f}",
                     f"{100 * r.frac_copy:.0f}%",
                     "-" if math.isnan(r.gflops) else f"{r.gflops:.1f}",
                     "-" if math.isnan(r.frac_matmul) else f"{100 * r.frac_matmul:.0f}%",
                     "-" if math.isnan(r.vs_torch) else f"{r.vs_torch:.2f}x",
                     "-" if math.isnan(r.vs_baseline) else f"{r.vs_baseline:.2f}x", r.timing])
    w = [max(len(c), *(len(x[i]) for x in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(cols)), "  ".join("-" * x for x in w)]
    lines += ["  ".join(x[i].ljust(w[i]) for i in range(len(cols))) for x in rows]
    text = head + "\n".join(lines)
    gl = goals(res)
    if gl:
        if any(r.kind == "baseline" for r in res.rows):
            text += ("\n[eager] = the torch a user writes, [compile] = the same under torch.compile; "
                     "x best = time of the faster of the two / this time")
        text += ("\ngoals (" + gl[0].backend +
                 f"): >= {GOAL_VS_BASELINE:.1f}x best, >= {100 * GOAL_COPY.get(res.device.split(':')[0], 0.5):.0f}% "
                 f"copy, pairwise >= {100 * GOAL_MATMUL:.0f}% matmul\n")
        text += "\n".join(f"  {g.op:16s} {g.shape:7s} "
                          f"{'-' if math.isnan(g.vs_baseline) else f'{g.vs_baseline:.2f}x'} best, "
                          f"{100 * g.frac:.0f}% {g.frac_of}: {'met' if g.met else 'SHORT'}" for g in gl)
    return text


CSV_FIELDS = ("timestamp", "commit", "device", "device_name", "threads", "torch", "numba", "triton",
              "cupy", "cape_kernels", "dtype", "stat", "repeats", "copy_gbps", "matmul_gflops",
              "op", "shape", "backend", "kind", "time_ms", "bytes", "gbps", "frac_copy", "gflops",
              "frac_matmul", "vs_torch", "vs_baseline", "timing")


def csv_rows(res: BenchResult) -> list[dict]:
    """One dict per row of the table, with the run's keys (device, versions, commit) repeated."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = dict(timestamp=stamp, commit=res.commit, device=res.device, device_name=res.device_name,
               threads=res.threads, dtype=res.dtype, stat=res.stat, repeats=res.repeats,
               copy_gbps=f"{res.copy_gbps:.6g}", matmul_gflops=f"{res.matmul_gflops:.6g}",
               **{k: res.versions.get(k, "") for k in ("torch", "numba", "triton", "cupy", "cape_kernels")})
    out = []
    for r in res.rows:
        d = asdict(r)
        row = dict(run)
        for k in ("op", "shape", "backend", "kind", "bytes", "timing"):
            row[k] = d[k]
        for k in ("time_ms", "gbps", "frac_copy", "gflops", "frac_matmul", "vs_torch", "vs_baseline"):
            row[k] = "" if math.isnan(d[k]) else f"{d[k]:.6g}"
        out.append(row)
    return out


def write_csv(res: BenchResult, path) -> int:
    """Append the rows of ``res`` to the CSV file ``path`` (the header when the file is new or
    empty); returns the number of rows written.  A file whose header differs is refused."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as f:
            head = next(csv.reader(f), None)
        if head != list(CSV_FIELDS):
            raise ValueError(f"{path}: its header is not the cape bench CSV header ({', '.join(CSV_FIELDS)})")
    rows = csv_rows(res)
    if path.parent and not path.parent.exists():
        os.makedirs(path.parent, exist_ok=True)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
    return len(rows)
