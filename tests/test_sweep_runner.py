"""Sweep: job-spec validation, planning, resume, provenance, corrupt shards, merge, locks.

These use the deterministic ``synthetic`` work function (no torch), so they check the runner's
logic in milliseconds; tests/test_sweep_faults.py and test_sweep_mpi.py run real processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from cape_hpc.errors import DataError, OptionError, StoreError
from cape_hpc.internals.results import InternalsResult
from cape_hpc.io.store import read_results
from cape_hpc.steering.results import SteeringResult
from cape_hpc.sweep import shards
from cape_hpc.sweep.merge import SweepIndex, merge_shards
from cape_hpc.sweep.options import MergeOptions, SweepOptions
from cape_hpc.sweep.runner import plan, run_sweep
from cape_hpc.sweep.spec import load_job, order_models, parse_job
from cape_hpc.sweep.work import synthetic_model

REPO = Path(__file__).resolve().parents[1]

SYN = """
name: syn
work: synthetic
output_dir: {out}
steering: {{enabled: true, alpha: 2.0}}
models:
  - {{id: org/big, name: big, params: 3e9, n_layers: 5}}
  - {{id: org/mid, name: mid, params: 1e9}}
  - {{id: org/small, name: small, params: 1e8}}
"""


def write_job(tmp_path: Path, text: str = SYN, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).format(out=tmp_path / "out"))
    return p


# ------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize("body, where", [
    ("models: []", "models: must be a non-empty list"),
    ("models: [{name: x}]", "models[0].id: is required"),
    ("models: [{id: a, dtype: float8}]", "models[0].dtype: 'float8' is not one of float32"),
    ("models: [{id: a}, {id: b, batch_size: 0}]", "models[1].batch_size: must be >= 1, got 0"),
    ("models: [{id: a, colour: red}]", "models[0].colour: unknown key"),
    ("models: [{id: a}, {id: b, name: a}]", "models[1].name: duplicate model name 'a'"),
    ("models: [{id: a}]\nsteering: {alpha: high}", "steering.alpha: 'high' is not a number"),
    ("models: [{id: a}]\ninternals: {pooling: max}", "internals.pooling: 'max' is not one of last, mean"),
    ("models: [{id: a}]\nwork: nonsense", "work: 'nonsense' is not one of internals, synthetic or 'module:function'"),
    ("models: [{id: a}]\nsteering: {positions: middle}", "steering.positions: 'middle' is not one of"),
    ("models: [{id: a}]\ninternals: {taps: [residual, attn]}", "internals: option '--taps': 'attn' is not one of"),
    ("models: [{id: a}]\nprompts: {max_prompts: 1}", "prompts.max_prompts: must be >= 2, got 1"),
    ("modls: [{id: a}]", "modls: unknown key"),
    ("models: [{id: a, name: 'a/b'}]", "models[0].name: 'a/b' is not a valid shard name"),
    # every value goes through its options class, with the file, the entry and the key
    ("models: [{id: a, params: many}]", "models[0].params: 'many' is not a number"),
    ("models: [{id: a, n_layers: 0}]", "models[0].n_layers: must be >= 1, got 0"),
    ("models: [{id: a, trust_remote_code: maybe}]", "models[0].trust_remote_code: expected true or false"),
    ("models: [a]\ndefaults: {dtype: int4}", "defaults.dtype: 'int4' is not one of"),
    ("models: [a]\ndefaults: {name: x}", "defaults.name: unknown key"),
    ("models: [a]\ninternals: {n_blocks: 2.5}", "internals.n_blocks: 2.5 is not an integer"),
    ("models: [a]\ninternals: {enabled: sometimes}", "internals.enabled: expected true or false"),
    ("models: [a]\nsteering: {max_new_tokens: 0}", "steering.max_new_tokens: must be >= 1, got 0"),
    ("models: [a]\nname: [x]", "name: expected text"),
    ("models: [a]\nprompts: [x]", "prompts: must be a mapping, got list"),
])
def test_job_validation_names_file_and_key(tmp_path, body, where):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(DataError) as exc:
        load_job(p)
    assert str(exc.value).startswith(f"{p}: ")
    assert where in str(exc.value)
    if isinstance(exc.value, OptionError):   # a refused value: the options class's own message
        assert exc.value.__class__.__name__ == "JobValueError"


def test_invalid_yaml_reports_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("models:\n  - {id: a\n")
    with pytest.raises(DataError, match=r"bad.yaml: line \d+, column \d+ invalid YAML"):
        load_job(p)


def test_cli_prints_one_line_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("models: [{id: a, dtype: int4}]")
    out = subprocess.run([sys.executable, "-m", "cape_hpc.cli", "sweep", str(p), "--dry-run"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "models[0].dtype" in out.stderr


def test_shipped_jobs_validate():
    paper = load_job(REPO / "jobs" / "paper40.yaml")
    assert len(paper.models) == 40
    fams = {m.family for m in paper.models}
    assert fams == {"Pythia", "OPT", "BLOOM", "GPT-Neo", "Phi", "Gemma", "Mistral", "Qwen2.5", "Qwen3"}
    assert all(m.params for m in paper.models) and len({m.id for m in paper.models}) == 40
    smoke = load_job(REPO / "jobs" / "smoke.yaml")
    ids = {m.id for m in smoke.models}
    assert {"smollm2-135m", "gemma3-270m"} <= ids and sum(i.startswith("tiny-") for i in ids) >= 4
    assert smoke.extract.max_prompts == 16 and all(m.extract.max_prompts == 16 for m in smoke.models)
    # the shipped jobs set their batch size (the default is ExtractOptions', 16): 8, and 8 for paper40's
    # bfloat16 models
    for name in ("smoke", "smoke_tiny", "family_tiny"):
        assert {m.extract.batch_size for m in load_job(REPO / "jobs" / f"{name}.yaml").models} == {8}
    assert {(m.load.dtype, m.extract.batch_size) for m in paper.models} == {("float32", 16), ("bfloat16", 8)}


def test_a_bare_job_takes_the_command_line_defaults():
    """A job that sets nothing gets the options the CLI has by default (no second set of defaults):
    `cape internals` (ModelOptions + ExtractOptions) and `cape steer` (SteerOptions)."""
    from cape_hpc.internals.options import ExtractOptions
    from cape_hpc.models.options import ModelOptions
    from cape_hpc.steering.options import SteerOptions
    from cape_hpc.sweep.options import ModelFacts

    job = parse_job({"models": ["org/m"], "steering": {"enabled": True}}, "jobs/bare.yaml")
    (m,) = job.models
    assert m.load == ModelOptions(model="org/m") and m.extract == job.extract == ExtractOptions()
    assert m.facts == ModelFacts(name="org__m") and m.work_options == {}
    assert job.steer == SteerOptions() and job.options.extract and job.name == "bare"
    assert job.output_dir == os.path.join("results", "bare") and job.work_target.endswith(":process_model")
    assert parse_job({"models": ["a"]}).steer is None        # no steering section: no steering
    # defaults apply to every model; an entry's own key wins; null means "not given"
    job = parse_job({"defaults": {"dtype": "bfloat16", "batch_size": 4}, "internals": {"pooling": "mean"},
                     "prompts": {"max_prompts": 6}, "steering": {"alpha": 0.25},
                     "models": [{"id": "a", "batch_size": 2}, {"id": "b", "dtype": None}]})
    a, b = job.models
    assert (a.load.dtype, a.extract.batch_size, b.load.dtype, b.extract.batch_size) == ("bfloat16", 2, "bfloat16", 4)
    assert a.extract == ExtractOptions(pooling="mean", max_prompts=6, batch_size=2)
    assert job.steer == SteerOptions(alpha=0.25)


def test_order_is_largest_first_then_name():
    job = parse_job({"models": [{"id": "a", "params": 1}, {"id": "b", "params": 5}, {"id": "c"},
                                {"id": "d", "params": 5}]})
    assert [m.name for m in order_models(job.models)] == ["b", "d", "a", "c"]


def test_dry_run_paper40_downloads_nothing(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = ("import sys, json; from cape_hpc.cli import main; "
            f"rc = main(['sweep', {str(REPO / 'jobs' / 'paper40.yaml')!r}, '--dry-run', '--json', "
            f"'--out-dir', {str(tmp_path / 'res')!r}]); "
            "print(json.dumps([rc] + [m in sys.modules for m in ('torch', 'transformers', 'huggingface_hub')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plan_json, flags = out.stdout.rsplit("\n[", 1)
    # nothing that could download (or even load) a model was imported
    assert json.loads("[" + flags) == [0, False, False, False]
    rows = json.loads(plan_json)["plan"]
    assert len(rows) == 40
    assert all(rows[i]["params"] >= rows[i + 1]["params"] for i in range(39))
    # memory: bf16 weights of a 14.8B model are 29.6 GB; the estimate adds activations + runtime
    big = rows[0]
    assert big["dtype"] == "bfloat16" and 29.6e9 < big["est_memory_bytes"] < 34e9
    assert not (tmp_path / "hf").exists() and not (tmp_path / "res").exists()


def test_memory_estimate_by_hand():
    from cape_hpc.sweep.spec import estimate_memory_bytes

    job = parse_job({"models": [{"id": "a", "params": 1e9, "d_model": 1000, "batch_size": 2, "dtype": "float16"}]})
    # 1e9 * 2 bytes + 2 * 128 tokens * 1000 * 16 * 2 bytes + 0.4e9
    assert estimate_memory_bytes(job.models[0], job) == int(2e9 + 2 * 128 * 1000 * 16 * 2 + 0.4e9)


# ------------------------------------------------------------------------------------- run, resume


def test_run_writes_complete_shards_and_merge(tmp_path):
    job = load_job(write_job(tmp_path))
    res = run_sweep(job, use_mpi=False)
    assert res.exit_status() == 0 and sorted(m.status for m in res.models) == ["done"] * 3
    out = Path(job.output_dir)
    for name in ("big", "mid", "small"):
        st = shards.inspect_shard(shards.shard_path(out, name))
        assert st.status == "complete" and st.provenance["model"] == name
    m = merge_shards(out, tmp_path / "merged.h5")
    assert sorted(m.merged) == ["big", "mid", "small"] and m.exit_status() == 0
    tree = read_results(tmp_path / "merged.h5")
    ref = synthetic_model(job.model("big"), job)
    got = InternalsResult.from_tree(tree["internals"]["big"], where="/internals/big")
    np.testing.assert_array_equal(got.head_coupling, ref["internals"].head_coupling)
    assert got.n_layers == 5 and got.complete is True
    (run, st), = tree["steering"]["big"].items()
    (ref_run, ref_st), = ref["steering"].items()
    assert run == ref_run and run.startswith("L0_mean-diff_a2_")
    np.testing.assert_array_equal(SteeringResult.from_tree(st, where=run).direction, ref_st.direction)
    index = SweepIndex.from_tree(tree["sweep"], where="/sweep")
    assert [r.model for r in index.models] == ["big", "mid", "small"] and not index.mixed_provenance
    assert index.models[0].internals_sha256 and json.loads(index.job_options)["steering"]["alpha"] == 2.0
    man = json.loads((out / "manifest.json").read_text())
    assert {k: v["status"] for k, v in man["models"].items()} == {"big": "done", "mid": "done", "small": "done"}


def test_resume_skips_complete_and_recomputes_missing(tmp_path):
    job = load_job(write_job(tmp_path))
    run_sweep(job, use_mpi=False)
    out = Path(job.output_dir)
    before = {n: shards.shard_path(out, n).stat().st_mtime_ns for n in ("big", "small")}
    shards.shard_path(out, "mid").unlink()
    res = run_sweep(job, use_mpi=False)
    assert {m.model: m.status for m in res.models} == {"big": "skipped", "mid": "done", "small": "skipped"}
    assert {n: shards.shard_path(out, n).stat().st_mtime_ns for n in ("big", "small")} == before


def test_other_provenance_is_refused_unless_force(tmp_path):
    job = load_job(write_job(tmp_path))
    run_sweep(job, use_mpi=False)
    changed = load_job(write_job(tmp_path, SYN.replace("alpha: 2.0", "alpha: 3.0"), "job2.yaml"))
    with pytest.raises(StoreError, match=r"3 shard\(s\) have other provenance.*steering.alpha: 2.0 != 3.0"):
        run_sweep(changed, use_mpi=False)
    assert plan(changed, changed.output_dir)[0].action == "refuse"
    res = run_sweep(changed, use_mpi=False, force=True)
    assert sorted(m.status for m in res.models) == ["done"] * 3
    st = shards.inspect_shard(shards.shard_path(changed.output_dir, "big"))
    assert st.provenance["job_options"]["steering"]["alpha"] == 3.0


def test_model_revision_change_is_other_provenance(tmp_path):
    job = load_job(write_job(tmp_path))
    run_sweep(job, use_mpi=False)
    job2 = load_job(write_job(tmp_path, SYN.replace("name: mid,", "name: mid, revision: abc123,"), "j2.yaml"))
    rows = {r.model: r for r in plan(job2, job2.output_dir)}
    assert rows["mid"].action == "refuse" and "revision" in rows["mid"].detail
    assert rows["big"].action == "skip"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "incomplete"])
def test_corrupt_shard_detected_reported_recomputed_never_merged(tmp_path, damage):
    job = load_job(write_job(tmp_path))
    run_sweep(job, use_mpi=False)
    out = Path(job.output_dir)
    p = shards.shard_path(out, "mid")
    good = read_results(p)
    data = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        p.write_bytes(b"\0garbage" * 100)
    elif damage == "flip":
        with h5py.File(p, "r+") as f:  # change one number, keep the stored hash
            ds = f["internals/mid/layers/coupling"]
            ds[0] = ds[0] + 1.0
    else:
        with h5py.File(p, "r+") as f:
            f.attrs["complete"] = False
    st = shards.inspect_shard(p)
    assert st.status == ("incomplete" if damage == "incomplete" else "corrupt")
    m = merge_shards(out, tmp_path / "m.h5")
    assert "mid" not in m.merged and m.bad and m.exit_status() == 1
    res = run_sweep(job, use_mpi=False)
    runs = {m.model: m for m in res.models}
    assert runs["mid"].status == "done" and runs["big"].status == "skipped"
    assert list((out / "shards" / "corrupt").glob("mid.*.h5")), "the damaged shard is kept aside"
    again = InternalsResult.from_tree(read_results(p)["internals"]["mid"], where="mid")
    np.testing.assert_array_equal(again.layer_coupling,
                                  InternalsResult.from_tree(good["internals"]["mid"], where="mid").layer_coupling)


def test_failures_recorded_and_others_complete(tmp_path):
    text = SYN + "  - {{id: missing/model, name: gone, params: 2e9}}\n  - {{id: org/x, name: boom, options: {{fail: kaput}}}}\n"
    job = load_job(write_job(tmp_path, text))
    res = run_sweep(job, use_mpi=False)
    runs = {m.model: m for m in res.models}
    assert runs["gone"].status == "failed" and "cannot be found" in runs["gone"].error
    assert runs["boom"].status == "failed" and "kaput" in runs["boom"].error
    assert all(runs[n].status == "done" for n in ("big", "mid", "small"))
    assert res.exit_status() == 1
    man = json.loads((Path(job.output_dir) / "manifest.json").read_text())
    assert man["models"]["gone"]["status"] == "failed" and "cannot be found" in man["models"]["gone"]["error"]
    assert not list((Path(job.output_dir) / "locks").glob("*.lock"))


def test_merge_refuses_mixed_provenance(tmp_path):
    job = load_job(write_job(tmp_path))
    run_sweep(job, use_mpi=False, only=["big"])
    other = load_job(write_job(tmp_path, SYN.replace("alpha: 2.0", "alpha: 9.0"), "j2.yaml"))
    run_sweep(other, use_mpi=False, only=["small"])
    with pytest.raises(StoreError, match="different provenance"):
        merge_shards(job.output_dir, tmp_path / "m.h5")
    m = merge_shards(job.output_dir, tmp_path / "m.h5", allow_mixed=True, expect=["big", "mid", "small"])
    assert sorted(m.merged) == ["big", "small"] and m.missing == ["mid"] and m.exit_status() == 1


def test_index_selects_nth_largest(tmp_path):
    job = load_job(write_job(tmp_path))
    res = run_sweep(job, use_mpi=False, index=1)
    assert [m.model for m in res.models] == ["mid"]
    from cape_hpc.errors import OptionError

    with pytest.raises(OptionError, match="--index 3 is out of range"):
        run_sweep(job, use_mpi=False, index=3)


def test_results_round_trip_and_options_are_provenance(tmp_path):
    """SweepResult, MergeResult (with a bad-shard row) and the stored SweepIndex read back field by
    field; the options objects are stored unchanged as provenance."""
    from roundtrip import assert_roundtrip

    job = load_job(write_job(tmp_path))
    opts = SweepOptions(only=("big", "mid"), use_mpi=False)
    res = run_sweep(job, opts)
    assert res.provenance.options == opts.to_dict() and res.provenance.inputs["job"] == job.sha256
    assert sorted(m.model for m in res.models) == ["big", "mid"]
    assert all(m.error == "" and m.load_seconds != m.load_seconds for m in res.models)  # "" and NaN, never None
    assert_roundtrip(res, tmp_path, "/sweep/run")
    out = Path(job.output_dir)
    shards.shard_path(out, "zz").write_bytes(b"not hdf5")
    m = merge_shards(out, tmp_path / "m.h5", MergeOptions(force=True))
    assert m.provenance.options == {"force": True, "allow_mixed": False}
    assert m.merged == ["big", "mid"] and [b.status for b in m.bad] == ["corrupt"]
    assert_roundtrip(m, tmp_path, "/merge")
    index = SweepIndex.from_tree(read_results(tmp_path / "m.h5", "/sweep"), where="/sweep")
    assert_roundtrip(index, tmp_path, "/sweep")


def test_merge_refuses_a_shard_that_does_not_match_the_schema(tmp_path):
    """A complete, intact shard whose stored internals lack a field is reported (naming the shard,
    group and field) and never merged."""
    job = load_job(write_job(tmp_path))
    run_sweep(job, use_mpi=False)
    out = Path(job.output_dir)
    entry = job.model("mid")
    tree = synthetic_model(entry, job)
    bad = tree["internals"].to_tree()
    del bad["d_model"]
    p = shards.shard_path(out, "mid")
    p.unlink()
    shards.write_shard(out, entry, shards.expected_provenance(entry, job), {"internals": bad})
    assert shards.inspect_shard(p).status == "complete"
    m = merge_shards(out, tmp_path / "m.h5")
    assert m.merged == ["big", "small"] and m.exit_status() == 1
    (b,), = [m.bad]
    assert b.status == "schema" and "/internals/mid" in b.detail and "'d_model'" in b.detail


def test_sweep_options_validate():
    from cape_hpc.errors import OptionError

    with pytest.raises(OptionError, match="--on-term.*'later' is not one of drop, finish"):
        SweepOptions(on_term="later")
    with pytest.raises(OptionError, match="--index.*>= 0"):
        SweepOptions(index=-1)


# ------------------------------------------------------------------------------------- locks


def test_lock_is_exclusive_and_stale_lock_taken_over(tmp_path):
    a = shards.ModelLock(tmp_path, "m")
    a.acquire()
    b = shards.ModelLock(tmp_path, "m")
    with pytest.raises(shards.LockBusy):
        b.acquire()
    a.release()
    b.acquire()
    b.release()
    # a lock left by a dead process on this host is stale
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / "locks" / "m.lock").write_text(json.dumps({"host": shards.HOST, "pid": pid, "nonce": "x"}))
    c = shards.ModelLock(tmp_path, "m")
    c.acquire()
    assert c.took_over["pid"] == pid
    assert json.loads((tmp_path / "locks" / "m.lock").read_text())["pid"] == os.getpid()
    c.release()
    assert not (tmp_path / "locks" / "m.lock").exists()


def test_rerun_removes_a_stale_lock_beside_a_complete_shard(tmp_path):
    """A rank killed after publishing a shard and before releasing its lock leaves the lock: the rerun
    skips the model (complete shard) and removes that lock; a live lock is left alone."""
    job = load_job(write_job(tmp_path))
    run_sweep(job, use_mpi=False)
    out = Path(job.output_dir)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    (out / "locks" / "big.lock").write_text(json.dumps({"host": shards.HOST, "pid": dead, "nonce": "x"}))
    live = {"host": shards.HOST, "pid": os.getpid(), "start": shards._proc_start(os.getpid()), "nonce": "y"}
    (out / "locks" / "mid.lock").write_text(json.dumps(live))
    res = run_sweep(job, use_mpi=False)
    runs = {m.model: m for m in res.models}
    assert {n: m.status for n, m in runs.items()} == {"big": "skipped", "mid": "skipped", "small": "skipped"}
    assert not (out / "locks" / "big.lock").exists() and f"removed the stale lock of {shards.HOST}:{dead}" in runs["big"].note
    assert json.loads((out / "locks" / "mid.lock").read_text()) == live and "stale" not in runs["mid"].note


def test_remote_lock_is_stale_only_after_heartbeat_timeout(tmp_path):
    p = tmp_path / "locks" / "m.lock"
    p.parent.mkdir()
    p.write_text(json.dumps({"host": "another-node", "pid": 1, "nonce": "y"}))
    with pytest.raises(shards.LockBusy):
        shards.ModelLock(tmp_path, "m").acquire()
    old = p.stat().st_mtime - shards.REMOTE_STALE_S - 5
    os.utime(p, (old, old))
    lk = shards.ModelLock(tmp_path, "m")
    lk.acquire()
    assert lk.took_over["host"] == "another-node"
    lk.release()


def test_write_shard_never_overwrites_a_published_shard(tmp_path):
    job = load_job(write_job(tmp_path))
    e = job.model("big")
    prov = shards.expected_provenance(e, job)
    tree = synthetic_model(e, job)
    assert shards.write_shard(tmp_path, e, prov, tree)[0] == "written"
    ino = shards.shard_path(tmp_path, "big").stat().st_ino
    assert shards.write_shard(tmp_path, e, prov, tree)[0] == "exists"
    assert shards.shard_path(tmp_path, "big").stat().st_ino == ino
    assert not list((tmp_path / "shards").glob(".*.tmp.h5"))


# ------------------------------------------------------------------------------------- scheduler, devices


def test_scheduler_defers_busy_models_and_stops():
    from cape_hpc.sweep.runner import ModelRun, Scheduler

    s = Scheduler(["a", "b"], retry_s=0.05)
    assert s.next() == "a" and s.next() == "b"
    s.done(ModelRun("a", "busy"))           # locked by another run: offered again later
    s.done(ModelRun("b", "done"))
    t = s.next()
    assert isinstance(t, tuple) and t[0] == "wait" and 0 < t[1] <= 0.05
    import time

    time.sleep(0.06)
    assert s.next() == "a"
    s.done(ModelRun("a", "skipped"))
    assert s.next() is None and set(s.results) == {"a", "b"}
    s2 = Scheduler(["x", "y"])
    s2.stop()
    assert s2.next() is None


def test_one_gpu_per_rank(monkeypatch):
    import torch

    from cape_hpc.sweep import work

    job = parse_job({"models": [{"id": "a"}]})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for k in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMI_LOCAL_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert work._device(job) == "cuda:0"
    monkeypatch.setenv("SLURM_LOCALID", "5")
    assert work._device(job) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert work._device(job) == "cpu"
    job.work_options["device"] = "cuda"
    from cape_hpc.errors import OptionError

    with pytest.raises(OptionError, match="no CUDA device"):
        work._device(job)


def test_job_extraction_keys_reach_the_extraction_options(tmp_path):
    p = tmp_path / "j.yaml"
    p.write_text("internals: {n_blocks: 4, token_budget: 512, pair_budget_mb: 1, d_rep_mode: sketch, "
                 "sets: [reasoning, truthfulness]}\nmodels: [{id: tiny-llama, batch_size: 3}]\n")
    opts = load_job(p).models[0].extract
    assert (opts.n_blocks, opts.token_budget, opts.pair_budget_mb, opts.d_rep_mode, opts.sets, opts.batch_size) == \
        (4, 512, 1.0, "sketch", ("reasoning", "truthfulness"), 3)
    p.write_text("internals: {n_blocks: 0}\nmodels: [{id: tiny-llama}]\n")
    with pytest.raises(DataError, match=r"j.yaml: internals.n_blocks: must be >= 1, got 0"):
        load_job(p)
    p.write_text("internals: {keep_pooled: x.h5}\nmodels: [{id: tiny-llama}]\n")
    with pytest.raises(DataError, match=r"keep_pooled"):
        load_job(p)
