"""Clean virtual environments for the install tests: made from the base interpreter, no system
site-packages, installs constrained by the lock (requirements/lock.txt), commands run with an
environment that names no path of the checkout."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
TORCH_PIN = "torch==2.13.0"  # the CPU build scripts/install_deps.sh installs (the lock's torch)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; fail the test with its last output when it exits non-zero."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def base_python() -> str:
    """An interpreter outside any virtual environment."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    return str(base if base.exists() else sys.executable)


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without the variables that would leak the checkout or this venv into a child."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CAPE_DATA_DIR")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def make_venv(path: Path, env: dict[str, str]) -> Path:
    """A fresh venv at ``path`` with the lock's pip and the CPU torch; returns its python."""
    run([base_python(), "-m", "venv", str(path)])
    py = path / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "-c", LOCK, "pip", TORCH_PIN], env=env)
    return py
