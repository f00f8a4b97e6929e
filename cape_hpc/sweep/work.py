"""Per-model work functions: ``f(entry, job) -> {"internals": tree, "steering": {run: tree}, "info": {...}}``.

``process_model`` is the real one (load the model, extract internals, optionally steer);
``synthetic_model`` is a deterministic stand-in without torch, used by the tests of scheduling,
resume, merge and fault handling (``work: synthetic`` in a job file).
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

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
    """Load one model, extract its internals and (if the job asks) run steering on it."""
    from cape_hpc.internals import extract_internals, load_prompts
    from cape_hpc.models import load_model

    t0 = time.perf_counter()
    loaded = load_model(entry.id, revision=entry.revision, dtype=entry.dtype,
                        trust_remote_code=entry.trust_remote_code)
    device = _device(job)
    if device != "cpu":
        loaded.model.to(device)
    t_load = time.perf_counter() - t0
    prompts = _subset_prompts(load_prompts(job.prompts.get("contrastive")), job.prompts.get("max_prompts"))
    out: dict[str, Any] = {"info": {"source": str(loaded.source), "resolved_revision": str(loaded.revision),
                                    "device": device, "load_seconds": round(t_load, 3)}}
    opts = job.internals
    if opts.get("enabled", True):
        kw: dict[str, Any] = {"batch_size": entry.batch_size, "pooling": opts.get("pooling", "last"),
                              "backend": opts.get("backend")}
        if opts.get("taps"):
            kw["taps"] = opts["taps"]
        res = extract_internals(loaded, prompts, **kw)
        out["internals"] = res.to_store_tree() if hasattr(res, "to_store_tree") else res
    st = job.steering
    if st.get("enabled"):
        from cape_hpc.steering import run_steering

        calib = load_prompts(job.prompts.get("calibration"), calibration=True)
        calib = _subset_prompts(calib, job.prompts.get("max_prompts"))
        steer_prompts = _subset_prompts(prompts, st.get("max_prompts"))
        kw = {k: st[k] for k in ("alpha", "scale", "positions", "tau", "probe_layer", "method",
                                 "max_new_tokens", "batch_size") if st.get(k) is not None}
        kw["backend"] = opts.get("backend")
        res = run_steering(loaded, calib, steer_prompts, **kw)
        out["steering"] = {getattr(res, "run_name", "default"):
                           res.to_store_tree() if hasattr(res, "to_store_tree") else res}
    out["info"]["seconds"] = round(time.perf_counter() - t0, 3)
    del loaded
    return out


def synthetic_model(entry: ModelEntry, job: JobSpec) -> dict[str, Any]:
    """Deterministic fake internals for a model, from its name and the job options.

    ``entry.extra``: ``sleep`` (seconds), ``fail`` (raise RuntimeError with that message),
    ``burn`` (seconds of CPU work), ``iters`` (a fixed number of 128 x 128 matmul + tanh steps).  ``job.work_options``: ``sleep_per_gparam``.  An id starting with
    ``missing/`` fails like an unloadable model.
    """
    if entry.id.startswith("missing/"):
        raise OSError(f"{entry.id} is not a local folder and cannot be found offline")
    if entry.extra.get("fail"):
        raise RuntimeError(str(entry.extra["fail"]))
    seconds = float(entry.extra.get("sleep", 0.0)) + float(job.work_options.get("sleep_per_gparam", 0.0)) * (entry.params or 0) / 1e9
    if seconds:
        time.sleep(seconds)
    if entry.extra.get("burn"):  # seconds of CPU work (wall-clock bound)
        t_end = time.perf_counter() + float(entry.extra["burn"])
        a = np.ones((200, 200))
        while time.perf_counter() < t_end:
            a = np.tanh(a @ a / 200.0)
    if entry.extra.get("iters"):  # a fixed amount of CPU work (for scaling benchmarks)
        a = np.full((128, 128), 0.5)
        for _ in range(int(entry.extra["iters"])):
            a = np.tanh(a @ a / 128.0)
    seed = int.from_bytes(hashlib.sha256(f"{entry.name}|{entry.id}|{entry.revision}|{entry.dtype}|"
                                         f"{job.prompts}|{job.internals}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    n_layers, n_heads = entry.n_layers or 4, 4
    internals = {
        "source": entry.id, "revision": entry.revision or "none", "dtype": entry.dtype,
        "backend": "synthetic", "complete": True,
        "layer_coupling": rng.uniform(-1, 1, n_layers),
        "layer_pairwise_mean": rng.uniform(-1, 1, n_layers),
        "layer_competing_fraction": rng.uniform(0, 1, n_layers),
        "head_coupling": rng.uniform(-1, 1, (n_layers, n_heads)),
        "d_rep": rng.uniform(1, 20, n_layers),
    }
    out: dict[str, Any] = {"internals": internals, "info": {"source": entry.id, "resolved_revision": "synthetic"}}
    if job.steering.get("enabled"):
        out["steering"] = {"default": {"direction": rng.normal(size=entry.d_model or 16),
                                       "rate": float(rng.uniform()), "alpha": job.steering.get("alpha") or 0.5}}
    return out
