"""pytest-benchmark suite of the streaming ops (``cape_kernels.pool_accumulate_``,
``cape_kernels.count_pairs_below``) against what a user would write, measured in the same run.

Run:  .venv/bin/python -m pytest benchmarks/bench_streaming.py --benchmark-only -s
      (CAPE_BENCH_DEVICE=cpu|cuda; CAPE_BENCH_FULL=1 for the full sizes below; the summary table
      prints at the end, see benchmarks/conftest.py)

Engines, all timed the same way (best of the rounds, each call followed by a device sync: the
best, not the median, because shared CI machines add noise that only ever slows a round down):

* each ``cape_kernels`` backend available for the device (not the Triton interpreter);
* ``baseline``: the plain torch a user writes.  Pooling: ``pooled = hidden[arange, last]`` (or
  the masked mean), ``sums.index_add_(0, slot, pooled)``, ``unit_sums.index_add_(0, slot,
  F.normalize(pooled))``.  Pairs: ``C = An @ Bn.T`` (rows normalised), ``below = C < t``,
  ``torch.bincount(key, weights=below, minlength=G*G)`` on the group-pair key (forms [n, m]);
* ``compiled``: ``torch.compile`` of that baseline (first call outside the timing).

Reported: time; for pool_accumulate_ the achieved bandwidth on the bytes of ``hidden`` it must
read (B*D*itemsize for "last", B*S*D*itemsize for "mean") and its fraction of the copy bandwidth
measured in the same run (``cape_kernels.bench.measure_copy_gbps``: read + write of a large
buffer); for count_pairs_below the GFLOP/s (2*n*m*D) and its fraction of a plain ``A @ B.T`` of
the same shapes and dtype timed in the same run; and every engine's speed-up over the baseline.
"""
from __future__ import annotations

import functools
import os
import time

import pytest
import torch
import torch.nn.functional as F

import cape_kernels as ck
from cape_kernels import bench
from cape_kernels.backends import available_backends

DEVICE = os.environ.get("CAPE_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
DEV = torch.device(DEVICE)
FULL = os.environ.get("CAPE_BENCH_FULL") == "1"
SUITE = "streaming kernels (pool_accumulate_, count_pairs_below) vs plain torch, same run"
BACKENDS = [b for b in available_backends(DEV.type) if not (b == "triton" and DEV.type == "cpu")]
ENGINES = BACKENDS + ["baseline", "compiled"]
ROUNDS = 7

if DEV.type == "cuda":
    POOL = {"sweep": dict(B=64, S=512, D=4096, G=32, dtype=torch.bfloat16)}
    PAIRS = {"batch-vs-resident": dict(n=64, m=65536 if FULL else 16384, D=4096, G=20, dtype=torch.float16),
             "square": dict(n=8192, m=8192, D=1024, G=20, dtype=torch.float16)}
else:
    POOL = {"smollm2": dict(B=32, S=128 if FULL else 32, D=576, G=20, dtype=torch.float32)}
    PAIRS = {"batch-vs-resident": dict(n=32, m=16384 if FULL else 2048, D=576, G=20, dtype=torch.float32),
             "square": dict(n=2048 if FULL else 512, m=2048 if FULL else 512, D=576, G=20, dtype=torch.float32)}


def _sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize(DEV)


def _best_time(fn, rounds=ROUNDS):
    fn()
    _sync()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t0)
    return min(ts)


@functools.lru_cache(maxsize=None)
def _copy_gbps():
    return bench.measure_copy_gbps(DEV, ROUNDS)


# ------------------------------------------------------------------ pool_accumulate_
def _pool_inputs(shp):
    g = torch.Generator().manual_seed(0)
    B, S, D, G = shp["B"], shp["S"], shp["D"], shp["G"]
    h = torch.randn(B, S, D, generator=g).to(DEV, shp["dtype"])
    m = torch.ones(B, S, dtype=torch.bool)
    for b in range(B):  # left padding
        m[b, : int(torch.randint(0, S // 2, (1,), generator=g))] = False
    slot = torch.randint(0, G, (B,), generator=g).to(DEV)
    sums = torch.zeros(G, D, device=DEV)
    units = torch.zeros(G, D, device=DEV)
    return h, m.to(DEV), slot, sums, units


def baseline_pool(h, m, mode, slot, sums, units):
    """What a user writes: pool, then index_add_ the rows and their unit vectors."""
    if mode == "last":
        S = h.shape[1]
        pos = torch.arange(S, device=h.device).expand_as(m)
        last = torch.where(m, pos, -1).amax(dim=1).clamp_min(0)
        pooled = h[torch.arange(h.shape[0], device=h.device), last].float()
    else:
        w = m.to(torch.float32)
        pooled = (h.float() * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1)
    sums.index_add_(0, slot, pooled)
    units.index_add_(0, slot, F.normalize(pooled, dim=1))
    return pooled


_compiled_pool = torch.compile(baseline_pool, dynamic=False)


def _pool_fn(engine, args, mode):
    h, m, slot, sums, units = args
    if engine == "baseline":
        return lambda: baseline_pool(h, m, mode, slot, sums, units)
    if engine == "compiled":
        return lambda: _compiled_pool(h, m, mode, slot, sums, units)
    return lambda: ck.pool_accumulate_(h, m, mode, slot, sums, units, backend=engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["last", "mean"])
@pytest.mark.parametrize("shape", list(POOL))
def test_bench_pool_accumulate(benchmark, request, shape, mode, engine):
    shp = POOL[shape]
    args = _pool_inputs(shp)
    fn = _pool_fn(engine, args, mode)
    run = lambda: (fn(), _sync())  # noqa: E731
    run()  # compile / first launch outside the timing
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.min
    el = torch.empty(0, dtype=shp["dtype"]).element_size()
    nbytes = shp["B"] * shp["D"] * el * (1 if mode == "last" else shp["S"])
    gbps = nbytes / t / 1e9
    copy = _copy_gbps()
    t0 = _best_time(_pool_fn("baseline", _pool_inputs(shp), mode))  # right after: same machine state
    benchmark.extra_info.update(bytes=nbytes, gbps=gbps, frac_copy=gbps / copy, vs_baseline=t0 / t,
                                device=DEVICE, copy_gbps=copy)
    lines = getattr(request.config, "cape_bench_lines", None)
    if lines is not None:
        lines.append((SUITE, f"pool_accumulate_ {shape:8s} {mode:4s} {engine:8s} {t * 1e3:9.3f} ms  "
                             f"{gbps:8.2f} GB/s of hidden = {100 * gbps / copy:5.1f}% of copy ({copy:.1f} GB/s)  "
                             f"x{t0 / t:5.2f} vs baseline"))


# ------------------------------------------------------------------ count_pairs_below
def _pair_inputs(shp):
    g = torch.Generator().manual_seed(1)
    n, m, D, G = shp["n"], shp["m"], shp["D"], shp["G"]
    A = torch.randn(n, D, generator=g).to(DEV, shp["dtype"])
    B = (torch.randn(m, D, generator=g) + 0.01).to(DEV, shp["dtype"])
    ga = torch.randint(0, G, (n,), generator=g).to(DEV)
    gb = torch.randint(0, G, (m,), generator=g).to(DEV)
    return A, B, ga, gb, G


def baseline_pairs(A, B, thr, ga, gb, G):
    """What a user writes: normalise, one matrix product, compare, bincount by group pair."""
    An = F.normalize(A.float(), dim=1)
    Bn = F.normalize(B.float(), dim=1)
    below = (An @ Bn.T).clamp(-1, 1) < thr
    key = ga[:, None] * G + gb[None, :]
    return torch.bincount(key.reshape(-1), weights=below.reshape(-1).float(), minlength=G * G).view(G, G)


_compiled_pairs = torch.compile(baseline_pairs, dynamic=False)


def _pair_fn(engine, args):
    A, B, ga, gb, G = args
    if engine == "baseline":
        return lambda: baseline_pairs(A, B, 0.0, ga, gb, G)
    if engine == "compiled":
        return lambda: _compiled_pairs(A, B, 0.0, ga, gb, G)
    return lambda: ck.count_pairs_below(A, B, 0.0, a_groups=ga, b_groups=gb, n_groups=G, backend=engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", list(PAIRS))
def test_bench_count_pairs_below(benchmark, request, shape, engine):
    shp = PAIRS[shape]
    args = _pair_inputs(shp)
    fn = _pair_fn(engine, args)
    want = baseline_pairs(*args[:2], 0.0, *args[2:])
    got = fn()
    # same counts up to pairs within rounding of the threshold (the baseline normalises first)
    assert abs(int(got.to(torch.float64).sum()) - int(want.sum())) <= max(10, 1e-4 * shp["n"] * shp["m"])
    run = lambda: (fn(), _sync())  # noqa: E731
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.min
    flops = 2 * shp["n"] * shp["m"] * shp["D"]
    A, B = args[0], args[1]
    t_mm = _best_time(lambda: A @ B.T)  # references right after the engine: same machine state
    t0 = _best_time(_pair_fn("baseline", args))
    gf, gf_mm = flops / t / 1e9, flops / t_mm / 1e9
    benchmark.extra_info.update(gflops=gf, matmul_gflops=gf_mm, frac_matmul=gf / gf_mm, vs_baseline=t0 / t,
                                device=DEVICE)
    lines = getattr(request.config, "cape_bench_lines", None)
    if lines is not None:
        lines.append((SUITE, f"count_pairs_below {shape:17s} {engine:8s} {t * 1e3:9.3f} ms  {gf:8.1f} GFLOP/s = "
                             f"{100 * gf / gf_mm:5.1f}% of A @ B.T ({gf_mm:.1f})  x{t0 / t:5.2f} vs baseline"))
