"""Sweep fault tests with real processes: SIGKILL mid-model, SIGTERM, the same job twice at once.

The work function is the deterministic ``synthetic`` one (no torch) so each test takes seconds;
tests/test_sweep_mpi.py repeats the SIGKILL test with real tiny models.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import pytest

from cape_hpc.sweep import shards

MPIEXEC = Path(sys.executable).parent / "mpiexec"
CAPE = [sys.executable, "-m", "cape_hpc.cli"]

JOB = """
name: faults
work: synthetic
output_dir: {out}
models:
  - {{id: o/m0, name: m0, params: 6e9, options: {{sleep: {s0}}}}}
  - {{id: o/m1, name: m1, params: 5e9, options: {{sleep: {s}}}}}
  - {{id: o/m2, name: m2, params: 4e9, options: {{sleep: {s}}}}}
  - {{id: o/m3, name: m3, params: 3e9, options: {{sleep: {s}}}}}
  - {{id: o/m4, name: m4, params: 2e9, options: {{sleep: {s}}}}}
  - {{id: o/m5, name: m5, params: 1e9, options: {{sleep: {s}}}}}
"""


def job_file(tmp_path: Path, out: str, sleep: float = 0.3, name: str = "job.yaml", first: float | None = None) -> Path:
    """Six synthetic models sleeping ``sleep`` s each (the first, m0, ``first`` s if given)."""
    p = tmp_path / name
    p.write_text(textwrap.dedent(JOB).format(out=tmp_path / out, s=sleep, s0=sleep if first is None else first))
    return p


# one code version for every process of a test, even if the checkout is edited meanwhile
CODE_VERSION = shards.shard_code_version()


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "CAPE_SWEEP_FAILPOINT"}
    e["CAPE_SWEEP_CODE_VERSION"] = CODE_VERSION
    e.update(extra)
    return e


class ShardWatcher:
    """Polls shards/ while a run is going: every visible (non-temporary) shard must be complete."""

    def __init__(self, out: Path):
        self.out, self.bad, self.seen = out, [], set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        d = shards.shards_dir(self.out)
        while not self._stop.is_set():
            for p in d.glob("*.h5") if d.exists() else []:
                if p.name.startswith("."):
                    continue  # temporary files are never read as results
                st = shards.inspect_shard(p)
                if st.status == "missing":
                    continue  # moved away in between
                self.seen.add(p.name)
                if st.status != "complete":
                    self.bad.append((p.name, st.status, st.detail))
            time.sleep(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def merged_hash(tmp_path: Path, out: str) -> str:
    target = tmp_path / f"{out}.h5"
    r = subprocess.run(CAPE + ["merge", str(tmp_path / out), "-o", str(target), "--force"],
                       capture_output=True, text=True, env=env())
    assert r.returncode == 0, r.stderr
    with h5py.File(target) as f:
        return f.attrs["content_sha256"]


@pytest.mark.parametrize("where", ["write", "after_work"])
def test_rank_sigkilled_mid_model_rerun_equals_uninterrupted(tmp_path, where):
    ref = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(job_file(tmp_path, "ref", 0.05, "ref.yaml"))],
                         capture_output=True, text=True, env=env(), timeout=120)
    assert ref.returncode == 0, ref.stderr
    job = job_file(tmp_path, "out", 0.05)
    out = tmp_path / "out"
    with ShardWatcher(out) as w:
        r = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(job)], capture_output=True, text=True,
                           env=env(CAPE_SWEEP_FAILPOINT=f"{where}:m2"), timeout=120)
    assert r.returncode != 0  # a rank died: the MPI job is aborted
    assert not w.bad, w.bad
    assert w.seen & {"m0.h5", "m1.h5"}  # the watcher did look at published shards
    assert not shards.shard_path(out, "m2").exists()
    # m2 went to a rank only after it had published m0 or m1: that shard survives the kill
    assert any(shards.inspect_shard(shards.shard_path(out, f"m{i}")).status == "complete" for i in (0, 1))
    r2 = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(job), "--json"], capture_output=True,
                        text=True, env=env(), timeout=120)
    assert r2.returncode == 0, r2.stderr
    runs = {m["model"]: m for m in json.loads(r2.stdout)["models"]}
    assert runs["m2"]["status"] == "done" and "skipped" in (runs["m0"]["status"], runs["m1"]["status"])
    assert "took over stale lock" in (runs["m2"]["note"] or "")
    assert not list((out / "shards").glob(".*.tmp.h5")) and not list((out / "locks").glob("*.lock"))
    assert merged_hash(tmp_path, "out") == merged_hash(tmp_path, "ref")


def _wait_for(pred, timeout=30.0):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_external_sigkill_then_resume(tmp_path):
    job = job_file(tmp_path, "out", 0.1, first=3.0)
    out = tmp_path / "out"
    p = subprocess.Popen(CAPE + ["sweep", str(job)], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_for(lambda: (out / "locks" / "m0.lock").exists())
    time.sleep(0.3)
    p.kill()
    p.communicate()
    assert not shards.shard_path(out, "m0").exists() and (out / "locks" / "m0.lock").exists()
    r = subprocess.run(CAPE + ["sweep", str(job), "--json"], capture_output=True, text=True,
                       env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    runs = {m["model"]: m for m in json.loads(r.stdout)["models"]}
    assert all(m["status"] == "done" for m in runs.values())
    assert "took over stale lock" in runs["m0"]["note"]


def test_sigterm_drops_current_model_cleanly(tmp_path):
    job = job_file(tmp_path, "out", 0.1, first=8.0)
    out = tmp_path / "out"
    p = subprocess.Popen(CAPE + ["sweep", str(job), "--json"], env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (out / "locks" / "m0.lock").exists())
    time.sleep(0.2)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=30)
    assert time.monotonic() - t0 < 5.0, "the current model must be dropped, not finished (8 s)"
    assert p.returncode == 143, stderr
    runs = {m["model"]: m for m in json.loads(stdout)["models"]}
    assert runs["m0"]["status"] == "interrupted"
    assert all(runs[f"m{i}"]["status"] == "interrupted" for i in range(1, 6))
    assert not list((out / "shards").glob("*.h5")) and not list((out / "shards").glob(".*"))
    assert not list((out / "locks").glob("*.lock"))
    man = json.loads((out / "manifest.json").read_text())
    assert man["models"]["m0"]["status"] == "interrupted"


def test_sigterm_finish_mode_completes_current_model(tmp_path):
    job = job_file(tmp_path, "out", 1.0)
    out = tmp_path / "out"
    p = subprocess.Popen(CAPE + ["sweep", str(job), "--on-term", "finish"], env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_for(lambda: (out / "locks" / "m0.lock").exists())
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert p.returncode == 143
    assert shards.inspect_shard(shards.shard_path(out, "m0")).status == "complete"
    assert not shards.shard_path(out, "m1").exists()


def test_same_job_twice_at_once(tmp_path):
    job = job_file(tmp_path, "out", 0.6)
    out = tmp_path / "out"
    with ShardWatcher(out) as w:
        procs = [subprocess.Popen(CAPE + ["sweep", str(job), "--json"], env=env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
    assert not w.bad, w.bad
    for p, (so, se) in zip(procs, results):
        assert p.returncode == 0, se
    done: dict[str, int] = {}
    for so, _ in results:
        for m in json.loads(so)["models"]:
            assert m["status"] in ("done", "skipped"), m
            done[m["model"]] = done.get(m["model"], 0) + (m["status"] == "done")
    assert done == {f"m{i}": 1 for i in range(6)}, "each shard written exactly once"
    for i in range(6):
        assert shards.inspect_shard(shards.shard_path(out, f"m{i}")).status == "complete"
    # the work was shared, not duplicated: both runs computed something
    per_run = [sum(m["status"] == "done" for m in json.loads(so)["models"]) for so, _ in results]
    assert min(per_run) >= 1, per_run


def test_sigterm_under_mpiexec_every_rank_drops_cleanly(tmp_path):
    job = job_file(tmp_path, "out", 4.0)
    out = tmp_path / "out"
    p = subprocess.Popen([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(job), "--json"], env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (out / "locks" / "m0.lock").exists() and (out / "locks" / "m1.lock").exists())
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)  # mpiexec forwards it to both ranks
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 143, stderr
    runs = {m["model"]: m for m in json.loads(stdout)["models"]}
    assert {runs["m0"]["rank"], runs["m1"]["rank"]} == {0, 1}
    assert all(m["status"] == "interrupted" for m in runs.values()), runs
    assert not (out / "shards").exists() or not list((out / "shards").iterdir())
    assert not list((out / "locks").glob("*.lock"))
