"""Options of ``run_sweep`` and ``merge_shards``, and of a job file's own keys, declared once (torch-free).

A job file (``cape_hpc.sweep.spec``) is read into these and into the method options it names:
``JobOptions`` (the top-level keys), ``PromptFiles`` (``prompts:``), ``ModelFacts`` (what a model
entry says about the model), ``ModelOptions`` (how to load it), ``ExtractOptions`` (``internals:``,
a model's ``batch_size``, ``prompts.max_prompts``) and ``SteerOptions`` (``steering:``).
"""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.options import Options, option

__all__ = ["SweepOptions", "MergeOptions", "ON_TERM", "JobOptions", "PromptFiles", "ModelFacts",
           "WORK_FUNCTIONS"]

ON_TERM = ("drop", "finish")
#: short names of the work functions (``work:`` key); anything else must be ``module:function``
WORK_FUNCTIONS = {
    "internals": "cape_hpc.sweep.work:process_model",
    "synthetic": "cape_hpc.sweep.work:synthetic_model",
}
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"


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


@dataclass(frozen=True)
class JobOptions(Options):
    """A job file's top-level keys and the two sections' ``enabled`` switches (never command-line flags)."""

    name: str = option("", help="the job's name (default: the file's stem)", cli=False)
    description: str = option("", help="free text", cli=False)
    output_dir: str = option("", help="results directory (default: results/<name>; --out-dir overrides)",
                             cli=False)
    work: str = option("internals", help="the work function per model", cli=False,
                       pattern="|".join(WORK_FUNCTIONS) + f"|{_DOTTED}:[A-Za-z_][A-Za-z0-9_]*",
                       pattern_help=f"one of {', '.join(WORK_FUNCTIONS)} or 'module:function' (dotted Python "
                                    f"names)")
    extract: bool = option(True, help="extract internals (internals.enabled)", cli=False)
    steer: bool = option(False, help="run steering (steering.enabled; default: when the section sets a key)",
                         cli=False)

    @property
    def work_target(self) -> str:
        """``module:function`` of the work function."""
        return WORK_FUNCTIONS.get(self.work, self.work)


@dataclass(frozen=True)
class PromptFiles(Options):
    """The prompt files of a job (none: the shipped ``data/prompts/*.jsonl``)."""

    contrastive: str | None = option(None, help="contrastive prompt sets (JSONL)", cli=False)
    calibration: str | None = option(None, help="steering calibration pairs (JSONL)", cli=False)


@dataclass(frozen=True)
class ModelFacts(Options):
    """What a model entry says about the model besides how to load it: its shard name, family and size.
    The sizes order the run (largest first) and size ``--dry-run``'s memory estimate; nothing is
    downloaded."""

    name: str = option("", help="shard and HDF5 group name (default: the id, '/' written '__')", cli=False,
                       pattern=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
                       pattern_help="a valid shard name (letters, digits, . _ + -)")
    family: str | None = option(None, help="model family", cli=False)
    params: float | None = option(None, help="parameter count", minimum=0.0, cli=False)
    d_model: int | None = option(None, help="hidden size", minimum=1, cli=False)
    n_layers: int | None = option(None, help="decoder blocks", minimum=1, cli=False)
    vocab: int | None = option(None, help="vocabulary size", minimum=1, cli=False)
    gpus: int | None = option(None, help="GPUs the model's rank uses (none: the memory plan's count, "
                                         "cape_hpc.sweep.gpus; fewer than the plan needs is refused)",
                              minimum=1, cli=False)
