"""A small results file in the real layout, for the report's tests and for trying the report out.

Benchmark-level groups come from the real analysis functions on a few families of the shipped
score table (so any layout drift in their dataclasses shows up in the report tests).  Groups whose
producers are absent from this checkout are filled with small synthetic trees in the layout of
DESIGN.md (``/internals/<model>``, ``/steering/<model>/<run>``), marked ``synthetic=True``.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import logging
import tempfile
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_FAMILIES = ("Pythia", "OPT", "Qwen2.5", "OLMo", "Llama-2")
# claims of data/claims.yaml with every kind of verdict (a fast subset of the audit)
AUDIT_SAMPLE = ("cohort-models", "pythia-r-hs-tqa", "pythia-r-p", "bayes-factor", "nc-gpt-neo", "nc-qwen3-none",
                "near-1b-gamma", "loss-invariant", "opt-13b-coupling", "isocline-opt")


def _try(name: str, fn: Callable[[], Any], notes: list[str]) -> Any:
    try:
        return fn()
    except Exception as exc:  # a producer that is missing or broken in this checkout
        notes.append(f"{name}: {type(exc).__name__}: {exc}")
        log.info("sample: %s not produced (%s)", name, exc)
        return None


def _synthetic_internals(model: str, n_layers: int, n_heads: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, n_layers)
    layer = 0.6 * np.sin(3 * x) - 0.2 + 0.05 * rng.standard_normal(n_layers)
    heads = np.clip(layer[:, None] + 0.3 * rng.standard_normal((n_layers, n_heads)), -1, 1)
    return {"source": f"synthetic:{model}", "revision": "none", "dtype": "float32", "prompt_set_sha256": "0" * 64,
            "backend": "torch", "complete": True, "synthetic": True,
            "layer_coupling": layer, "layer_pairwise_mean": 0.8 * layer,
            "layer_competing_fraction": np.clip(-layer, 0, 1), "head_coupling": heads,
            "d_rep": 3 + 2 * x,
            "provenance": {"method": "synthetic_internals", "options": {"model": model}, "seed": seed,
                           "version": "sample"}}


def _synthetic_steering(model: str, alpha: float, n: int, changed: int) -> dict:
    from scipy.stats import norm

    p = changed / n
    z = norm.ppf(0.975)
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return {"alpha": alpha, "scale": "relative", "n": n, "n_changed": changed, "rate": p,
            "ci_lo": centre - half, "ci_hi": centre + half, "synthetic": True,
            "provenance": {"method": "synthetic_steering", "options": {"alpha": alpha, "scale": "relative"},
                           "version": "sample"}}


STEER_ALPHAS = {"tiny-llama": (0.0, 2.0, 8.0), "tiny-gpt2": (2.0, 8.0)}


def _real_model_groups() -> dict[str, Any]:
    """Internals and steering groups from the real code on ``tiny-<arch>`` models (seconds, no weights)."""
    from cape_hpc.internals.extract import extract_internals
    from cape_hpc.internals.prompts import load_prompts
    from cape_hpc.models.loading import load_model
    from cape_hpc.steering.steer import calibrate_direction, run_steering

    prompts = load_prompts().subset(16)
    calibration = load_prompts(calibration=True).subset(16)
    out: dict[str, Any] = {}
    for spec, alphas in STEER_ALPHAS.items():
        loaded = load_model(spec)
        r = extract_internals(loaded, prompts, batch_size=8)
        out[r.group] = r.to_store_tree()
        direction = calibrate_direction(loaded, calibration)
        for alpha in alphas:
            s = run_steering(loaded, calibration, prompts.subset(6), alpha=alpha, max_new_tokens=4, batch_size=6,
                             direction=direction)
            out[s.group] = s.to_store_tree()
    return out


def audit_sample_ids() -> list[str]:
    """AUDIT_SAMPLE's claims that the registry has (its first ten if it has none of them)."""
    from cape_hpc.analysis.reproduce import load_claims

    ids = [c.id for c in load_claims()]
    chosen = [i for i in AUDIT_SAMPLE if i in ids]
    return chosen or ids[:10]


def _audit(scores, frontier):
    from cape_hpc.analysis.reproduce import run_audit
    from cape_hpc.io.scores import load_loss

    return run_audit(scores, frontier=frontier, loss=load_loss(), n_resamples=50, seed=0, only=audit_sample_ids())


def sample_groups(notes: list[str] | None = None, *, n_resamples: int = 200, real_models: bool = True) -> dict[str, Any]:
    """{group path: result} for a small results file (see module doc)."""
    import pandas as pd

    from cape_hpc.io.scores import load_frontier, load_scores

    notes = [] if notes is None else notes
    full = load_scores()
    df = full.loc[full["family"].isin(SAMPLE_FAMILIES)].copy()
    df.attrs.update(full.attrs)
    groups: dict[str, Any] = {}

    def an(mod: str, fn: str, *a, **kw):
        return getattr(importlib.import_module(f"cape_hpc.analysis.{mod}"), fn)(*a, **kw)

    groups["/analysis/coupling"] = _try("coupling", lambda: an("coupling", "local_coupling", df), notes)
    groups["/analysis/phases"] = _try("phases", lambda: an("phases", "phases", df), notes)
    for est in ("quadratic", "sign-change"):
        groups[f"/analysis/nc/{est}"] = _try(
            f"nc {est}", lambda est=est: an("nc", "estimate_nc", df, est, n_resamples=n_resamples, seed=1), notes)
    groups["/analysis/deff"] = _try("deff", lambda: an("deff", "effective_dimension", df, n_resamples=n_resamples,
                                                       seed=2), notes)
    groups["/analysis/width"] = _try("width", lambda: an("width", "width_normalisation", df, n_permutations=200,
                                                         seed=3), notes)
    groups["/analysis/hfield"] = _try("hfield", lambda: an("hfield", "h_field", df), notes)
    groups["/analysis/isocline"] = _try("isocline", lambda: an("isocline", "isocline", df), notes)
    groups["/analysis/loss"] = _try("loss", lambda: an("losslaw", "loss_law",
                                                       importlib.import_module("cape_hpc.io.scores").load_loss()), notes)
    groups["/analysis/eigen"] = _try("eigen", lambda: an("eigen", "eigen_geometry", df, "Pythia"), notes)
    groups["/analysis/frontier"] = _try("frontier", lambda: an("frontier", "frontier_fit", load_frontier()), notes)
    # the diagnose model is fitted on the whole shipped table, as `cape analyze` and `cape diagnose` do
    groups["/analysis/diagnose_model"] = _try("diagnose model", lambda: an("diagnose", "fit_diagnose_model", full),
                                              notes)
    groups["/dynamics/linear"] = _try("dynamics", lambda: importlib.import_module("cape_hpc.dynamics.discovery").discover(
        full, train=("Pythia",), holdout=("OPT",), model="linear", n_resamples=20, seed=4), notes)
    groups["/reproduce"] = _try("reproduce", lambda: _audit(full, load_frontier()), notes)
    groups["/dynamics/predict/Pythia/3e+10"] = _try(
        "predict", lambda: importlib.import_module("cape_hpc.dynamics.discovery").predict_size(
            full, "Pythia", 3e10, model="linear", n_resamples=20, seed=5), notes)
    groups = {k: v for k, v in groups.items() if v is not None}
    # model internals and steering: the real producers on two tiny random-weight models (offline),
    # synthetic trees in the same layout if those producers are missing from this checkout
    if real_models:
        real = _try("internals/steering on tiny models", lambda: _real_model_groups(), notes)
        if real is not None:
            groups.update(real)
            return groups
    groups["/internals/tiny-llama"] = _synthetic_internals("tiny-llama", 6, 4, 11)
    groups["/internals/tiny-gpt2"] = _synthetic_internals("tiny-gpt2", 4, 2, 12)
    for model, runs in {"tiny-llama": [(0.0, 8, 0), (4.0, 8, 3), (8.0, 8, 6)],
                        "tiny-gpt2": [(4.0, 8, 1), (8.0, 8, 5)]}.items():
        for alpha, n, ch in runs:
            groups[f"/steering/{model}/alpha{alpha:g}"] = _synthetic_steering(model, alpha, n, ch)
    _ = pd  # pandas is used through the analysis functions
    return groups


def write_sample(path: str | os.PathLike, *, force: bool = True, n_resamples: int = 200,
                 real_models: bool = True) -> tuple[Path, list[str]]:
    """Write the sample results file; returns (path, notes on groups that could not be produced)."""
    from cape_hpc.io.store import write_results

    notes: list[str] = []
    groups = sample_groups(notes, n_resamples=n_resamples, real_models=real_models)
    return write_results(path, groups, force=force), notes


@functools.lru_cache(maxsize=None)
def cached_sample(n_resamples: int = 100) -> tuple[str, tuple[str, ...]]:
    """One sample file per process (the tests of figures and of the report share it)."""
    d = tempfile.mkdtemp(prefix="cape-report-sample-")
    atexit.register(shutil.rmtree, d, True)
    path, notes = write_sample(Path(d) / "sample.h5", n_resamples=n_resamples)
    return str(path), tuple(notes)
