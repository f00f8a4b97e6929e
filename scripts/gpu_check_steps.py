"""The Python steps of scripts/gpu_check.sh, run by the check's venv (cape_hpc from the wheels, the
image's torch).  One subcommand per step; each writes its figures as JSON (``--json FILE``) and
prints a line or two.  ``summarize`` joins the step records and figures into gpu_check.json and
summary.md.

  env           device, driver, library versions
  extract-small a tiny extraction on CUDA (compute-sanitizer's first target)
  steer-small   tiny steered scoring and generation on CUDA (its second target)
  throughput    extraction vs the bare forward at batch 64, random weights from a real config
                (goal: >= 90 % of the bare forward's tokens/s, no host synchronisation in the pass)
  steering-grid the outcome pass's nine-point alpha grid vs one alpha (benchmarks/bench_steering.py)
  split         a model split between the GPU and the CPU (accelerate offload) equals the one-GPU run
  summarize     RESULTS_DIR -> gpu_check.json, summary.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "scripts" / "pythia-1.4b.config.json"
GOAL_THROUGHPUT = 0.90     # extraction tokens/s over the bare forward's (issue 24)
GOAL_OVERHEAD = 0.05       # extraction time over the last-position bare forward's (issue 22)
#: the device the steps run on; CAPE_GPU_CHECK_DEVICE=cpu runs them on a CPU (tests/test_gpu_check.py)
DEVICE = os.environ.get("CAPE_GPU_CHECK_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")


def _write(path: str | None, data: dict) -> None:
    print(json.dumps(data, indent=1, default=str))
    if path:
        Path(path).write_text(json.dumps(data, indent=1, default=str))


def _bench(name: str):
    """A module of benchmarks/ (its helpers are reused, not copied)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import importlib

    return importlib.import_module(name)


def cmd_env(a) -> None:
    import importlib.metadata as md

    import torch

    import cape_hpc

    vers = {}
    for dist in ("torch", "triton", "cupy-cuda13x", "cupy-cuda12x", "numba", "transformers", "accelerate",
                 "numpy", "cape_hpc", "cape_kernels"):
        try:
            vers[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    out = {"python": sys.version.split()[0], "versions": vers, "cape_hpc_path": str(Path(cape_hpc.__file__).parent),
           "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2 ** 30, 1),
                   n_gpus=torch.cuda.device_count(), driver=torch.cuda.driver_version()
                   if hasattr(torch.cuda, "driver_version") else None)
    _write(a.json, out)


def _tiny(arch: str = "llama"):
    from cape_hpc.models import load_model

    return load_model(f"tiny-{arch}", device_map=DEVICE)


def cmd_extract_small(a) -> None:
    from cape_hpc.internals import extract_internals, load_prompts

    res = extract_internals(_tiny(), load_prompts().subset(16), batch_size=8, block_resamples=20)
    _write(a.json, {"backend": res.backend, "layer_coupling": res.layer_coupling.tolist()})


def cmd_steer_small(a) -> None:
    import numpy as np
    import torch

    from cape_hpc.models.batching import tokenize
    from cape_hpc.steering import Injection, Steering, greedy_generate, score_rows

    lm = _tiny()
    ids, _ = tokenize(lm, ["Is glass a liquid?", "ok", "Why do cats purr at night?"])
    R, D = len(ids), lm.adapter.d_model
    v = torch.randn(1, 1, D, generator=torch.Generator().manual_seed(1))
    inj = Injection(layers=[1], directions=v, alpha=np.linspace(0, 2, R), layer_index=np.zeros(R, np.int64),
                    dir_index=np.zeros(R, np.int64))
    out = score_rows(lm, [r + [70] for r in ids], [1] * R, inj, capture=(0,), batch_size=2)
    toks = greedy_generate(lm, ids, 4, Steering(1, v[0, 0].to(DEVICE), 2.0), stop_at_eos=False)
    _write(a.json, {"logprob": out.logprob.tolist(), "n_injected": out.n_injected, "tokens": toks})


def _timed(fn, repeats: int) -> float:
    """Best wall time of ``fn`` over ``repeats``, the device synchronised around each call."""
    import torch

    sync = torch.cuda.synchronize if ON_GPU else (lambda: None)
    best = math.inf
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def _count_syncs(fn) -> int | None:
    """Host synchronisations inside the traced forward passes of ``fn`` (torch's sync debug mode;
    None on a CPU)."""
    from cape_hpc.models.tracing import sync_debug

    if not ON_GPU:
        return None

    with warnings.catch_warnings(record=True) as caught, sync_debug("warn"):
        warnings.simplefilter("always")
        fn()
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def cmd_throughput(a) -> None:
    import torch

    from cape_hpc.internals import extract_internals
    from cape_hpc.models import load_model

    bi = _bench("bench_internals")
    lm = load_model(str(a.config), dtype=a.dtype, device_map=DEVICE)
    ps = bi._prompts(a.prompts)
    batches, n_tokens = bi._batches(lm, ps, a.batch)

    def bare(keep=None):
        with torch.inference_mode():
            for kw in batches:
                lm.model(**kw, **({"logits_to_keep": keep} if keep else {}))

    def ext():
        return extract_internals(lm, ps, batch_size=a.batch)

    backend = ext().backend                                  # warm-up: kernels' JIT, allocator
    bare()
    t = {"bare": _timed(bare, a.repeats), "bare_last_logits": _timed(lambda: bare(1), a.repeats),
         "extract": _timed(ext, a.repeats)}
    syncs = _count_syncs(ext)
    ratio = t["bare"] / t["extract"]
    overhead = t["extract"] / t["bare_last_logits"] - 1
    out = {"model": f"{Path(a.config).name} (random weights, {a.dtype})", "prompts": len(ps), "tokens": n_tokens,
           "batch": a.batch, **{f"{k}_s": v for k, v in t.items()},
           **{f"{k}_tokens_per_s": n_tokens / v for k, v in t.items()},
           "extract_vs_bare": ratio, "extract_vs_bare_last_logits": t["bare_last_logits"] / t["extract"],
           "overhead_vs_last_logits": overhead, "host_syncs_in_pass": syncs, "backend": backend,
           "goal": f">= {GOAL_THROUGHPUT:.0%} of the bare forward's tokens/s, <= {GOAL_OVERHEAD:.0%} over the "
                   f"last-position forward, 0 host syncs",
           "met": bool(ratio >= GOAL_THROUGHPUT and overhead <= GOAL_OVERHEAD and not syncs)}
    _write(a.json, out)


def cmd_steering_grid(a) -> None:
    from cape_hpc.models import load_model

    bs = _bench("bench_steering")
    lm = load_model(str(a.config), dtype=a.dtype, device_map=DEVICE)
    out = bs.bench_scoring(lm, a.items, repeats=a.repeats)
    out.update(model=f"{Path(a.config).name} (random weights, {a.dtype})",
               goal="grid_ratio <= 1.3, scoring_overhead <= 0.05",
               met=bool(out["grid_ratio"] <= 1.3 and out["scoring_overhead"] <= 0.05))
    _write(a.json, out)


def cmd_split(a) -> None:
    """Blocks 1.. and the unembedding offloaded (on a GPU: to the CPU, executed on the GPU with the
    weights streamed; on a CPU: to disk): extraction and steered scores equal the unsplit model."""
    import numpy as np
    import torch

    from cape_hpc.internals import extract_internals, load_prompts
    from cape_hpc.models import load_model
    from cape_hpc.models.batching import tokenize
    from cape_hpc.models.loading import split_map
    from cape_hpc.steering import Injection, score_rows

    first, rest = ("cuda:0", "cpu") if ON_GPU else ("cpu", "disk")
    out = {}
    for arch in ("llama", "gpt_neox"):
        one = _tiny(arch)
        with tempfile.TemporaryDirectory() as off:
            split = load_model(f"tiny-{arch}", device_map=split_map(one, 1, first, rest), offload_folder=off)
            ps = load_prompts().subset(16)
            e1, e2 = (extract_internals(m, ps, batch_size=5, block_resamples=20) for m in (one, split))
            ids, _ = tokenize(one, ["Is glass a liquid?", "ok", "Why do cats purr?"])
            R = len(ids)
            inj = Injection(layers=[2], directions=torch.randn(1, 1, one.adapter.d_model),
                            alpha=np.linspace(0, 2, R), layer_index=np.zeros(R, np.int64),
                            dir_index=np.zeros(R, np.int64))
            s1, s2 = (score_rows(m, [r + [70] for r in ids], [1] * R, inj) for m in (one, split))
        out[arch] = {"coupling_max_diff": float(np.abs(e1.layer_coupling - e2.layer_coupling).max()),
                     "d_rep_max_rel_diff": float(np.abs(e1.d_rep / e2.d_rep - 1).max()),
                     "logprob_max_diff": float(np.abs(s1.logprob - s2.logprob).max()),
                     "device_map": split.info.get("device_map")}
    ok = all(v["coupling_max_diff"] < 1e-4 and v["logprob_max_diff"] < 1e-4 for v in out.values())
    _write(a.json, {**out, "met": ok})
    if not ok:
        sys.exit(1)


def _bench_goals(log: Path) -> list[str]:
    """The goals block `cape bench` printed (its last lines from 'goals (')."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    start = next((i for i, s in enumerate(lines) if s.startswith("goals (")), None)
    return [] if start is None else lines[start:]


def cmd_summarize(a) -> None:
    res = Path(a.results)
    steps = []
    for line in (res / "steps.tsv").read_text().splitlines():
        name, status, rc, secs, limit, note = (line.split("\t") + [""] * 6)[:6]
        rec = {"step": name, "status": status, "rc": int(rc), "seconds": float(secs), "limit_s": int(limit),
               "log": f"{name}.log", "note": note}
        fig = res / f"{name}.json"
        if fig.exists():
            try:
                rec["figures"] = json.loads(fig.read_text())
            except json.JSONDecodeError:
                rec["figures"] = None
        steps.append(rec)
    env = next((s.get("figures") for s in steps if s["step"] == "env"), None) or {}
    report = {"env": env, "steps": steps, "bench_goals": _bench_goals(res / "bench.log"),
              "failed": [s["step"] for s in steps if s["status"] not in ("ok", "skipped")]}
    (res / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (res / "summary.md").write_text(_summary_text(report))
    print(_summary_text(report))


def _summary_text(report: dict) -> str:
    env = report["env"]
    head = (f"# gpu_check: {env.get('device', 'no CUDA device')}, torch {env.get('versions', {}).get('torch', '?')}, "
            f"CUDA {env.get('torch_cuda', '?')}, cape_hpc {env.get('versions', {}).get('cape_hpc', '?')}\n")
    lines = [head, "| step | status | s | limit | figures |", "|---|---|---|---|---|"]
    keys = ("extract_vs_bare", "extract_vs_bare_last_logits", "overhead_vs_last_logits", "host_syncs_in_pass",
            "grid_ratio", "scoring_overhead", "shared_prefix_speedup", "met", "backend")
    for s in report["steps"]:
        f = s.get("figures") or {}
        figs = ", ".join(f"{k}={f[k]:.3g}" if isinstance(f[k], float) else f"{k}={f[k]}" for k in keys if k in f)
        lines.append(f"| {s['step']} | {s['status']}{' (' + s['note'] + ')' if s['note'] else ''} | "
                     f"{s['seconds']:.0f} | {s['limit_s']} | {figs} |")
    if report["bench_goals"]:
        lines += ["", "cape bench:", "```", *report["bench_goals"], "```"]
    lines += ["", f"failed: {', '.join(report['failed']) or 'none'}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("env", "extract-small", "steer-small", "split"):
        sub.add_parser(name).add_argument("--json")
    for name, n in (("throughput", 1024), ("steering-grid", 48)):
        p = sub.add_parser(name)
        p.add_argument("--json")
        p.add_argument("--config", default=str(CONFIG))
        p.add_argument("--dtype", default="bfloat16")
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--prompts" if name == "throughput" else "--items", type=int, default=n)
        if name == "throughput":
            p.add_argument("--batch", type=int, default=64)
    sub.add_parser("summarize").add_argument("results")
    a = ap.parse_args()
    {"env": cmd_env, "extract-small": cmd_extract_small, "steer-small": cmd_steer_small, "throughput": cmd_throughput,
     "steering-grid": cmd_steering_grid, "split": cmd_split, "summarize": cmd_summarize}[a.cmd](a)


if __name__ == "__main__":
    main()
