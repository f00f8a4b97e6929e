"""Issue 16, the store: publication (items 1-3), tables as datasets (item 6), sweep identity and
provenance (items 9-11)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from cape_hpc.errors import StoreError
from cape_hpc.io import store
from cape_hpc.io.store import read_results, write_results
from cape_hpc.schema import BootstrapSummary, ConfidenceInterval, Provenance, Result

ROOT = Path(__file__).resolve().parents[1]
CAPE = [sys.executable, "-m", "cape_hpc.cli"]


# ----------------------------------------------------------------------------------------------
# item 2: two writers, a forced delay between the check and the publication

WRITER = textwrap.dedent("""
    import sys
    from cape_hpc.errors import StoreError
    from cape_hpc.io.store import write_results
    try:
        write_results(sys.argv[1], {"/analysis/x": {"who": sys.argv[2], "v": [float(sys.argv[2])] * 3}})
    except StoreError as exc:
        print("REFUSED", exc)
        sys.exit(3)
    print("WROTE")
""")


def test_two_writers_exactly_one_publishes_the_other_is_refused(tmp_path):
    target = tmp_path / "r.h5"
    env = {**os.environ, "CAPE_STORE_PUBLISH_DELAY_S": "1.5"}   # both pass the exists-check first
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(i)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs                       # exactly one success, one clear refusal
    winner = str(1 + [p.returncode for p in procs].index(0))
    refused = next(o for (o, _), p in zip(outs, procs) if p.returncode == 3)
    assert "exists with different content" in refused and "--force" in refused
    tree = read_results(target, "/analysis/x")
    assert tree["who"] == winner and list(tree["v"]) == [float(winner)] * 3   # the winner's file, intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp.h5")]   # nothing left behind


def test_same_content_from_two_writers_is_unchanged_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPE_STORE_PUBLISH_DELAY_S", "0.5")
    target = tmp_path / "r.h5"
    errors = []

    def write():
        try:
            write_results(target, {"/a": {"v": np.arange(4.0)}})
        except Exception as exc:  # pragma: no cover - the assertion names it
            errors.append(exc)

    ts = [threading.Thread(target=write) for _ in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors
    np.testing.assert_array_equal(read_results(target, "/a")["v"], np.arange(4.0))


def test_a_killed_writers_temporary_is_cleaned_at_the_next_write(tmp_path):
    target = tmp_path / "r.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)                                  # a pid that is gone
    left = tmp_path / f".r.h5~{store.HOST}~{pid}~deadbeef.tmp.h5"
    left.write_bytes(b"half a file")
    other_host = tmp_path / ".r.h5~elsewhere~1~cafe.tmp.h5"
    other_host.write_bytes(b"x")
    old = time.time() - store.STALE_TMP_S - 60
    old_host = tmp_path / ".r.h5~faraway~1~beef.tmp.h5"
    old_host.write_bytes(b"x")
    os.utime(old_host, (old, old))
    write_results(target, {"/a": {"v": 1.0}})
    assert not left.exists() and not old_host.exists()      # dead pid here; too old elsewhere
    assert other_host.exists()                              # another host's young temporary: kept


def test_publication_fsyncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_results(tmp_path / "r.h5", {"/a": {"v": 1.0}})
    assert any(p.endswith(".tmp.h5") for p in synced)      # the file, before it is published
    assert str(tmp_path) in synced                          # the folder, after


# ----------------------------------------------------------------------------------------------
# item 3: the mode comes from the umask (results files and shards alike)

@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_results_file_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        p = write_results(tmp_path / "r.h5", {"/a": {"v": 1.0}})
        p2 = tmp_path / "u.h5"
        store.update_results(p2, {"/a": {"v": 1.0}})
        store.update_results(p2, {"/b": {"v": 2.0}})
    finally:
        os.umask(old)
    for q in (p, p2):
        assert stat.S_IMODE(q.stat().st_mode) == 0o666 & ~umask


# ----------------------------------------------------------------------------------------------
# item 1 and 11: merge never overwrites without force; a corrupt target is named as such

def _job(tmp_path, models=("a", "b")) -> Path:
    job = tmp_path / "job.yaml"
    lines = "\n".join(f"  - {{id: org/{m}, name: {m}, params: {i + 1}e9}}" for i, m in enumerate(models))
    job.write_text(f"name: j\nwork: synthetic\noutput_dir: {tmp_path / 'out'}\nmodels:\n{lines}\n")
    return job


def test_sweep_merge_keeps_an_existing_file_without_force(tmp_path):
    job = _job(tmp_path)
    other = tmp_path / "analysis.h5"
    write_results(other, {"/analysis/x": {"v": 1.0}})
    before = other.read_bytes()
    r = subprocess.run([*CAPE, "sweep", str(job), "--no-mpi", "--merge", str(other)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert "exists with different content" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert other.read_bytes() == before                      # the analysis file is kept
    r = subprocess.run([*CAPE, "sweep", str(job), "--no-mpi", "--merge", str(other), "--merge-force"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "sweep" in h5py.File(other, "r")


def test_a_corrupt_target_is_reported_as_corrupt(tmp_path):
    p = tmp_path / "r.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(StoreError, match="not a readable results file"):
        write_results(p, {"/a": {"v": 1.0}})
    write_results(p, {"/a": {"v": 1.0}}, force=True)
    assert read_results(p, "/a") == {"v": 1.0}


# ----------------------------------------------------------------------------------------------
# item 6: tables are datasets; old files still read

@dataclass
class _Row:
    name: str
    x: float
    seed: int | None
    window: list[float]
    boot: BootstrapSummary


@dataclass
class _TableResult(Result):
    rows: list[_Row]
    lookup: dict[str, float]
    provenance: Provenance


def _boot(i):
    return BootstrapSummary(float(i), float(i), [ConfidenceInterval(i - 1.0, i + 1.0, 0.95)], 10, 10,
                            None if i % 2 else i, False, "percentile", False, "")


def test_a_table_is_a_fixed_number_of_objects_whatever_its_rows(tmp_path):
    counts = {}
    for n in (100, 1000):
        res = _TableResult([_Row(f"m{i}", i * 0.5, None if i % 3 == 0 else i, [i, i + 1.0][: i % 3], _boot(i))
                            for i in range(n)], {f"k{i}": float(i) for i in range(n)}, Provenance("t", {}))
        p = write_results(tmp_path / f"t{n}.h5", {"/t": res})
        objs = attrs = 0
        with h5py.File(p, "r") as f:
            def visit(_, obj):
                nonlocal objs, attrs
                objs += 1
                attrs += len(obj.attrs)
            f["t"].visititems(visit)
        counts[n] = (objs, attrs)
        back = _TableResult.from_tree(read_results(p, "/t"), where="/t")
        assert back.rows[3].seed is None and back.rows[4].seed == 4 and back.rows[5].window == [5.0, 6.0]
        assert back.rows[7].boot.seed is None and back.rows[8].boot.seed == 8
        assert back.rows[8].boot.intervals[0] == ConfidenceInterval(7.0, 9.0, 0.95)
        assert back.lookup[f"k{n - 1}"] == n - 1
        from roundtrip import assert_same
        assert_same(res, back, "table")
    assert counts[100] == counts[1000]                         # no object or attribute per row


def test_files_of_the_older_layout_are_read(tmp_path):
    """Before: a table of scalar columns without ``_n``; other lists item by item; dicts as attributes."""
    p = tmp_path / "old.h5"
    with h5py.File(p, "w") as f:
        g = f.create_group("r")
        t = g.create_group("rows")
        t.attrs["_kind"] = "table"
        t["name"] = np.array(["a", "b"], dtype=h5py.string_dtype())
        t["x"] = np.array([1.0, 2.0])
        lst = g.create_group("items")
        lst.attrs["_kind"] = "list"
        lst.create_group("0").attrs["v"] = 1.5
        lst.create_group("1").attrs["v"] = 2.5
        d = g.create_group("lookup")
        d.attrs["k"] = 3.0
    tree = read_results(p, "/r")
    assert tree["rows"] == [{"name": "a", "x": 1.0}, {"name": "b", "x": 2.0}]
    assert tree["items"] == [{"v": 1.5}, {"v": 2.5}] and tree["lookup"] == {"k": 3.0}


def test_nul_in_a_stored_name_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="NUL"):
        write_results(tmp_path / "r.h5", {"/a": {"names": ["ok", "bad\0name"]}})
    assert not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp.h5")]


# ----------------------------------------------------------------------------------------------
# items 9, 10, 11: resume identity, thread counts, dry-run checks, work restriction, names

def test_resume_does_not_depend_on_how_the_prompt_path_is_spelled(tmp_path, monkeypatch):
    from cape_hpc.sweep.runner import run_sweep
    from cape_hpc.sweep.spec import load_job

    prompts = tmp_path / "p.jsonl"
    prompts.write_text((ROOT / "data" / "prompts" / "contrastive.jsonl").read_text())
    job = tmp_path / "job.yaml"
    body = "name: j\nwork: synthetic\noutput_dir: {out}\nprompts: {{contrastive: {p}}}\nmodels:\n  - {{id: org/a, name: a, params: 1e9}}\n"
    job.write_text(body.format(out=tmp_path / "out", p=prompts))
    first = run_sweep(load_job(job), use_mpi=False)
    assert [m.status for m in first.models] == ["done"]
    monkeypatch.chdir(tmp_path)
    job.write_text(body.format(out=tmp_path / "out", p="p.jsonl"))     # relative spelling, same file
    again = run_sweep(load_job(job), use_mpi=False)
    assert [m.status for m in again.models] == ["skipped"]
    prompts.write_text(prompts.read_text().replace("?", "!", 1))       # other content: other identity
    with pytest.raises(StoreError, match="other provenance"):
        run_sweep(load_job(job), use_mpi=False)


def test_thread_counts_are_in_the_provenance_and_the_shard(tmp_path):
    from cape_hpc.sweep.runner import run_sweep
    from cape_hpc.sweep.spec import load_job

    res = run_sweep(load_job(_job(tmp_path, ("a",))), use_mpi=False)
    assert {"threads_torch", "threads_numba", "threads_omp"} <= set(res.provenance.inputs)
    assert int(res.provenance.inputs["threads_omp"]) >= 1
    with h5py.File(tmp_path / "out" / "shards" / "a.h5", "r") as f:
        assert "omp=" in f.attrs["info_threads"]


def test_dry_run_refuses_a_missing_prompt_file(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: j\nwork: synthetic\nprompts: {contrastive: nowhere.jsonl}\n"
                   "models:\n  - {id: org/a, name: a, params: 1e9}\n")
    r = subprocess.run([*CAPE, "sweep", str(job), "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "prompts.contrastive" in r.stderr and "not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_work_must_be_dotted_names_and_callable(tmp_path):
    from cape_hpc.errors import DataError, OptionError
    from cape_hpc.sweep.runner import resolve_work
    from cape_hpc.sweep.spec import parse_job

    for bad in ("../evil.py:run", "os.system", "a b:c", "mod:fn(1)"):
        with pytest.raises(DataError, match="work"):
            parse_job({"work": bad, "models": ["org/a"]}, "j.yaml")
    with pytest.raises(OptionError, match="not callable"):
        resolve_work("cape_hpc.sweep.spec:WORK_FUNCTIONS")


def test_model_names_that_differ_only_in_case_are_refused(tmp_path):
    from cape_hpc.errors import DataError
    from cape_hpc.sweep.spec import parse_job

    with pytest.raises(DataError, match="duplicate model name 'ORG__A'.*up to case"):
        parse_job({"work": "synthetic", "models": ["org/a", "ORG/A"]}, "j.yaml")


def test_out_dir_onto_a_file_is_one_line(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = subprocess.run([*CAPE, "sweep", str(_job(tmp_path)), "--no-mpi", "--out-dir", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "is a file, not a results folder" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
