"""Steering benchmark on SmolLM2-135M (CPU or GPU): the outcome pass and generation side by side.

Run:  .venv/bin/python benchmarks/bench_steering.py [--items 48] [--prompts 32] [--tokens 32]
          [--no-peers] [--json out.json]
      .venv/bin/python -m pytest benchmarks/bench_steering.py --benchmark-only -s   (``make bench``;
      CAPE_BENCH_ITEMS, CAPE_BENCH_PROMPTS, CAPE_BENCH_TOKENS set the sizes, defaults 48 / 32 / 32)

1. The outcome pass (``evaluate_steering``, what ``cape steer`` runs; no fluency, no generation) with
   the nine-point default alpha grid against a single alpha (the grid (0, 0.05)), the same items:
   ratio of the times (goal <= 1.3x; docs/METHODS.md §4.5 says why the ratio grows with the number
   of rows on a CPU).
2. Steered vs unsteered scoring of the same rows (``score_rows`` with and without a per-row
   injection at every row): overhead (goal <= 5 %).
3. Generation side by side, each in a fresh process, the same direction added at the same block
   with the same absolute coefficient at every position, the same left-padded prompts and a fixed
   number of greedy tokens (EOS ignored): tokens/s and peak RSS above the loaded model of
   cape (``greedy_generate`` with a ``Steering`` through ``Trace``), a plain forward hook with
   transformers' ``generate``, repeng's ``ControlModel`` and steering-vectors' ``SteeringVector``
   (run by the peers' Python: ``--peers-python``, else $CAPE_PEERS_PYTHON, else ``.venv-peers/bin/python``,
   a venv with the ``peers`` extra; a peer that is missing or fails is reported as skipped with the
   reason), and unsteered: cape vs transformers' ``generate`` (goal: cape fastest steered and
   unsteered, peak memory above the model within 20 MB of ``generate``'s).
Timings on a shared machine are noisy: take the ratios, not the seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = "steering benchmark (SmolLM2-135M)"
COEF = 4.0          # absolute coefficient of the direction in the generation comparison


def _best(fn, repeats: int) -> float:
    """Best wall time of ``fn`` over ``repeats`` (on CUDA the device is synchronised around each call)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def bench_scoring(lm, n_items: int, repeats: int = 2, whole: bool = True) -> dict:
    """The outcome pass with the nine-point grid vs one alpha (``evaluate_steering`` on the model's
    device, shared-prefix scoring), steered vs unsteered ``score_rows`` of the same rows, and (``whole``)
    the nine-point grid's steered rows scored whole (the reference path) vs with the shared prefix."""
    import numpy as np
    import torch

    from cape_hpc.steering import Injection, evaluate_steering, load_items, score_rows, tokenize_rows
    from cape_hpc.steering.options import DEFAULT_ALPHAS

    items = load_items().subset(n_items, seed=0)
    kw = dict(max_neutral=0, generate=False, batch_size=32)
    evaluate_steering(lm, items.subset(6), alphas=(0.05,), **kw)                  # warm up (kernels, caches)
    t9 = _best(lambda: evaluate_steering(lm, items, alphas=DEFAULT_ALPHAS, **kw), repeats)
    t1 = _best(lambda: evaluate_steering(lm, items, alphas=(0.05,), **kw), repeats)
    its = items.items
    ids, n_ans, _ = tokenize_rows(lm, [it.context for it in its], [it.scored_answers for it in its])
    R = len(ids)
    D = lm.adapter.d_model
    v = torch.nn.functional.normalize(torch.randn(D, generator=torch.Generator().manual_seed(0)), dim=0)

    def inj(alphas):
        n = len(alphas) * R
        return Injection(layers=[lm.adapter.n_layers // 4], directions=v[None, None, :],
                         alpha=np.repeat(alphas, R), layer_index=np.zeros(n, dtype=np.int64),
                         dir_index=np.zeros(n, dtype=np.int64))
    ts, tu = [], []
    for _ in range(max(5, repeats)):              # interleaved (one round varies by +-15 % on 2 cores)
        ts.append(_best(lambda: score_rows(lm, ids, n_ans, inj([0.05]), batch_size=32), 1))
        tu.append(_best(lambda: score_rows(lm, ids, n_ans, None, batch_size=32), 1))
    out = {"device": str(next(lm.model.parameters()).device), "items": len(its), "rows": R, "grid9_s": t9,
           "grid1_s": t1, "grid_ratio": t9 / t1, "steered_score_s": min(ts), "unsteered_score_s": min(tu),
           "scoring_overhead": min(ts) / min(tu) - 1}
    if whole:
        grid = [a for a in DEFAULT_ALPHAS if a != 0]
        gids, gn = [r for _ in grid for r in ids], list(n_ans) * len(grid)
        out["grid_rows_shared_s"] = _best(lambda: score_rows(lm, gids, gn, inj(grid), batch_size=32), 1)
        out["grid_rows_whole_s"] = _best(lambda: score_rows(lm, gids, gn, inj(grid), batch_size=32,
                                                            shared_prefix=False), 1)
        out["shared_prefix_speedup"] = out["grid_rows_whole_s"] / out["grid_rows_shared_s"]
        out["grid_rows"] = len(gids)
    return out


WORKER = r"""
import json, sys, time
import numpy as np
import torch
sys.path.insert(0, %(repo)r)
name, n, new = %(name)r, %(n)d, %(new)d
if name == "repeng" and not hasattr(np, "float_"):
    np.float_ = np.float64          # repeng 0.4 still names np.float_ (removed in NumPy 2)
from cape_hpc.models import load_model
from cape_hpc.internals import load_prompts
from cape_hpc.models.batching import left_pad, pad_id, tokenize
from cape_hpc.steering import Steering, greedy_generate
lm = load_model("smollm2-135m")
dev = "cuda" if torch.cuda.is_available() else "cpu"
lm.model.to(dev)
model, tok = lm.model, lm.tokenizer
texts = [p.text for p in load_prompts().prompts][:n]
ids, _ = tokenize(lm, texts)
layer = lm.adapter.n_layers // 4
D = lm.adapter.d_model
v = torch.nn.functional.normalize(torch.randn(D, generator=torch.Generator().manual_seed(0)), dim=0).to(dev)
vec = %(coef)r * v
input_ids, mask, _ = left_pad(ids, pad_id(lm))
input_ids, mask = input_ids.to(dev), mask.to(dev)
def hf_generate():
    with torch.inference_mode():
        return model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, pad_token_id=pad_id(lm))
run = None
if name == "cape":
    def run():
        greedy_generate(lm, ids, new, Steering(layer, v, %(coef)r, scale="absolute"), stop_at_eos=False)
elif name == "cape-unsteered":
    run = lambda: greedy_generate(lm, ids, new, stop_at_eos=False)
elif name == "hf-generate-unsteered":
    run = hf_generate
elif name == "forward-hook":
    def hook(m, a, out):
        h = out[0] if isinstance(out, tuple) else out
        h.add_(vec)
    def run():
        hd = lm.adapter.layers[layer].register_forward_hook(hook)
        try:
            hf_generate()
        finally:
            hd.remove()
elif name == "steering-vectors":
    from steering_vectors import SteeringVector
    sv = SteeringVector({layer: vec}, "decoder_block")
    def run():
        with sv.apply(model):
            hf_generate()
elif name == "repeng":
    from repeng import ControlModel
    cm = ControlModel(model, [layer])
    cm.set_raw_control({layer: vec})
    def run():
        with torch.inference_mode():
            cm.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                        do_sample=False, pad_token_id=pad_id(lm))
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
run()                                                 # warm up: touch every weight, JIT the kernels
base = status("VmRSS")
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
if dev == "cuda":
    torch.cuda.reset_peak_memory_stats()
best = float("inf")
for _ in range(%(repeats)d):
    t = time.perf_counter(); run()
    if dev == "cuda":
        torch.cuda.synchronize()
    best = min(best, time.perf_counter() - t)
out = {"tokens_per_s": n * new / best, "seconds": best, "peak_above_model_mb": (status("VmHWM") - base) / 1024}
if dev == "cuda":
    out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
print("RESULT " + json.dumps(out))
"""

RUNNERS = ("cape", "forward-hook", "steering-vectors", "repeng", "cape-unsteered", "hf-generate-unsteered")
PEERS = {"steering-vectors": "steering_vectors", "repeng": "repeng"}


def peers_python(path: str | None = None) -> tuple[str | None, str]:
    """The Python that runs the peers (repeng, steering-vectors): ``path``, else $CAPE_PEERS_PYTHON,
    else the checkout's ``.venv-peers/bin/python`` when it exists; (None, the reason) otherwise."""
    path = path or os.environ.get("CAPE_PEERS_PYTHON")
    if path:
        return (path, "") if Path(path).exists() else (None, f"{path} does not exist")
    default = REPO / ".venv-peers" / "bin" / "python"
    if default.exists():
        return str(default), ""
    return None, "no peers Python (.venv-peers/bin/python or $CAPE_PEERS_PYTHON; make the venv with the 'peers' extra)"


def _run_worker(python: str, name: str, n: int, new: int, repeats: int) -> dict:
    code = WORKER % dict(repo=str(REPO), name=name, n=n, new=new, coef=COEF, repeats=repeats)
    p = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode == 0 and line:
        return {**json.loads(line[-1][7:]), "python": python}
    err = (p.stderr.strip().splitlines() or ["?"])[-1][:160]
    return {"skipped": f"not installed in {python}" if "ModuleNotFoundError" in err else f"failed: {err}"}


def bench_generation(n: int, new: int, peers: bool = True, repeats: int = 2, peer_python: str | None = None) -> dict:
    """Each runner in a fresh process: cape and transformers with this Python, repeng and
    steering-vectors with the peers' Python (``peers_python``; skipped with the reason without one)."""
    py, why = peers_python(peer_python) if peers else (None, "--no-peers")
    out = {}
    for name in RUNNERS:
        if name in PEERS and py is None:
            out[name] = {"skipped": why}
            continue
        out[name] = _run_worker(py if name in PEERS else sys.executable, name, n, new, repeats)
    return {"prompts": n, "new_tokens": new, "runners": out}


def summary(res: dict) -> list[str]:
    lines = []
    s = res.get("scoring")
    if s:
        lines += [f"outcome pass, {s['items']} items ({s['rows']} answer rows): nine-point grid {s['grid9_s']:.2f} s vs "
                  f"one alpha {s['grid1_s']:.2f} s -> {s['grid_ratio']:.2f}x (goal <= 1.3x)",
                  f"scoring, steered vs unsteered: {s['steered_score_s']:.2f} s vs {s['unsteered_score_s']:.2f} s -> "
                  f"overhead {100 * s['scoring_overhead']:+.1f} % (goal <= 5 %)"]
        if "shared_prefix_speedup" in s:
            lines.append(f"the grid's {s['grid_rows']} steered rows: whole rows {s['grid_rows_whole_s']:.2f} s vs shared "
                         f"prefix {s['grid_rows_shared_s']:.2f} s -> {s['shared_prefix_speedup']:.2f}x ({s['device']})")
    g = res.get("generation")
    if g:
        lines.append(f"generation, {g['prompts']} prompts x {g['new_tokens']} greedy tokens (same direction, "
                     f"coefficient {COEF:g}, absolute, every position):")
        for name, r in g["runners"].items():
            if "skipped" in r:
                lines.append(f"  {name}: skipped ({r['skipped']})")
            else:
                lines.append(f"  {name}: {r['tokens_per_s']:.0f} tokens/s, peak above the model "
                             f"{r['peak_above_model_mb']:.0f} MB" +
                             (f", CUDA peak {r['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in r else ""))
    return lines


def run_all(n_items: int, n_prompts: int, new: int, peers: bool = True, peer_python: str | None = None) -> dict:
    from cape_hpc.models import load_model

    lm = load_model("smollm2-135m")
    return {"scoring": bench_scoring(lm, n_items), "generation": bench_generation(n_prompts, new, peers,
                                                                                   peer_python=peer_python)}


@pytest.mark.realmodel
def test_bench_steering(benchmark, request):
    n = int(os.environ.get("CAPE_BENCH_ITEMS", "48"))
    p = int(os.environ.get("CAPE_BENCH_PROMPTS", "32"))
    t = int(os.environ.get("CAPE_BENCH_TOKENS", "32"))
    holder = {}
    benchmark.pedantic(lambda: holder.__setitem__("r", run_all(n, p, t)), rounds=1, iterations=1)
    for line in summary(holder["r"]):
        request.config.cape_bench_lines.append((SUITE, line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--peers-python", help="the Python with repeng and steering-vectors (default: $CAPE_PEERS_PYTHON, "
                    "else .venv-peers/bin/python)")
    ap.add_argument("--json", help="also write the raw results here")
    a = ap.parse_args()
    res = run_all(a.items, a.prompts, a.tokens, not a.no_peers, a.peers_python)
    print("\n".join(summary(res)))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
