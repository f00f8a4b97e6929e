"""The sweep runner: master-worker over models, one HDF5 shard per model, resumable (MPI in
``sweep.mpi``, the model queue in ``sweep.scheduler``).

Under MPI (mpi4py, launched by mpiexec/srun), rank 0 plans the run and hands models out one at a
time, largest first, to whichever rank asks; rank 0 computes too (its dispatcher runs in a thread
that polls, so no core is spent spinning).  With one rank, or without MPI, the same scheduler runs
in one process.  Each model:

1. takes its lock (``locks/<model>.lock``; a model locked by a live process elsewhere is deferred and
   offered again later, so two runs of the same job share the work instead of duplicating it),
2. re-checks its shard (another run may have finished it meanwhile),
3. runs the work function ``process_model(entry, job) -> {"internals": tree, "steering": {run: tree},
   "info": {...}}``,
4. writes the shard under a temporary name and publishes it with link(2) (exclusive: a shard is
   never written twice) and releases the lock.

A failure is recorded in the manifest with its error and the sweep goes on.  SIGTERM stops handing
out models; the model being computed is dropped cleanly (``on_term='drop'``, the default: its
temporary file is removed, its lock released) or finished (``on_term='finish'``).

Progress (``cape_hpc.progress``): rank 0, which hands the models out, reports the whole job as one
task (models done of the models to compute, models per second, time left); each model's work
reports its own steps on the rank that computes it (``sweep.work``).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cape_hpc import progress
from cape_hpc.errors import OptionError, StoreError
from cape_hpc.io.provenance import thread_counts, thread_inputs
from cape_hpc.io.store import check_target
from cape_hpc.schema import Provenance, Result
from cape_hpc.sweep import shards
from cape_hpc.sweep.mpi import (TAG_ASSIGN, TAG_BYE, TAG_REQ, dispatch, gather_stats, get_comm, local_ranks,
                                recv_polling, set_thread_budget)
from cape_hpc.sweep.options import SweepOptions
from cape_hpc.sweep.scheduler import Scheduler
from cape_hpc.sweep.spec import JobSpec, ModelEntry, check_prompt_files, estimate_memory_bytes, order_models

log = logging.getLogger(__name__)

EXIT_FAILED, EXIT_INTERRUPTED = 1, 143


class SweepInterrupted(Exception):
    """Raised inside the work function by the SIGTERM handler (on_term='drop')."""


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class ModelRun:
    """One model of a sweep run (a row: missing text is "", a missing number NaN)."""

    model: str
    status: str                 # done | skipped | failed | interrupted | busy
    seconds: float = 0.0
    rank: int = 0
    host: str = shards.HOST
    error: str = ""
    shard: str = ""
    note: str = ""
    load_seconds: float = math.nan   # from the work function's info (model loading)


@dataclass
class SweepResult(Result):
    """What one ``run_sweep`` did, model by model, and how busy each rank was."""

    job: str
    out_dir: str
    ranks: int
    models: list[ModelRun]
    wall_seconds: float
    busy_seconds: list[float]            # per rank: time inside models
    wait_seconds: list[float]            # per rank: time waiting for an assignment from the master
    idle_seconds: list[float]            # per rank: wall - busy (waits + the tail after its last model)
    interrupted: bool
    provenance: Provenance

    @property
    def failed(self) -> list[ModelRun]:
        return [m for m in self.models if m.status == "failed"]

    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed or any(m.status == "busy" for m in self.models) else 0


@dataclass
class PlanRow:
    """One model of ``plan`` (a row: unknown sizes are NaN)."""

    order: int
    model: str
    id: str
    params: float               # NaN when the job does not give it
    dtype: str
    est_memory_bytes: float     # NaN when params are unknown
    shard: str                  # missing | complete | corrupt | incomplete | mismatch
    action: str                 # run | skip | recompute | refuse
    detail: str = ""


# ---------------------------------------------------------------------------------------------
# planning


def plan(job: JobSpec, out_dir: str | os.PathLike, *, force: bool = False, models: list[ModelEntry] | None = None,
         inspect: bool = True) -> list[PlanRow]:
    """Order the models and classify each shard; never loads a model."""
    rows = []
    prompts_sha = shards.prompt_hashes(job) if inspect else None
    for i, m in enumerate(order_models(models if models is not None else job.models)):
        mem = estimate_memory_bytes(m, job)
        row = PlanRow(i, m.name, m.id, math.nan if m.params is None else float(m.params), m.load.dtype,
                      math.nan if mem is None else float(mem), "missing", "run")
        if inspect:
            st = shards.inspect_shard(shards.shard_path(out_dir, m.name))
            row.shard = st.status
            if st.status == "complete":
                want = shards.expected_provenance(m, job, prompts_sha)
                if st.provenance == want:
                    row.action = "skip"
                else:
                    row.shard = "mismatch"
                    row.action = "recompute" if force else "refuse"
                    row.detail = "; ".join(shards.provenance_diff(st.provenance or {}, want)[:4])
            elif st.status in ("corrupt", "incomplete"):
                row.action = "recompute"
                row.detail = st.detail
        rows.append(row)
    return rows


def select_models(job: JobSpec, only: tuple[str, ...] | list[str] | None = None,
                  index: int | None = None) -> list[ModelEntry]:
    models = job.models
    if only:
        models = [job.model(n) for n in only]
    if index is not None:
        ordered = order_models(models)
        if not 0 <= index < len(ordered):
            raise OptionError(f"--index {index} is out of range: the job has {len(ordered)} models (0..{len(ordered) - 1})")
        models = [ordered[index]]
    return models


# ---------------------------------------------------------------------------------------------
# one model


def resolve_work(target: str, folder: str | os.PathLike | None = None) -> Callable[[ModelEntry, JobSpec], dict]:
    """The work function ``module:function`` (imported: a job file is a program, see ``spec``).
    A module not found on the Python path is looked for in ``folder`` (the job file's): it is on
    ``sys.path`` only during the import, after every other entry (it never shadows an installed module)."""
    mod, _, fn = target.partition(":")
    try:
        with _searching(folder):
            func = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as exc:
        raise OptionError(f"work function {target!r} cannot be imported: {exc}") from None
    if not callable(func):
        raise OptionError(f"work function {target!r} is not callable")
    return func


def job_work(job: JobSpec) -> Callable[[ModelEntry, JobSpec], dict]:
    """The job's work function; ``module:function`` also searches the job file's folder (``resolve_work``)."""
    return resolve_work(job.work_target, Path(job.path).parent if os.path.isfile(job.path) else None)


@contextlib.contextmanager
def _searching(folder: str | os.PathLike | None):
    """``folder`` at the end of ``sys.path`` inside the block (only when it is not there already)."""
    entry = os.path.abspath(folder) if folder is not None else None
    added = entry is not None and entry not in sys.path
    if added:
        sys.path.append(entry)
        importlib.invalidate_caches()
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


class _TermState:
    """SIGTERM handling shared by the worker loop and the signal handler."""

    def __init__(self, on_term: str):
        self.on_term = on_term
        self.requested = threading.Event()
        self.in_compute = False
        self.sched: Scheduler | None = None

    def handler(self, signum, frame):
        first = not self.requested.is_set()
        self.requested.set()
        if self.sched is not None:
            self.sched.stop()
        log.warning("signal %d: no new models%s", signum,
                    "; dropping the current one" if self.in_compute and self.on_term == "drop" else "")
        if first and self.in_compute and self.on_term == "drop":
            raise SweepInterrupted(f"interrupted by signal {signum}")


def run_one(entry: ModelEntry, job: JobSpec, out_dir: Path, work: Callable, *, force: bool, rank: int,
            run_id: str, term: _TermState, prompts_sha: dict) -> ModelRun:
    t0 = time.perf_counter()
    run = ModelRun(entry.name, "failed", rank=rank)
    want = shards.expected_provenance(entry, job, prompts_sha)
    lock = shards.ModelLock(out_dir, entry.name, run_id)
    try:
        lock.acquire()
    except shards.LockBusy as busy:
        run.status, run.note = "busy", f"locked by {busy.holder.get('host')}:{busy.holder.get('pid')}"
        run.seconds = time.perf_counter() - t0
        return run
    try:
        if lock.took_over:
            run.note = f"took over stale lock of {lock.took_over.get('host')}:{lock.took_over.get('pid')}"
        st = shards.inspect_shard(shards.shard_path(out_dir, entry.name))
        if st.status == "complete" and st.provenance == want and not force:
            run.status, run.shard = "skipped", str(st.path)
            run.note = (run.note + "; " if run.note else "") + "completed by another run"
            return run
        if st.status == "complete" and st.provenance != want and not force:
            run.error = "a shard with other provenance exists (pass --force to recompute): " + \
                "; ".join(shards.provenance_diff(st.provenance or {}, want)[:4])
            return run
        if st.status in ("corrupt", "incomplete"):
            moved = shards.quarantine(st.path)
            run.note = f"{st.status} shard ({st.detail}) moved to {moved} and recomputed"
            log.warning("%s: %s", entry.name, run.note)
        term.in_compute = True
        try:
            tree = work(entry, job)
            shards.failpoint("after_work", entry.name)
        finally:
            term.in_compute = False
        ls = (tree.get("info") or {}).get("load_seconds")
        run.load_seconds = math.nan if ls is None else float(ls)
        threads = thread_counts()
        outcome, path = shards.write_shard(out_dir, entry, want, tree, force=force or st.status == "complete",
                                       info={**(tree.get("info") or {}), "run_id": run_id, "rank": rank,
                                             "host": shards.HOST,
                                             "threads": ",".join(f"{k}={v}" for k, v in threads.items())})
        run.shard = str(path)
        run.status = "done" if outcome == "written" else "skipped"
        if outcome == "exists":
            run.note = "another run published this shard first; ours was dropped"
    except SweepInterrupted as exc:
        run.status, run.error = "interrupted", str(exc)
    except Exception as exc:  # a model that fails is recorded; the sweep goes on
        run.status = "failed"
        run.error = f"{type(exc).__name__}: {exc}"
        log.warning("%s failed: %s", entry.name, run.error)
        log.debug("%s", traceback.format_exc())
    finally:
        lock.release()
        run.seconds = time.perf_counter() - t0
    return run


# ---------------------------------------------------------------------------------------------
# the sweep


def record_in_manifest(out_dir: Path, run: ModelRun, run_id: str) -> None:
    """One model's outcome in ``manifest.json`` (a skip keeps the entry of the run that did it)."""
    with shards.locked_manifest(out_dir) as man:
        prev = man["models"].get(run.model, {})
        entry = {"status": run.status, "seconds": round(run.seconds, 3),
                 "load_seconds": None if math.isnan(run.load_seconds) else run.load_seconds, "rank": run.rank,
                 "host": run.host, "error": run.error or None, "note": run.note or None, "shard": run.shard or None,
                 "run_id": run_id, "finished": _now()}
        if run.status == "skipped" and prev.get("status") == "done":
            entry = {**prev, "last_checked": entry["finished"], "last_run_id": run_id}
        man["models"][run.model] = entry


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class SweepRun:
    """What the steps of one ``run_sweep`` call share (on one rank)."""

    job: JobSpec
    opts: SweepOptions
    out: Path
    comm: Any                            # COMM_WORLD, or None in one process
    rank: int
    size: int
    models: dict[str, ModelEntry]        # the selected models by name
    term: _TermState
    run_id: str = ""
    prompts_sha: dict[str, str] = field(default_factory=dict)
    work: Callable | None = None

    def run_model(self, name: str) -> ModelRun:
        return run_one(self.models[name], self.job, self.out, self.work, force=self.opts.force, rank=self.rank,
                       run_id=self.run_id, term=self.term, prompts_sha=self.prompts_sha)


def run_sweep(job: JobSpec, opts: SweepOptions | None = None, *, comm=None, **changes: Any) -> SweepResult:
    """Run (or resume) a sweep; every rank calls this.  ``opts`` (defaults when None), any field
    overridden by keyword (``force=True``; validated by :class:`SweepOptions`).  Returns the summary
    on every rank (rank 0's is complete; workers get the per-rank times)."""
    opts = opts or SweepOptions()
    if changes:
        opts = opts.replace(**changes)
    comm = comm if comm is not None else get_comm(opts.use_mpi)
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    t_start = time.perf_counter()
    models = select_models(job, opts.only, opts.index)
    run = SweepRun(job, opts, Path(opts.out_dir or job.output_dir), comm, rank, size, {m.name: m for m in models},
                   _TermState(opts.on_term))
    header = share_plan(run, models)
    run.run_id, run.prompts_sha = header["run_id"], header["prompts_sha"]
    set_thread_budget(local_ranks(comm))
    run.work = job_work(job)
    with signals_handled_by(run.term):
        try:
            if rank == 0:
                runs, stats = run_master(run, header["rows"])
            else:
                runs, stats = [], run_worker(run)
        except Exception:
            if comm is not None and size > 1:  # never leave the other ranks waiting for this one
                log.exception("rank %d: unexpected error; aborting the MPI job", rank)
                comm.Abort(2)
            raise
    return sweep_result(run, runs, stats, time.perf_counter() - t_start)


def share_plan(run: SweepRun, models: list[ModelEntry]) -> dict[str, Any]:
    """Rank 0 checks the results folder and the prompt files and plans; every rank gets the verdict
    (a refusal is raised on every rank): {"rows": [(model, action)], "prompts_sha", "run_id"}."""
    header: dict[str, Any] | None = None
    if run.rank == 0:
        try:
            header = {"ok": True, **plan_run(run.job, run.out, run.opts.force, models)}
        except Exception as exc:
            header = {"ok": False, "error": exc}
    if run.comm is not None:
        header = run.comm.bcast(header, root=0)
    if not header["ok"]:
        raise header["error"]
    return header


def plan_run(job: JobSpec, out: Path, force: bool, models: list[ModelEntry]) -> dict[str, Any]:
    """Create the results folder (checked writable), check the prompt files, drop stale temporaries, classify every shard;
    StoreError when a shard of other provenance would be mixed in."""
    if out.exists() and not out.is_dir():
        raise StoreError(f"option '--out-dir': {out} is a file, not a results folder")
    check_target(out / "manifest.json", "--out-dir")      # the folder is created, and a file can be written in it
    check_prompt_files(job)
    shards.clean_stale_tmp(out)
    rows = plan(job, out, force=force, models=models)
    refused = [r for r in rows if r.action == "refuse"]
    if refused:
        raise StoreError(f"{out}: {len(refused)} shard(s) have other provenance and are not mixed in (pass --force to "
                         f"recompute them): " + "; ".join(f"{r.model} ({r.detail})" for r in refused[:5]))
    return {"rows": [(r.model, r.action) for r in rows], "prompts_sha": shards.prompt_hashes(job), "run_id": _run_id()}


@contextlib.contextmanager
def signals_handled_by(term: _TermState):
    """SIGTERM and SIGINT go to ``term`` inside the block (main thread only), the old handlers after."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            old[s] = signal.signal(s, term.handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _skipped(out: Path, name: str) -> ModelRun:
    """A model whose complete shard has the same provenance; a stale lock left beside it (its rank was
    killed between publishing and releasing) is removed."""
    run = ModelRun(name, "skipped", note="complete shard with the same provenance",
                   shard=str(shards.shard_path(out, name)))
    stale = shards.clear_stale_lock(out, name)
    if stale:
        run.note += f"; removed the stale lock of {stale.get('host')}:{stale.get('pid')}"
    return run


def run_master(run: SweepRun, rows: list[tuple[str, str]]) -> tuple[list[ModelRun], tuple]:
    """Rank 0: record the run, hand the models out (a dispatcher thread serves the other ranks) and
    compute too; returns every model's outcome and the per-rank (busy, wait) seconds."""
    with shards.locked_manifest(run.out) as man:
        man["job"] = {"name": run.job.name, "path": run.job.path, "sha256": run.job.sha256}
        man["runs"][run.run_id] = {"started": _now(), "ranks": run.size, "host": shards.HOST, "pid": os.getpid(),
                                   "argv": " ".join(sys.argv)}
    todo = [name for name, action in rows if action != "skip"]
    runs = [_skipped(run.out, name) for name, action in rows if action == "skip"]
    sched = Scheduler(todo)
    run.term.sched = sched
    if run.term.requested.is_set():
        sched.stop()

    counted = threading.Lock()   # results arrive on the dispatcher thread and on this one

    with progress.task(f"sweep {run.job.name}", total=len(todo), unit="model") as advance:
        def on_result(r: ModelRun) -> None:
            sched.done(r)
            if r.status != "busy":
                record_in_manifest(run.out, r, run.run_id)
                with counted:
                    advance(1)

        dispatcher = None
        if run.size > 1:
            dispatcher = threading.Thread(target=dispatch, args=(run.comm, sched, on_result, run.size), daemon=True)
            dispatcher.start()
        busy, wait = compute_locally(run, sched, on_result)
        if dispatcher is not None:
            dispatcher.join()
    runs += list(sched.results.values())
    runs += [ModelRun(name, "interrupted", note="not started (stopped by a signal)")
             for name in todo if name not in sched.results]
    stats = gather_stats(run.comm, busy, wait)
    for d in range(1, run.size):
        run.comm.send(stats, dest=d, tag=TAG_BYE)
    return runs, stats


def compute_locally(run: SweepRun, sched: Scheduler, on_result: Callable[[ModelRun], None]) -> tuple[float, float]:
    """Rank 0's own worker: take models from the scheduler until it is empty; (busy, wait) seconds."""
    busy = wait = 0.0
    while True:
        task = sched.next()
        if task is None:
            return busy, wait
        if isinstance(task, tuple):
            t0 = time.perf_counter()
            time.sleep(min(task[1], 1.0))
            wait += time.perf_counter() - t0
            continue
        r = run.run_model(task)
        busy += r.seconds
        on_result(r)


def run_worker(run: SweepRun) -> tuple:
    """A rank > 0: ask rank 0 for a model (sending the last outcome), compute it, until told to stop;
    returns the per-rank (busy, wait) seconds rank 0 sends back."""
    busy = wait = 0.0
    result = None
    while True:
        t0 = time.perf_counter()
        req = run.comm.isend({"rank": run.rank, "result": result, "stopping": run.term.requested.is_set()},
                             dest=0, tag=TAG_REQ)
        task = recv_polling(run.comm, 0, TAG_ASSIGN)
        req.wait()
        wait += time.perf_counter() - t0
        result = None
        if task is None:
            break
        if isinstance(task, tuple):
            time.sleep(min(task[1], 1.0))
            continue
        result = run.run_model(task)
        busy += result.seconds
    gather_stats(run.comm, busy, wait)
    return recv_polling(run.comm, 0, TAG_BYE)


def sweep_result(run: SweepRun, runs: list[ModelRun], stats: tuple, wall: float) -> SweepResult:
    """The summary (rank 0: every model, and the run's entry in the manifest completed)."""
    job, busy, wait = run.job, list(stats[0]), list(stats[1])
    interrupted = run.term.requested.is_set()
    prov = _provenance(job, run.opts, run.prompts_sha)
    if run.rank != 0:
        return SweepResult(job.name, str(run.out), run.size, [], wall, busy, wait, [], interrupted, prov)
    idle = [max(0.0, wall - x) for x in busy]
    res = SweepResult(job.name, str(run.out), run.size, sorted(runs, key=lambda r: r.model), wall, busy, wait, idle,
                      interrupted, prov)
    with shards.locked_manifest(run.out) as man:
        man["runs"][run.run_id].update(
            finished=_now(), wall_seconds=round(wall, 3), busy_seconds=[round(x, 3) for x in busy],
            wait_seconds=[round(x, 3) for x in wait], interrupted=interrupted,
            counts={s: sum(r.status == s for r in runs) for s in ("done", "skipped", "failed", "interrupted", "busy")})
    return res


def _provenance(job: JobSpec, opts: SweepOptions, prompts_sha: dict) -> Provenance:
    return Provenance("cape_hpc.sweep.run_sweep", opts.to_dict(),
                      inputs={"job": job.sha256, **{f"prompts_{k}": v for k, v in prompts_sha.items()},
                              **thread_inputs()})


def _run_id() -> str:
    base = f"{time.strftime('%Y%m%dT%H%M%S')}-{shards.HOST}-{os.getpid()}"
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}-{base}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm{os.environ['SLURM_JOB_ID']}-{base}"
    return base
