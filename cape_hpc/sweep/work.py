"""Per-model work functions: ``f(entry, job) -> {"internals": InternalsResult, "steering": {run:
SteeringResult}, "info": {...}}`` (results of the schema; the shard stores them with ``to_tree``).

``process_model`` is the real one (load the model, extract internals, optionally steer);
``synthetic_model`` is a deterministic stand-in without torch, used by the tests of scheduling,
resume, merge and fault handling (``work: synthetic`` in a job file).  The options each work
function passes on were built when the job was read (``entry.load``, ``entry.extract``, ``job.steer``)
and are stored unchanged as the results' provenance.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from cape_hpc.internals.results import Bottleneck, HeadRow, HeadSummary, InternalsResult, LayerRow
from cape_hpc.schema import Provenance
from cape_hpc.steering.results import PromptOutcome, SteeringResult
from cape_hpc.sweep.spec import JobSpec, ModelEntry


def _subset_prompts(prompts: Any, n: int | None) -> Any:
    """The first ``n`` prompts of each side of a prompt set (keeps its type when it can)."""
    if n is None:
        return prompts
    if hasattr(prompts, "subset"):
        return prompts.subset(n)
    if hasattr(prompts, "head"):
        return prompts.head(n)
    import dataclasses

    if dataclasses.is_dataclass(prompts):
        changes = {f.name: getattr(prompts, f.name)[:n] for f in dataclasses.fields(prompts)
                   if isinstance(getattr(prompts, f.name), (list, tuple))}
        return dataclasses.replace(prompts, **changes)
    if isinstance(prompts, (list, tuple)):
        return prompts[:n]
    return prompts


def measured_prompts(prompts: Any, entry: ModelEntry) -> Any:
    """The prompts the extraction measures under the entry's ``max_prompts`` (``PromptSet.measured``:
    a third set does not use the budget up); steering generates from these same prompts."""
    from cape_hpc.internals.extract import choose_sets

    sets = entry.extract.sets or (choose_sets(prompts) if len(prompts.sets) > 2 else prompts.sets)
    return prompts.measured(tuple(sets), entry.extract.max_prompts)


def local_rank() -> int:
    """This process's rank among the ranks on its node (0 without MPI/Slurm)."""
    import os

    for k in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMI_LOCAL_RANK", "LOCAL_RANK"):
        if os.environ.get(k, "").isdigit():
            return int(os.environ[k])
    return 0


def _device(job: JobSpec) -> str:
    """``work_options.device``: 'auto' (one GPU per rank when there are GPUs, else CPU), 'cpu', 'cuda[:i]'.

    One rank per GPU: when Slurm binds a GPU to each task (``--gpus-per-task=1``) each rank sees one
    device; when every rank sees all of a node's GPUs, rank i on the node takes GPU i mod count.
    """
    want = str(job.work_options.get("device", "auto"))
    if want in ("auto", "cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            if want == "cuda":
                from cape_hpc.errors import OptionError

                raise OptionError("work_options.device: 'cuda' requested but no CUDA device is visible")
            return "cpu"
        return f"cuda:{local_rank() % n}"
    return want


def process_model(entry: ModelEntry, job: JobSpec) -> dict[str, Any]:
    """Load one model, extract its internals and (if the job asks) run steering on it; the steps are a
    progress task (``model <name>``: load, internals, steering, scores), each step's own work (prompts,
    items) a task inside it."""
    from cape_hpc import progress

    steps = 1 + bool(job.options.extract) + (job.steer is not None) + (getattr(job, "scores", None) is not None)
    with progress.task(f"model {entry.name}", total=steps, unit="step") as step:
        return _process_model(entry, job, step)


def _process_model(entry: ModelEntry, job: JobSpec, step) -> dict[str, Any]:
    from cape_hpc.internals import extract_internals, load_prompts

    t0 = time.perf_counter()
    device = _device(job)
    place = None
    if device.startswith("cuda"):                 # a model larger than one GPU: over the rank's GPUs
        import torch

        from cape_hpc.sweep.gpus import model_placement

        place = model_placement(entry, job, torch.cuda.device_count(),
                                torch.cuda.get_device_properties(0).total_memory, rank=local_rank())
    loaded = entry.load.load(place)
    if device != "cpu" and place is None:
        loaded.model.to(device)
    t_load = time.perf_counter() - t0
    step(1)
    prompts = load_prompts(job.prompts.contrastive)
    out: dict[str, Any] = {"info": {"source": str(loaded.source), "resolved_revision": str(loaded.revision),
                                    "device": device, "load_seconds": round(t_load, 3)}}
    if job.options.extract:
        t1 = time.perf_counter()
        out["internals"] = extract_internals(loaded, prompts, entry.extract)
        out["info"]["internals_seconds"] = round(time.perf_counter() - t1, 3)
        step(1)
    if job.steer is not None:
        from cape_hpc.steering import run_steering

        n = entry.extract.max_prompts
        calib = _subset_prompts(load_prompts(job.prompts.calibration, calibration=True), n)
        res = run_steering(loaded, calib, measured_prompts(prompts, entry), job.steer)
        out["steering"] = {res.run_name: res}
        step(1)
    if getattr(job, "scores", None) is not None:   # lm-eval on the model loaded above (cape_hpc.sweep.scores)
        from cape_hpc.sweep.scores import run_scores

        out["scores"] = run_scores(loaded, job.scores, name=entry.name, params=entry.params or float("nan"),
                                   family=entry.family or "", revision=entry.load.revision or "", device=device)
        out["info"]["scores_seconds"] = out["scores"].seconds
        step(1)
    out["info"]["seconds"] = round(time.perf_counter() - t0, 3)
    del loaded
    return out


def synthetic_model(entry: ModelEntry, job: JobSpec) -> dict[str, Any]:
    """Deterministic fake internals (and steering) for a model, from its name and the job options.

    ``entry.work_options``: ``sleep`` (seconds), ``fail`` (raise RuntimeError with that message),
    ``burn`` (seconds of CPU work), ``iters`` (a fixed number of 128 x 128 matmul + tanh steps).
    ``job.work_options``: ``sleep_per_gparam``.  An id starting with ``missing/`` fails like an
    unloadable model.
    """
    if entry.id.startswith("missing/"):
        raise OSError(f"{entry.id} is not a local folder and cannot be found offline")
    if entry.work_options.get("fail"):
        raise RuntimeError(str(entry.work_options["fail"]))
    from cape_hpc import progress

    with progress.task(f"model {entry.name}", total=1, unit="step") as step:   # as process_model reports
        _synthetic_work(entry, job)
        step(1)
    seed = int.from_bytes(hashlib.sha256(f"{entry.name}|{entry.id}|{entry.load.revision}|{entry.load.dtype}|"
                                         f"{job.prompts}|{job.extract}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    L, H = entry.facts.n_layers or 4, 4
    coupling, pm = rng.uniform(-1, 1, L), rng.uniform(-1, 1, L)
    pf, hc, dr = rng.uniform(0, 1, L), rng.uniform(-1, 1, (L, H)), rng.uniform(1, 20, L)
    eopts = entry.extract
    internals = InternalsResult(
        model=entry.name, source=entry.id, revision=entry.load.revision or "none", dtype=entry.load.dtype,
        backend="synthetic", pooling=eopts.pooling, taps=["residual", "heads"], set_r="reasoning",
        set_t="truthfulness", n_prompts=8, n_r=4, n_t=4, n_truncated=0, prompt_set_sha256="synthetic",
        n_layers=L, n_heads=H, head_dim=8, d_model=entry.facts.d_model or 16,
        layers=[LayerRow(l, float(coupling[l]), float(pm[l]), float(pf[l]), bool(pf[l] > 0.5), float(dr[l]))
                for l in range(L)],
        heads=[HeadRow(l, h, float(hc[l, h])) for l in range(L) for h in range(H)],
        head_summary=HeadSummary.of(hc), bottleneck=Bottleneck(),
        provenance=Provenance("cape_hpc.sweep.work.synthetic_model", eopts.to_dict(), seed=seed))
    out: dict[str, Any] = {"internals": internals, "info": {"source": entry.id, "resolved_revision": "synthetic"}}
    if job.steer is not None:
        sopts = job.steer
        v = rng.normal(size=entry.facts.d_model or 16)
        n, k = 4, int(rng.integers(0, 5))
        from cape_hpc.stats.intervals import wilson_interval

        rows = [PromptOutcome(str(i), f"prompt {i}", "base", "steered" if i < k else "base", i < k,
                              float(rng.uniform(-1, 1)), 1, 1) for i in range(n)]
        st = SteeringResult(
            model=entry.name, source=entry.id, revision=entry.load.revision or "none", dtype=entry.load.dtype,
            backend="synthetic", probe_layer=sopts.probe_layer or 0, method=sopts.method, alpha=sopts.alpha,
            scale=sopts.scale, positions=sopts.positions, tau=sopts.tau, pooling=sopts.pooling,
            max_new_tokens=sopts.max_new_tokens, batch_size=sopts.batch_size, chat_template=False,
            direction=v / np.linalg.norm(v), calibration_sha256="synthetic", prompt_set_sha256="synthetic",
            n_prompts=n, n_changed=k, rate=k / n, rate_ci=wilson_interval(k, n, 0.95), n_injected=k,
            per_prompt=rows, provenance=Provenance("cape_hpc.sweep.work.synthetic_model", sopts.to_dict(), seed=seed))
        out["steering"] = {st.run_name: st}
    return out


def _synthetic_work(entry: ModelEntry, job: JobSpec) -> None:
    """The stand-in's cost: ``sleep`` seconds (and ``sleep_per_gparam``), ``burn`` seconds of CPU work,
    ``iters`` fixed matmul steps (``synthetic_model``)."""
    seconds = float(entry.work_options.get("sleep", 0.0)) + float(job.work_options.get("sleep_per_gparam", 0.0)) * (entry.params or 0) / 1e9
    if seconds:
        time.sleep(seconds)
    if entry.work_options.get("burn"):  # seconds of CPU work (wall-clock bound)
        t_end = time.perf_counter() + float(entry.work_options["burn"])
        a = np.ones((200, 200))
        while time.perf_counter() < t_end:
            a = np.tanh(a @ a / 200.0)
    if entry.work_options.get("iters"):  # a fixed amount of CPU work (for scaling benchmarks)
        a = np.full((128, 128), 0.5)
        for _ in range(int(entry.work_options["iters"])):
            a = np.tanh(a @ a / 128.0)
