"""Sweeps over many models: YAML job specs, the MPI master-worker runner, per-model HDF5 shards,
resume, and merge into one results file.

    job = load_job("jobs/smoke.yaml")              # validated; errors name the file and key
    res = run_sweep(job)                           # under mpiexec/srun: every rank calls this
    merge_shards(job.output_dir, "results.h5")     # /internals/<model>, /steering/<model>/<run>

See runner.py (scheduling, SIGTERM), shards.py (provenance, validation, locks, manifest) and
slurm/README.md (submitting, watching, resuming).  Names are loaded lazily: ``cape_hpc.sweep.options``
and ``.gpus`` need no h5py, pandas or torch.
"""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "MergeResult": "merge", "merge_shards": "merge",
    "PlanRow": "runner", "SweepResult": "runner", "plan": "runner", "run_sweep": "runner",
    "JobSpec": "spec", "ModelEntry": "spec", "load_job": "spec", "parse_job": "spec",
}
__all__ = ["JobSpec", "ModelEntry", "load_job", "parse_job", "plan", "run_sweep", "PlanRow", "SweepResult",
           "merge_shards", "MergeResult"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
