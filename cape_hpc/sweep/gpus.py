"""How many GPUs each model of a sweep needs: a memory plan from the job's parameter counts (nothing
is downloaded), and the GPUs a rank must own (``--gpus-per-task`` = the largest model's need).

A model's weights take params x bytes per weight of its dtype (``spec.DTYPE_BYTES``; bfloat16: 2);
its work needs ``spec.estimate_memory_bytes`` (weights + one batch of activations + runtime).  A GPU
holds :data:`USABLE` of its memory for that (the rest: the CUDA context, allocator slack, kernel
workspaces), so a model needs ceil(need / (USABLE x GPU memory)) GPUs, its blocks spread over them
by ``cape_hpc.models.load_model(device_map="balanced", max_memory=...)``.  A job may give ``gpus:``
per model: fewer than the plan needs is refused, more is kept.  A model that needs more GPUs than
a rank may have is refused, naming the model.  Pure functions, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from cape_hpc.errors import OptionError
from cape_hpc.models.options import parse_size
from cape_hpc.options import Options, option

__all__ = ["GIB", "USABLE", "GpuPlanOptions", "GpuNeed", "weight_bytes", "gpus_needed",
           "plan_gpus", "gpus_per_rank", "max_memory_map", "rank_placement", "plan_job", "model_placement"]

GIB = 2 ** 30
#: the share of each GPU's memory a plan fills
USABLE = 0.9


@dataclass(frozen=True)
class GpuPlanOptions(Options):
    """What the plan assumes of the GPUs (``cape sweep --dry-run`` / ``--gpus-per-task``; a running
    rank measures its own)."""

    gpu_memory: str = option("80GiB", help="memory of one GPU for the plan of GPUs per model (an H100: 80GiB)",
                             metavar="SIZE")
    max_gpus: int | None = option(None, help="the most GPUs one rank may have: a model that needs more is refused",
                                  minimum=1, metavar="N")

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_size(self.gpu_memory, "--gpu-memory")

    @property
    def gpu_bytes(self) -> int:
        return parse_size(self.gpu_memory, "--gpu-memory")


@dataclass
class GpuNeed:
    """One model of the plan: ``need_bytes`` (weights + work), the GPUs it gets (``gpus``) and where
    that count comes from (``source``: "plan", "job" or "unknown size")."""

    model: str
    params: float               # NaN when the job does not give it
    dtype: str
    weight_bytes: float         # NaN when params are unknown
    need_bytes: float
    gpus: int
    source: str


def weight_bytes(params: float, dtype: str = "bfloat16") -> int:
    """Bytes of ``params`` weights in ``dtype`` (bfloat16: 2 per weight)."""
    from cape_hpc.sweep.spec import DTYPE_BYTES  # here: the options below need no job reader (the CLI starts fast)

    if dtype not in DTYPE_BYTES:
        raise OptionError(f"dtype {dtype!r}: not one of {', '.join(DTYPE_BYTES)}")
    return int(math.ceil(float(params) * DTYPE_BYTES[dtype]))


def gpus_needed(need_bytes: float, gpu_bytes: float, usable: float = USABLE) -> int:
    """GPUs of ``gpu_bytes`` each that hold ``need_bytes`` when each is filled to ``usable`` (>= 1)."""
    return max(1, math.ceil(float(need_bytes) / (float(gpu_bytes) * usable)))


def _need(name: str, params: float | None, dtype: str, need: float | None) -> tuple[float, float]:
    """(weight bytes, need bytes) of one model; NaN when its size is unknown."""
    if params is None or (isinstance(params, float) and math.isnan(params)):
        return math.nan, math.nan if need is None else float(need)
    w = float(weight_bytes(params, dtype))
    return w, w if need is None else float(need)


def plan_gpus(models: Sequence[tuple[str, float | None, str, int | None, float | None]], gpu_bytes: float,
              max_gpus: int | None = None, where: str = "") -> list[GpuNeed]:
    """The GPUs of each model: ``models`` = (name, params, dtype, gpus the job gives or None, need in
    bytes or None (then its weights)); ``max_gpus``: the most one rank may have (None: no limit).
    Raises OptionError naming the model when the job gives fewer GPUs than the plan needs or when a
    model needs more than ``max_gpus``."""
    pre = f"{where}: " if where else ""
    out = []
    for name, params, dtype, given, need in models:
        w, n = _need(name, params, dtype, need)
        planned = 1 if math.isnan(n) else gpus_needed(n, gpu_bytes)
        if given is not None and given < planned:
            raise OptionError(f"{pre}{name}: gpus: {given}, but its {n / GIB:.1f} GiB ({dtype}) need {planned} GPUs "
                              f"of {gpu_bytes / GIB:.0f} GiB")
        gpus = planned if given is None else int(given)
        if max_gpus is not None and gpus > max_gpus:
            raise OptionError(f"{pre}{name}: needs {gpus} GPUs of {gpu_bytes / GIB:.0f} GiB ({n / GIB:.1f} GiB in "
                              f"{dtype}), more than the {max_gpus} a rank may have (--max-gpus)")
        source = "job" if given is not None else ("unknown size" if math.isnan(n) else "plan")
        out.append(GpuNeed(name, math.nan if params is None else float(params), dtype, w, n, gpus, source))
    return out


def gpus_per_rank(plan: Sequence[GpuNeed]) -> int:
    """GPUs each rank (or array task) must own: the largest model's count (1 for an empty plan)."""
    return max((g.gpus for g in plan), default=1)


def max_memory_map(n_gpus: int, gpu_bytes: float, usable: float = USABLE, first: int = 0) -> dict[int, int]:
    """accelerate's ``max_memory`` for a model spread over GPUs first .. first + n_gpus - 1 of the rank."""
    return {first + i: int(gpu_bytes * usable) for i in range(int(n_gpus))}


def rank_placement(name: str, need_bytes: float | None, given: int | None, visible: int,
                   gpu_bytes: float, rank: int = 0) -> dict | None:
    """How a rank that sees ``visible`` GPUs of ``gpu_bytes`` each loads one model: None when one GPU
    holds it (the rank's own device), else ``load_model``'s placement ({"device_map": "balanced",
    "max_memory": ...}) over the GPUs it needs: the first ones when Slurm gives each rank its own
    (``--gpus-per-task``), the ``rank``-th group of them when the ranks of a node share its GPUs.
    OptionError naming the model when it needs more GPUs than the rank sees."""
    g = plan_gpus([(name, None, "bfloat16", given, need_bytes)], gpu_bytes)[0].gpus
    if g > visible:
        raise OptionError(f"{name}: needs {g} GPUs of {gpu_bytes / GIB:.0f} GiB, this rank sees {visible} "
                          f"(sbatch --gpus-per-task={g}; `cape sweep JOB --gpus-per-task` prints what a job needs)")
    if g == 1:
        return None
    first = (int(rank) % (visible // g)) * g
    return {"device_map": "balanced", "max_memory": max_memory_map(g, gpu_bytes, first=first)}


def plan_job(job, models=None, opts: GpuPlanOptions | None = None) -> list[GpuNeed]:
    """:func:`plan_gpus` of a job's models (``models``: a selection of ``job.models``), largest first
    (``spec.order_models``), each needing ``spec.estimate_memory_bytes`` (its ``gpus:`` when given)."""
    from cape_hpc.sweep.spec import estimate_memory_bytes, order_models

    opts = opts or GpuPlanOptions()
    rows = [(m.name, m.params, m.load.dtype, getattr(m.facts, "gpus", None), estimate_memory_bytes(m, job))
            for m in order_models(list(job.models if models is None else models))]
    return plan_gpus(rows, opts.gpu_bytes, opts.max_gpus, where=str(job.path))


def model_placement(entry, job, visible: int, gpu_bytes: float, rank: int = 0) -> dict | None:
    """:func:`rank_placement` of one model of a job (``spec.estimate_memory_bytes``, its ``gpus:``)
    on a rank that sees ``visible`` GPUs of ``gpu_bytes`` (the sweep's work function measures both)."""
    from cape_hpc.sweep.spec import estimate_memory_bytes

    return rank_placement(entry.name, estimate_memory_bytes(entry, job), getattr(entry.facts, "gpus", None),
                          visible, gpu_bytes, rank)
