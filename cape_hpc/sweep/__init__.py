"""Sweeps over many models: YAML job specs, the MPI master-worker runner, per-model HDF5 shards,
resume, and merge into one results file.

    job = load_job("jobs/smoke.yaml")              # validated; errors name the file and key
    res = run_sweep(job)                           # under mpiexec/srun: every rank calls this
    merge_shards(job.output_dir, "results.h5")     # /internals/<model>, /steering/<model>/<run>

See runner.py (scheduling, SIGTERM), shards.py (provenance, validation, locks, manifest) and
slurm/README.md (submitting, watching, resuming).
"""
from cape_hpc.sweep.merge import MergeResult, merge_shards
from cape_hpc.sweep.runner import PlanRow, SweepResult, plan, run_sweep
from cape_hpc.sweep.spec import JobSpec, ModelEntry, load_job, parse_job

__all__ = ["JobSpec", "ModelEntry", "load_job", "parse_job", "plan", "run_sweep", "PlanRow", "SweepResult",
           "merge_shards", "MergeResult"]
