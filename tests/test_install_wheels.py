"""The package works installed, not only from the checkout: both distributions are built as an sdist
and a wheel (scripts/build_dists.sh: python -m build, twine check), the wheels are installed (not
editable) into a clean venv with the lock's versions, and the `cape` command runs from a folder
outside the repository on the data the wheel ships: --help, analyze --out, report, internals and steer
on a tiny random model, sweep + merge of a two-model tiny job, crossmodel on the merged file.

The archives are checked against the source tree: every package under cape_hpc/ (found, not listed)
and every file of data/ is in the wheel, and the sdist rebuilds it.  A root-level `pip wheel
--no-build-isolation` of the copy works too (it failed while a folder `kernels/` with an __init__.py
shadowed the Hugging Face package in setuptools' own process).  A few minutes: the venv installs
torch and the rest from the pip cache that scripts/install_deps.sh filled.
"""
from __future__ import annotations

import json
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import h5py
import pytest

from venvs import LOCK, ROOT, clean_env, make_venv, run

IGNORE = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "build", "dist", "*.egg-info", "runs", "results",
                                "artifacts", ".pytest_cache", ".benchmarks", "*.nbi", "*.nbc")
TINY_JOB = """\
name: two_tiny
output_dir: sweep
defaults: {dtype: float32, batch_size: 8}
prompts: {contrastive: null, calibration: null, max_prompts: 8}
internals: {pooling: last}
steering: {enabled: false}
models:
  - {id: tiny-llama, name: tinyfam-s, family: tinyfam, params: 127680, d_model: 64, n_layers: 3, vocab: 260}
  - {id: tiny-bloom, name: tinyfam-l, family: tinyfam, params: 166848, d_model: 64, n_layers: 3, vocab: 260}
"""


def source_packages() -> set[str]:
    """Every package of cape_hpc in the tree (a folder with __init__.py), dotted."""
    return {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cape_hpc").rglob("__init__.py")}


def shipped_data() -> set[str]:
    return {p.relative_to(ROOT / "data").as_posix() for p in (ROOT / "data").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    """sdists and wheels of both distributions, built from a copy of the tree."""
    tmp = tmp_path_factory.mktemp("dists")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    out = tmp / "dist"
    run(["bash", src / "scripts" / "build_dists.sh", sys.executable, out, src], env=clean_env())
    return out


def one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"{pattern}: {found}"
    return found[0]


def test_wheel_and_sdist_hold_every_package_and_the_data(dists):
    names = set(zipfile.ZipFile(one(dists, "cape_hpc-*.whl")).namelist())
    for pkg in sorted(source_packages()):
        assert f"{pkg.replace('.', '/')}/__init__.py" in names, f"{pkg} is not in the wheel"
    for f in sorted(shipped_data()):
        assert f"cape_hpc/data/{f}" in names, f"data/{f} is not in the wheel"
    assert any(n.startswith("cape_hpc/report/assets/") for n in names)
    assert not any(n.startswith(("kernels/", "tests/", "cape_kernels/")) for n in names)
    knames = set(zipfile.ZipFile(one(dists, "cape_kernels-*.whl")).namelist())
    assert "cape_kernels/__init__.py" in knames and any(n.endswith(".cu") for n in knames)
    assert not any(n.startswith("kernels/") for n in knames), "an importable `kernels` is in the wheel"
    sdist = {n.split("/", 1)[1] for n in tarfile.open(one(dists, "cape_hpc-*.tar.gz")).getnames() if "/" in n}
    assert {f"data/{f}" for f in shipped_data()} <= sdist


def test_root_wheel_builds_without_build_isolation(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", tmp_path / "w", src], env=clean_env(), cwd=src)
    assert one(tmp_path / "w", "cape_hpc-*.whl")


@pytest.mark.timeout(1200)
def test_installed_wheels_run_the_cli_outside_the_repository(dists, tmp_path):
    env = clean_env(NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), TOKENIZERS_PARALLELISM="false")
    py = make_venv(tmp_path / "venv", env)
    run([py, "-m", "pip", "install", "-q", "-c", LOCK, one(dists, "cape_kernels-*.whl"),
         one(dists, "cape_hpc-*.whl")], env=env)
    work = tmp_path / "work"
    work.mkdir()
    where = run([py, "-I", "-c", "import cape_hpc, cape_kernels; from cape_hpc.io.data import data_dir; "
                 "print(cape_hpc.__file__); print(cape_kernels.__file__); print(data_dir())"], env=env, cwd=work)
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to((tmp_path / "venv").resolve()), f"{line} is not in the venv"
    cape = tmp_path / "venv" / "bin" / "cape"

    def cape_ok(*args: str) -> str:
        return run([cape, *args], env=env, cwd=work).stdout

    assert "reproduce" in cape_ok("--help")
    cape_ok("analyze", "--out", "a.h5")
    cape_ok("report", "a.h5", "-o", "report.html")
    assert (work / "report.html").stat().st_size > 100_000  # plotly inlined: the report is self-contained
    cape_ok("internals", "--model", "tiny-llama", "--max-prompts", "16", "--batch-size", "8", "--out", "a.h5")
    cape_ok("steer", "--model", "tiny-llama", "--max-items", "6", "--alphas", "0.1", "--max-neutral", "2",
            "--max-prompts", "2", "--max-new-tokens", "4", "--folds", "2", "--out", "a.h5")
    with h5py.File(work / "a.h5", "r") as f:
        assert {"internals", "steering"} <= set(f)
        assert "tiny-llama" in f["internals"] and "tiny-llama" in f["steering"]
    (work / "job.yaml").write_text(TINY_JOB)
    sweep = json.loads(cape_ok("sweep", "job.yaml", "--out-dir", "sw", "--json"))
    assert sorted(m["status"] for m in sweep["models"]) == ["done", "done"], sweep["models"]
    cape_ok("merge", "sw", "-o", "m.h5")
    cape_ok("crossmodel", "m.h5", "-n", "200", "--out", "m.h5")
    with h5py.File(work / "m.h5", "r") as f:
        assert sorted(f["internals"]) == ["tinyfam-l", "tinyfam-s"] and "crossmodel" in f
