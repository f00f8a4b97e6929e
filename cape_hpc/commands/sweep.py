"""`cape sweep JOB` (run or resume a multi-model sweep, MPI-aware) and `cape merge DIR -o FILE`."""
from __future__ import annotations

import argparse
import math
import sys

from cape_hpc.commands.common import add_progress_arg, progress_shown
from cape_hpc.sweep.gpus import GpuPlanOptions
from cape_hpc.sweep.options import MergeOptions, SweepOptions

def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run or resume a sweep over many models (MPI master-worker, one shard per model)",
        description="Run the models of a YAML job file, largest first, one HDF5 shard per model. Under "
                    "mpiexec/srun, rank 0 hands models out to whichever rank is free. Rerunning resumes: "
                    "complete shards with the same provenance are skipped, corrupt ones recomputed. Exit "
                    "status 1 if a model failed, 143 if stopped by SIGTERM.")
    p.add_argument("job", metavar="JOB.yaml")
    SweepOptions.add_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (models, order, estimated memory, shard state); load nothing")
    p.add_argument("--count", action="store_true", help="print the number of models and exit")
    GpuPlanOptions.add_arguments(p)
    p.add_argument("--gpus-per-task", action="store_true",
                   help="print the GPUs one rank needs (the largest selected model's, cape_hpc.sweep.gpus) and exit")
    p.add_argument("--merge", metavar="FILE.h5", help="after the sweep, merge the shards into this file (an "
                                                      "existing file with other content is kept unless --merge-force)")
    p.add_argument("--merge-force", action="store_true",
                   help="let --merge overwrite an existing file with different content")
    p.add_argument("--json", action="store_true", help="print the summary (or plan) as JSON")
    add_progress_arg(p)
    p.set_defaults(func=run_sweep_cmd)

    m = sub.add_parser("merge", help="merge a sweep's shards into one results file",
                       description="Copy every complete shard of DIR/shards into one HDF5 file "
                                   "(/internals/<model>, /steering/<model>/<run>, /sweep). Corrupt or "
                                   "incomplete shards are reported and never merged (exit status 1).")
    m.add_argument("results_dir", metavar="DIR")
    m.add_argument("-o", "--out", required=True, metavar="FILE.h5")
    m.add_argument("--job", metavar="JOB.yaml", help="also report the job's models that have no complete shard")
    MergeOptions.add_arguments(m)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=run_merge_cmd)


def _gpu_plan(job, opts: SweepOptions, args: argparse.Namespace) -> dict:
    """GPUs of each selected model and per rank (``cape_hpc.sweep.gpus.plan_job``), for the dry run."""
    from cape_hpc.sweep.gpus import gpus_per_rank, plan_job
    from cape_hpc.sweep.runner import select_models

    gopts = GpuPlanOptions.from_args(args)
    need = plan_job(job, select_models(job, opts.only, opts.index), gopts)
    return {"gpus": {g.model: g.gpus for g in need}, "gpus_per_rank": gpus_per_rank(need),
            "gpu_memory": gopts.gpu_memory}


def _gb(b: float) -> float:
    return b if math.isnan(b) else round(b / 1e9, 2)


def run_sweep_cmd(args: argparse.Namespace) -> int:
    from cape_hpc.commands.common import emit_json, print_table
    from cape_hpc.sweep.runner import job_work, plan, select_models
    from cape_hpc.sweep.spec import load_job

    opts = SweepOptions.from_args(args)
    job = load_job(args.job)
    if args.count:
        print(len(select_models(job, opts.only, None)))
        return 0
    if args.gpus_per_task:
        from cape_hpc.sweep.gpus import gpus_per_rank, plan_job

        print(gpus_per_rank(plan_job(job, select_models(job, opts.only, opts.index), GpuPlanOptions.from_args(args))))
        return 0
    out_dir = opts.out_dir or job.output_dir
    if args.merge is not None:  # before any model runs: the merge target must be writable
        from cape_hpc.io.store import check_target

        check_target(args.merge, "--merge")
    if args.dry_run:
        from pathlib import Path

        from cape_hpc.errors import StoreError
        from cape_hpc.sweep.spec import check_prompt_files

        check_prompt_files(job)
        job_work(job)                                # the work function imports (a typo is one line now)
        if Path(out_dir).exists() and not Path(out_dir).is_dir():
            raise StoreError(f"option '--out-dir': {out_dir} is a file, not a results folder")
        rows = plan(job, out_dir, force=opts.force, models=select_models(job, opts.only, opts.index))
        gpus = _gpu_plan(job, opts, args)            # refuses a model that cannot fit a rank
        if args.json:
            emit_json({"job": job.name, "out_dir": out_dir, "work": job.work_target, "plan": rows, **gpus})
        else:
            print_table([(r.order, r.model, r.id, r.params / 1e9, r.dtype, _gb(r.est_memory_bytes),
                          gpus["gpus"][r.model], r.shard, r.action) for r in rows],
                        ["order", "model", "id", "params_B", "dtype", "est_mem_GB", "gpus", "shard", "action"],
                        title=f"sweep plan: {job.name} ({len(rows)} models, largest first) -> {out_dir}")
            print(f"\nGPUs per rank: {gpus['gpus_per_rank']} (the largest model's, GPUs of {gpus['gpu_memory']} filled "
                  f"to 90 %): sbatch --gpus-per-task={gpus['gpus_per_rank']}")
            known = [r.est_memory_bytes for r in rows if not math.isnan(r.est_memory_bytes)]
            if known:
                print(f"\nlargest estimated peak memory: {_gb(max(known))} GB per rank "
                      f"(weights + one batch of activations + runtime); nothing was downloaded")
        return 0

    res = _run_shown(job, opts, args)
    if res.ranks > 1 and not res.models:  # worker ranks: rank 0 prints
        return res.exit_status() if res.interrupted else 0
    status = res.exit_status()
    if args.merge and not res.interrupted:
        from cape_hpc.sweep.merge import merge_shards

        from cape_hpc.errors import StoreError

        try:
            mres = merge_shards(out_dir, args.merge, MergeOptions(force=args.merge_force),
                                expect=[m.name for m in select_models(job, opts.only, opts.index)])
        except StoreError as exc:  # the store names its own --force; here the flag is --merge-force
            raise StoreError(str(exc).replace("pass --force", "pass --merge-force")) from None
        status = status or mres.exit_status()
    if args.json:
        emit_json(res)
    else:
        print_table([(m.model, m.status, round(m.seconds, 2), m.rank, m.error or m.note) for m in res.models],
                    ["model", "status", "seconds", "rank", "error / note"],
                    title=f"sweep {res.job}: {res.ranks} rank(s), {res.wall_seconds:.1f} s wall -> {res.out_dir}")
        print(f"busy s per rank: {[round(x, 1) for x in res.busy_seconds]}; waiting for the master: "
              f"{[round(x, 2) for x in res.wait_seconds]}; idle (wall - busy): {[round(x, 1) for x in res.idle_seconds]}")
        if res.failed:
            print(f"{len(res.failed)} model(s) failed: {', '.join(m.model for m in res.failed)} "
                  f"(see {res.out_dir}/manifest.json)", file=sys.stderr)
    return status


def _run_shown(job, opts: SweepOptions, args: argparse.Namespace):
    """``run_sweep`` with the progress ``--progress`` asks for on this rank's stderr: rank 0 the whole
    job (models done, models per second, time left), every rank its models' steps, each bar led by
    ``rank R:`` under MPI (docs: README "Progress")."""
    from cape_hpc.sweep.mpi import rank_and_size
    from cape_hpc.sweep.runner import run_sweep

    rank, size = rank_and_size(opts.use_mpi)
    with progress_shown(args, prefix=f"rank {rank}: " if size > 1 else ""):
        return run_sweep(job, opts)


def run_merge_cmd(args: argparse.Namespace) -> int:
    from cape_hpc.commands.common import emit_json
    from cape_hpc.sweep.merge import merge_shards

    expect = None
    if args.job:
        from cape_hpc.sweep.spec import load_job

        expect = [m.name for m in load_job(args.job).models]
    res = merge_shards(args.results_dir, args.out, MergeOptions.from_args(args), expect=expect)
    if args.json:
        emit_json(res)
    else:
        print(f"merged {len(res.merged)} model(s) into {res.output}: {', '.join(res.merged)}")
    for b in res.bad:
        print(f"cape merge: {b.status} shard not merged: {b.shard} ({b.detail})", file=sys.stderr)
    if res.missing:
        print(f"cape merge: no complete shard for: {', '.join(res.missing)}", file=sys.stderr)
    return res.exit_status()
