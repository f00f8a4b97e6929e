"""Both sbatch templates on a real one-node Slurm (scripts/ci_slurm.sh on jobs/smoke_tiny.yaml).

Runs by default where it can: as root with apt-get (to install slurm-wlm and munge) or with Slurm
and munge already installed.  Elsewhere it is skipped, saying why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the script installs slurm-wlm/munge and runs munged as the munge user"
    have = all(shutil.which(x) for x in ("slurmctld", "slurmd", "munged", "sbatch"))
    if not have and not shutil.which("apt-get"):
        return "Slurm and munge are not installed and apt-get is not available to install them"
    if not (Path(sys.executable).parent / "mpiexec").exists():
        return "the venv has no mpiexec (pip install mpich)"
    return None


@pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))
def test_sbatch_templates_on_one_node_slurm():
    env = {**os.environ, "CAPE_VENV": str(Path(sys.executable).parent.parent), "CAPE_SLURM_TIMEOUT": "600"}
    r = subprocess.run(["bash", str(REPO / "scripts" / "ci_slurm.sh"), "jobs/smoke_tiny.yaml"], cwd=REPO,
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-6000:])
    assert "ci_slurm: OK: 4 models from the array job and the MPI job" in r.stdout
    assert "ranks used: [0, 1]" in r.stdout
    # the daemons were stopped by PID
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "cape-slurm." not in ps, "a Slurm/munge daemon of the test is still running"
