"""numba's compiled kernels are cached in the user cache folder, never next to the installed
sources: a first process writes them there, a second loads them without compiling, an unwritable
folder still works (no cache).  ``import cape_kernels`` and ``cape_kernels.backends`` import
neither numba, llvmlite nor torch (each check runs in a fresh process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cape_kernels

PKG = Path(cape_kernels.__file__).parent

# a set-mean cosine, a resample draw and a steering call (serial kernels), the parallel set-mean and
# pooled-mean kernels (per-lane scratch: cacheable); prints the
# dispatchers' cache hits and misses (N_KERNELS: how many dispatchers the script reads)
N_KERNELS = 5
RUN = r"""
import json, torch, numpy as np, cape_kernels as ck
from cape_kernels import numba_backend as nbk, numba_jit, resample
R, T = torch.randn(2, 3, 5), torch.randn(2, 4, 5)
got = ck.set_mean_cosine(R, T, backend="numba")
want = torch.nn.functional.cosine_similarity(R.mean(1), T.mean(1), dim=-1)
assert torch.allclose(got, want, atol=1e-6), (got, want)
assert ck.resample_indices(None, 3, seed=1, n=4).shape == (3, 4)
ck.steer_inject_(torch.randn(2, 5), torch.randn(5), 0.5, backend="numba")
r, t, o = R.numpy(), T.numpy(), np.empty(2)
nbk._set_cos(r, t, 2, o)                      # the parallel twins with per-lane scratch cache too
nbk._pool_mean(r, np.ones((2, 3), np.bool_), 1, 2, np.empty((2, 5), np.float32))
kern = [nbk._set_cos_serial, nbk._steer_serial, resample._serial_twin(resample._indices_kernel),
        nbk._set_cos, nbk._pool_mean]
print(json.dumps(dict(cache=numba_jit.CACHE, dir=numba_jit.CACHE_DIR,
                      hits=sum(sum(k.stats.cache_hits.values()) for k in kern),
                      misses=sum(sum(k.stats.cache_misses.values()) for k in kern))))
"""


def _run(code: str, env_extra: dict, drop=("NUMBA_CACHE_DIR",)) -> str:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def _install_cache_files() -> dict:
    return {p: p.stat().st_mtime_ns for p in PKG.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_second_process_loads_the_cache_from_the_user_folder(tmp_path):
    before = _install_cache_files()
    first = json.loads(_run(RUN, {"XDG_CACHE_HOME": str(tmp_path)}))
    folder = tmp_path / "cape_kernels" / "numba"
    assert first["cache"] and Path(first["dir"]) == folder
    assert first["misses"] == N_KERNELS and first["hits"] == 0  # compiled and written
    assert len(list(folder.rglob("*.nbi"))) >= 3 and list(folder.rglob("*.nbc"))
    assert _install_cache_files() == before  # nothing written next to the sources
    second = json.loads(_run(RUN, {"XDG_CACHE_HOME": str(tmp_path)}))
    assert second["hits"] == N_KERNELS and second["misses"] == 0  # loaded, not compiled


def test_numba_imported_first_still_caches_in_the_user_folder(tmp_path):
    before = _install_cache_files()
    got = json.loads(_run("import numba\n" + RUN, {"XDG_CACHE_HOME": str(tmp_path)}))
    assert got["cache"] and list((tmp_path / "cape_kernels" / "numba").rglob("*.nbi"))
    assert _install_cache_files() == before


def test_a_user_numba_cache_dir_wins(tmp_path):
    mine = tmp_path / "mine"
    got = json.loads(_run(RUN, {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "NUMBA_CACHE_DIR": str(mine)}, drop=()))
    assert Path(got["dir"]) == mine and list(mine.rglob("*.nbi"))
    assert not (tmp_path / "xdg").exists()


def test_an_unwritable_cache_folder_still_runs_uncached(tmp_path):
    blocker = tmp_path / "file"  # a file where the folder should be: no one can create it, root included
    blocker.write_text("")
    before = _install_cache_files()
    got = json.loads(_run(RUN, {"XDG_CACHE_HOME": str(blocker)}))
    assert not got["cache"] and got["dir"] is None and got["hits"] == 0
    assert blocker.read_text() == "" and _install_cache_files() == before


@pytest.mark.parametrize("module", ["cape_kernels", "cape_kernels.backends"])
def test_import_loads_no_numba_llvmlite_or_torch(module):
    code = (f"import sys, json, {module}\n"
            "print(json.dumps([m for m in ('numba', 'llvmlite', 'torch') if m in sys.modules]))")
    assert json.loads(_run(code, {})) == []


def test_numba_loads_with_the_first_numba_kernel(tmp_path):
    code = ("import sys, json, torch, cape_kernels as ck\n"
            "from cape_kernels.backends import BACKENDS\n"
            "before = 'numba' in sys.modules\n"
            "ck.pooled_tap(torch.ones(1, 2, 3), backend='torch')\n"
            "mid = 'numba' in sys.modules\n"
            "ck.pooled_tap(torch.ones(1, 2, 3), backend='numba')\n"
            "print(json.dumps([before, mid, 'numba' in sys.modules]))")
    assert json.loads(_run(code, {"XDG_CACHE_HOME": str(tmp_path)})) == [False, False, True]


def test_the_backend_check_imports_numba_with_the_user_cache(tmp_path):
    code = ("import json\n"
            "from cape_kernels.backends import available_backends\n"
            "assert 'numba' in available_backends('cpu')\n"
            "import numba\n"
            "print(json.dumps(numba.config.CACHE_DIR))")
    assert json.loads(_run(code, {"XDG_CACHE_HOME": str(tmp_path)})) == str(tmp_path / "cape_kernels" / "numba")
