"""scripts/gpu_check.sh cannot rot between GPU sessions: its --dry-run (the plan, the wheel
installation into a venv over this interpreter's packages with --no-deps --no-index, the env step and
the summary) runs here on the CPU with the two wheels built from a copy of the tree, cape_hpc imported
from the venv and not from the checkout; a wheel folder without wheels is a failed, recorded step and
the summary is still written; every dependency of the two distributions is either in the GPU image,
in scripts/gpu_wheels.sh's wheelhouse, or left out there by name; and the script's steps helper
parses every subcommand the script calls."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from venvs import ROOT, clean_env, run

SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["install", "env", "pytest_gpu", "memcheck_extract", "memcheck_steer", "bench", "throughput",
         "steering_grid", "split", "racecheck"]


def _bash_list(name: str) -> set[str]:
    text = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    m = re.search(rf"^{name}=\(([^)]*)\)", text, re.M)
    assert m, name
    return set(m.group(1).split())


def _norm(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_in_the_image_or_the_wheelhouse():
    setup = (ROOT / "setup.py").read_text()
    block = setup[setup.index("install_requires=["):setup.index("],", setup.index("install_requires=["))]
    reqs = [_norm(r) for r in re.findall(r'"([^"]+)"', block) if not r.startswith("cape_kernels")]
    kernels = tomllib.loads((ROOT / "kernels" / "pyproject.toml").read_text())["project"]["dependencies"]
    known = _bash_list("IMAGE") | _bash_list("WHEELHOUSE") | _bash_list("LEFT_OUT")
    missing = sorted({*reqs, *map(_norm, kernels)} - known)
    assert len(reqs) > 10 and not missing, f"dependencies in no list of scripts/gpu_wheels.sh: {missing}"
    lock = (ROOT / "requirements" / "lock.txt").read_text().lower()
    for name in _bash_list("WHEELHOUSE"):
        assert re.search(rf"^{re.escape(name)}==", lock, re.M), f"{name} is not pinned in the lock"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """The two wheels (scripts/build_dists.sh on a copy of the tree; sdists dropped)."""
    from test_install_wheels import IGNORE

    tmp = tmp_path_factory.mktemp("gpuwheels")
    shutil.copytree(ROOT, tmp / "src", ignore=IGNORE)
    run(["bash", tmp / "src" / "scripts" / "build_dists.sh", sys.executable, tmp / "dist", tmp / "src"], env=clean_env())
    out = tmp / "wheels"
    out.mkdir()
    for w in (tmp / "dist").glob("*.whl"):
        shutil.copy(w, out)
    return out


def _dry_run(wheels: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", "--python", sys.executable, "--wheels", str(wheels),
                           "--out", str(out)], capture_output=True, text=True, env=clean_env(), timeout=900,
                          cwd=str(out.parent))


def test_dry_run_installs_the_wheels_and_writes_the_summary(wheels, tmp_path):
    r = _dry_run(wheels, tmp_path / "res")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in STEPS:                                  # the plan names every step
        assert re.search(rf"plan: {name}\s+\d+", r.stdout), name
    report = json.loads((tmp_path / "res" / "gpu_check.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["install", "env"]
    assert all(s["status"] == "ok" for s in report["steps"]) and report["failed"] == []
    assert "/venv/" in (tmp_path / "res" / "install.log").read_text()     # cape_hpc from the venv
    env = report["env"]
    assert env["python"] == sys.version.split()[0] and env["cuda_available"] is False
    assert "/venv/" in env["cape_hpc_path"] and str(ROOT) not in env["cape_hpc_path"]
    assert env["versions"]["cape_hpc"] == env["versions"]["cape_kernels"]
    summary = (tmp_path / "res" / "summary.md").read_text()
    assert "| install | ok |" in summary and "failed: none" in summary


def test_dry_run_without_wheels_fails_and_records_it(tmp_path):
    empty = tmp_path / "nowheels"
    empty.mkdir()
    r = _dry_run(empty, tmp_path / "res")
    assert r.returncode == 1
    assert "make gpu-wheels" in (tmp_path / "res" / "install.log").read_text()
    report = json.loads((tmp_path / "res" / "gpu_check.json").read_text())
    assert report["failed"] == ["install", "env"] and report["steps"][0]["rc"] == 2


SMALL = {"throughput": ["--dtype", "float32", "--batch", "4", "--prompts", "16", "--repeats", "1"],
         "steering-grid": ["--dtype", "float32", "--items", "6", "--repeats", "1"]}


def test_every_step_the_script_calls_runs_on_a_cpu(tmp_path):
    """Each subcommand of scripts/gpu_check_steps.py the script calls, on the CPU (CAPE_GPU_CHECK_DEVICE)
    with a small random model: it exits 0 and writes its figures (the split equals the unsplit run)."""
    text = SCRIPT.read_text()
    called = set(re.findall(r'"\$STEP_PY" ([a-z-]+)', text)) | set(re.findall(r"sanitize \w+ \w+ ([a-z-]+)", text))
    assert called == {"env", "throughput", "steering-grid", "split", "extract-small", "steer-small", "summarize"}
    called.discard("summarize")                       # run by the dry-run test
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 128,
                               "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 300}))
    env = clean_env(CAPE_GPU_CHECK_DEVICE="cpu")
    for cmd in sorted(called):
        extra = SMALL.get(cmd, []) + (["--config", str(cfg)] if cmd in SMALL else [])
        out = tmp_path / f"{cmd}.json"
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check_steps.py"), cmd, "--json", str(out),
                            *extra], capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
        assert r.returncode == 0, (cmd, r.stderr[-3000:])
        fig = json.loads(out.read_text())
        if cmd == "split":
            assert fig["met"] and fig["llama"]["coupling_max_diff"] < 1e-6
            assert "disk" in fig["gpt_neox"]["device_map"].values()
        if cmd == "throughput":
            assert fig["tokens"] > 0 and fig["host_syncs_in_pass"] is None and fig["extract_vs_bare"] > 0
        if cmd == "steering-grid":
            assert fig["grid_ratio"] > 0 and "met" in fig
