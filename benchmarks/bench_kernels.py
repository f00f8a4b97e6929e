"""pytest-benchmark suite of the coupling and steering ops (``make bench``).

Runs every op on every backend available for the device at the sweep shapes (``layers``,
``heads``; add ``huge`` with CAPE_BENCH_HUGE=1), and the two baselines a user would otherwise pick
(``eager``: the unfused torch of ``cape_kernels.bench.USER_CODE``; ``compile``: the same under
torch.compile), and records the bytes each op must move and the achieved GB/s in ``extra_info``;
compare a backend's row with the baselines' rows of the same op and shape.  Inputs and byte counts come from ``cape_kernels.bench``, the
module behind ``cape bench`` (which prints the full roofline table, copy and matmul rates included).
Device: CUDA when present (set CAPE_BENCH_DEVICE=cpu to force the CPU).
"""
from __future__ import annotations

import os

import pytest
import torch

from cape_kernels import bench
from cape_kernels.backends import available_backends

DEVICE = os.environ.get("CAPE_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
SHAPES = ["layers", "heads"] + (["huge"] if os.environ.get("CAPE_BENCH_HUGE") == "1" else [])
BACKENDS = [b for b in available_backends(DEVICE.split(":")[0]) if not (b == "triton" and DEVICE == "cpu")]
IMPLS = BACKENDS + list(bench.BASELINES)


@pytest.mark.parametrize("backend", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", bench.OPS)
def test_bench(benchmark, request, op, shape, backend):
    dev = torch.device(DEVICE)
    args, nbytes, flops = bench._inputs(op, bench.SHAPES[shape], torch.float32, dev)
    fn = bench._call(op, args, backend) if backend in BACKENDS else bench._baseline_call(op, args, backend)

    def run():
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    run()  # compile / autotune outside the timed rounds
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.median
    gbps = nbytes / t / 1e9
    benchmark.extra_info.update(bytes=nbytes, gbps=gbps, gflops=(flops / t / 1e9) if flops else None,
                                device=DEVICE)
    lines = getattr(request.config, "cape_bench_lines", None)
    if lines is not None:  # printed in the terminal summary by benchmarks/conftest.py
        extra = f", {flops / t / 1e9:.1f} GFLOP/s" if flops else ""
        lines.append(("kernels (cape bench prints the full roofline)",
                      f"{op:16s} {shape:7s} {backend:7s} {t * 1e3:9.3f} ms  {nbytes / 1e6:7.1f} MB  "
                      f"{gbps:7.1f} GB/s{extra}"))
