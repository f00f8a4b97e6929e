"""`cape nc` and `cape analyze --out` over synthetic tables of growing size: the cost per row must
stay flat (issue 16: per-family filters and one HDF5 attribute per value made it grow with N).

Run:  .venv/bin/python -m pytest benchmarks/bench_scaling.py -q -s                 (1k and 10k rows)
      CAPE_BENCH_ROWS=1000,10000,100000 .venv/bin/python -m pytest benchmarks/bench_scaling.py -q -s
      (the full check of the issue: time per row at 100k rows against 1k rows, ratio <= 2)

What is timed: ``cape_hpc.cli.main`` in process (as a user types it, output discarded), one run per
size after a warm-up on the smallest table (numba kernels compiled, modules imported): ``cape nc
--estimator quadratic -n 100`` and ``cape analyze -n 100 --n-permutations 100 --out FILE`` (every
analysis, its HDF5 file).  Tables: 10 models per family, ``rows / 10`` families, five scores, seeded.
The reference is the smallest size measured in the same run: the reported number is (seconds per
row at size N) / (seconds per row at the smallest size); linear growth is a ratio near 1.  Nothing is
asserted about time (machines differ); the ratio is printed in the summary.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cape_hpc.cli import main as cape_main

SIZES = tuple(int(s) for s in os.environ.get("CAPE_BENCH_ROWS", "1000,10000").split(","))
PER_FAMILY = 10


def synthetic_table(path: Path, n_rows: int, seed: int = 0) -> Path:
    """``n_rows`` models, 10 per family, sizes doubling, scores drifting with size plus noise."""
    rng = np.random.default_rng(seed)
    lines = ["model,family,params,d_model,n_layers,n_heads,HS,TQA,ARC,WG,MMLU,tqa_variant,source"]
    for f in range(n_rows // PER_FAMILY):
        fam = "OLMo" if f == 0 else "Pythia" if f == 1 else "OPT" if f == 2 else f"F{f}"
        base = rng.uniform(20, 60, 5)
        for i in range(PER_FAMILY):
            n = 1e8 * 2 ** i * rng.uniform(0.9, 1.1)
            s = np.clip(base + i * rng.uniform(-1, 3, 5) + rng.normal(0, 1, 5), 0, 100)
            lines.append(f"{fam}-m{i},{fam},{n:.0f},{256 * (i + 1)},{4 + i},{4 + i},"
                         + ",".join(f"{v:.2f}" for v in s) + ",mc2,synthetic")
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(argv) -> float:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert cape_main([str(a) for a in argv]) == 0
    return time.perf_counter() - t0


COMMANDS = {
    "cape nc --estimator quadratic -n 100": lambda t, out: ["nc", "--scores", t, "--estimator", "quadratic",
                                                             "-n", 100, "--json"],
    "cape analyze -n 100 --out": lambda t, out: ["analyze", "--scores", t, "-n", 100, "--n-permutations", 100,
                                                 "--json", "--out", out, "--force"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cost_per_row_is_flat(command, tmp_path, request):
    tables = {n: synthetic_table(tmp_path / f"t{n}.csv", n) for n in SIZES}
    _run(COMMANDS[command](tables[SIZES[0]], tmp_path / "warm.h5"))     # warm-up
    per_row = {}
    for n in SIZES:
        per_row[n] = _run(COMMANDS[command](tables[n], tmp_path / f"o{n}.h5")) / n
    ref = per_row[SIZES[0]]
    lines = request.config.cape_bench_lines
    for n in SIZES:
        lines.append(("scaling", f"{command:<40} {n:>7} rows: {per_row[n] * n:8.2f} s, "
                                 f"{per_row[n] * 1e3:7.3f} ms/row, ratio to {SIZES[0]} rows {per_row[n] / ref:5.2f}"))
