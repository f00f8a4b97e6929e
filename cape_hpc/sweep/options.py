"""Options of ``run_sweep`` and ``merge_shards``, declared once (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.options import Options, option

__all__ = ["SweepOptions", "MergeOptions", "ON_TERM"]

ON_TERM = ("drop", "finish")


@dataclass(frozen=True)
class SweepOptions(Options):
    """How a sweep runs: where, which models, what to do with existing shards and on SIGTERM."""

    out_dir: str | None = option(None, help="results directory (none: the job's output_dir)", metavar="DIR")
    force: bool = option(False, help="recompute shards whose provenance differs (otherwise: refuse to mix them)")
    only: tuple[str, ...] | None = option(None, help="run only these models", metavar="MODEL")
    index: int | None = option(None, help="run only the N-th model in largest-first order (0-based; for Slurm "
                                          "arrays)", minimum=0, metavar="N")
    on_term: str = option("drop", help="on SIGTERM, drop the model being computed or finish it", choices=ON_TERM)
    use_mpi: bool | None = option(None, help="require MPI (--mpi) or never initialise it (--no-mpi); none: use "
                                             "it when launched by mpiexec/srun", flag="--mpi")


@dataclass(frozen=True)
class MergeOptions(Options):
    """How a results directory's shards are merged into one file."""

    force: bool = option(False, help="overwrite an existing output with different content")
    allow_mixed: bool = option(False, help="merge shards of different job provenance (prompt sets, options, code)")
