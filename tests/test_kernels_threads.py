"""torch's CPU thread count survives numba's parallel kernels (``cape_kernels.numba_jit``).

numba's ``omp`` threading layer starts its thread pool with ``omp_set_num_threads(NUMBA_NUM_THREADS)``
and torch reads its count from that setting: without the fix, a process that gave torch 1 thread
ran torch on numba's count after its first parallel numba kernel.  Each case runs in a new process
(the pool starts once per process) with ``NUMBA_NUM_THREADS=2``, so the kernels run in parallel and
the test can fail whatever the machine's core count."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_SETUP = """
import json, numpy as np, torch
torch.set_num_threads(1)
assert torch.get_num_threads() == 1      # torch has set up its threads (its first query does it)
"""

_KERNELS = """
import numba
import cape_kernels as ck
from cape_kernels import numba_backend as nbk
g = torch.Generator().manual_seed(0)
seen = {}
R = torch.randn(64, 8, 512, generator=g)
T = torch.randn(64, 8, 512, generator=g)
assert R.numel() + T.numel() >= nbk.SERIAL_ELEMS           # the parallel twin runs
ck.set_mean_cosine(R, T, backend="numba"); seen["set_mean_cosine"] = torch.get_num_threads()
h = torch.randn(8, 64, 512, generator=g)
ck.pooled_tap(h, torch.ones(8, 64, dtype=torch.bool), "mean", backend="numba")
seen["pooled_tap"] = torch.get_num_threads()
x = np.random.default_rng(0).normal(size=(400, 32))
ck.participation_ratio_batch(x, ck.resample_indices(None, 128, seed=0, n=400))
seen["participation_ratio_batch"] = torch.get_num_threads()
print(json.dumps(dict(seen=seen, numba=numba.get_num_threads(), layer=numba.threading_layer())))
"""


def _run(code: str, **env_set: str) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS="2", **env_set)
    env.pop("OMP_NUM_THREADS", None)
    if "OMP_MAX_ACTIVE_LEVELS" not in env_set:
        env.pop("OMP_MAX_ACTIVE_LEVELS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parallel_kernels_leave_torchs_thread_count():
    got = _run(_SETUP + _KERNELS)
    assert got["numba"] == 2
    assert got["seen"] == {"set_mean_cosine": 1, "pooled_tap": 1, "participation_ratio_batch": 1}


def test_torch_set_after_the_kernels_module_keeps_its_count():
    """The other order: the kernels' module first (the pool starts there), then torch's count."""
    code = "from cape_kernels import numba_backend\n" + _SETUP + _KERNELS
    assert set(_run(code)["seen"].values()) == {1}


def test_a_sweep_ranks_thread_budget_holds_for_torch():
    """``set_thread_budget`` sets torch's count, then numba's through numba's API: setting numba's
    starts its pool, which must not undo torch's."""
    code = ("import os, json, torch\nos.environ.pop('OMP_NUM_THREADS', None)\n"
            "torch.set_num_threads(2); torch.get_num_threads()\n"
            "from cape_hpc.sweep.mpi import set_thread_budget\n"
            "n = set_thread_budget(2)\nimport numba\n"
            "print(json.dumps(dict(n=n, torch=torch.get_num_threads(), numba=numba.get_num_threads())))")
    got = _run(code)
    assert got["torch"] == got["n"] and got["numba"] == min(got["n"], 2)


_LEVELS = """
import ctypes, json
from cape_kernels import numba_backend
import numba, torch
x = torch.randn(4, 2, 300, 64)
torch.nn.functional.scaled_dot_product_attention(x, x, x)        # torch's parallel regions have run
gomp = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line})
print(json.dumps(dict(layer=numba.threading_layer(),
                      levels={p: ctypes.CDLL(p).omp_get_max_active_levels() for p in gomp})))
"""


def test_numba_pool_leaves_openmp_unnested():
    """numba's ``omp`` pool start enables every nesting level in its libgomp, which torch shares when
    numba loaded it first: each BLAS call inside torch's parallel regions then started a nested
    team (a 4-8x slower forward for the rest of the process).  After the kernels' module the level
    is ``OMP_MAX_ACTIVE_LEVELS``, 1 when unset, in every libgomp of the process."""
    got = _run(_LEVELS)
    if got["layer"] != "omp":
        pytest.skip(f"numba chose its {got['layer']} threading layer here: no OpenMP pool to check")
    assert got["levels"]
    assert set(got["levels"].values()) == {1}, got
    assert set(_run(_LEVELS, OMP_MAX_ACTIVE_LEVELS="2")["levels"].values()) == {2}
