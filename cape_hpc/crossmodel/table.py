"""The cross-model internals table (docs/METHODS.md §3.10): one row per model, read from merged sweep
files and/or ``cape internals`` outputs.

Inputs: any results file with ``/internals/<model>`` groups (``InternalsResult``, decoded with
``from_tree``).  A merged sweep file's ``/sweep`` index also gives each model's family and
parameter count from the job spec (``params_source = 'spec'``); otherwise they come from a score
table (``'scores'``, matched by model name, case-insensitively) or from a count the caller made by
loading the model (``'counted'``); else the family is ``''`` and the count NaN (the model is in
the table, on no ladder).

All models must share one prompt set (file hash, the two set names, the number of prompts per set,
pooling) and one block layout (number of blocks, block seed): every cross-model number compares the
same prompts, and the paired block bootstrap draws the same prompt blocks in every model.  A
result without a prompt-set hash, or a mix, is refused (DataError naming the models).

Intervals: the block bootstrap of docs/METHODS.md §3.8, recomputed from each model's stored
``BlockStats`` with ``cape_hpc.internals.blocks.BlockBootstrap`` for every summary (last, mean and
smallest layer coupling, competing layers, head net / median / cooperative share / competing count,
the final hidden state's coupling), with one stream of block weights shared by all models (seed
``seed + 1``; resample r draws the same blocks everywhere).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cape_hpc.crossmodel.results import ModelRow
from cape_hpc.errors import DataError
from cape_hpc.internals.blocks import BlockBootstrap
from cape_hpc.internals.results import COMPETING_THRESHOLD, InternalsResult
from cape_hpc.schema import ConfidenceInterval
from cape_hpc.stats.intervals import percentile_interval

__all__ = ["ModelInput", "read_inputs", "check_prompt_sets", "model_replicates", "model_row", "BLOCK_SEED_OFFSET"]

#: the prompt-block stream's seed is the analysis seed plus this (the model level uses the seed itself)
BLOCK_SEED_OFFSET = 1


@dataclass
class ModelInput:
    """One model's internals and where its family and parameter count came from."""

    result: InternalsResult
    where: str                       # file:/internals/<model>
    family: str = ""
    params: float = math.nan
    params_source: str = ""
    label: str = ""                  # the stored name (a sweep's model name); '' = the result's model

    @property
    def name(self) -> str:
        return self.label or self.result.model


def _sweep_index(f, path: str) -> dict[str, dict]:
    """model -> {family, params} from a merged file's /sweep index (empty without one)."""
    from cape_hpc.io.store import read_tree

    if "sweep" not in f:
        return {}
    tree = read_tree(f["sweep"])
    rows = tree.get("models") or []
    out = {}
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, dict) and "model" in r:
            fam = r.get("family", "")
            par = r.get("params", math.nan)
            out[str(r["model"])] = {"family": str(fam or ""),
                                    "params": float(par) if par is not None else math.nan}
    return out


def read_inputs(paths, scores: pd.DataFrame | None = None, counted: dict[str, float] | None = None,
                models: list[str] | None = None, spec: dict[str, dict] | None = None) -> list[ModelInput]:
    """Every ``/internals/<model>`` group of the files, with family and parameters resolved
    (spec: a merged file's /sweep index, else ``spec`` {model: {family, params}} from job files;
    then scores; then counted).  ``models``: only these (by name).  Each file is a progress task
    (models read per second)."""
    from cape_hpc import progress
    from cape_hpc.io.verify import open_results

    out: list[ModelInput] = []
    seen: dict[str, str] = {}
    for path in paths:
        path = str(path)
        f = open_results(path)  # missing, not HDF5, or content not matching its hash: one line
        with f:
            index = {**(spec or {}), **_sweep_index(f, path)}
            if "internals" not in f or not len(f["internals"]):
                raise DataError(f"{path}: no /internals group (run `cape internals --out` or `cape sweep` + "
                                f"`cape merge` first)")
            keys = sorted(f["internals"])
            with progress.task(f"reading {path}", total=len(keys), unit="model") as advance:
                out += _read_models(f, path, keys, index, models, seen, advance)
    if models is not None:
        missing = [m for m in models if m not in seen]
        if missing:
            raise DataError(f"--models: no internals for {', '.join(missing)} in {', '.join(map(str, paths))}")
    _resolve_from_scores(out, scores)
    for mi in out:
        if not math.isfinite(mi.params) and counted and math.isfinite(counted.get(mi.name, math.nan)):
            mi.params, mi.params_source = float(counted[mi.name]), "counted"
    return out


def _read_models(f, path: str, keys: list[str], index: dict, models: list[str] | None, seen: dict[str, str],
                 advance) -> list[ModelInput]:
    """The ``/internals/<key>`` groups of one open file as ModelInputs (``seen``: label -> where, updated)."""
    from cape_hpc.io.store import read_tree

    out: list[ModelInput] = []
    for key in keys:
        where = f"{path}:/internals/{key}"
        res = InternalsResult.from_tree(read_tree(f[f"internals/{key}"]), where=where)
        advance(1)
        # a sweep stores each model under its job name (which may differ from the id it loaded)
        label = key.replace("|", "/")
        if models is not None and label not in models and res.model not in models:
            continue
        if label in seen:
            raise DataError(f"{where}: model {label!r} is also in {seen[label]} (one result per model)")
        seen[label] = where
        mi = ModelInput(res, where, label=label)
        s = index.get(key) or index.get(res.model) or {}
        if s.get("family"):
            mi.family = s["family"]
        if math.isfinite(s.get("params", math.nan)):
            mi.params, mi.params_source = float(s["params"]), "spec"
        out.append(mi)
    return out


def _resolve_from_scores(inputs: list[ModelInput], scores: pd.DataFrame | None) -> None:
    if scores is None or not len(inputs):
        return
    by_name = {str(m).lower(): i for i, m in enumerate(scores["model"].astype(str))}
    for mi in inputs:
        i = by_name.get(mi.name.lower())
        if i is None:
            continue
        row = scores.iloc[i]
        if not mi.family and isinstance(row.get("family"), str):
            mi.family = row["family"]
        p = float(row.get("params", math.nan))
        if not math.isfinite(mi.params) and math.isfinite(p):
            mi.params, mi.params_source = p, "scores"


def _identity(res: InternalsResult) -> tuple:
    return (res.prompt_set_sha256, res.set_r, res.set_t, int(res.n_r), int(res.n_t), res.pooling)


def check_prompt_sets(inputs: list[ModelInput]) -> None:
    """One prompt set and one block layout for all models, else DataError naming the models."""
    if not inputs:
        raise DataError("no model internals to analyse")
    for mi in inputs:
        if not mi.result.prompt_set_sha256:
            raise DataError(f"{mi.where}: the result records no prompt-set hash (prompt set missing): "
                            f"cannot tell which prompts it measured")
    ref = inputs[0]
    names = ("prompt-set sha256", "set R", "set T", "prompts in R", "prompts in T", "pooling")
    for mi in inputs[1:]:
        a, b = _identity(ref.result), _identity(mi.result)
        diff = [f"{n} {x!r:.20} != {y!r:.20}" for n, x, y in zip(names, b, a) if x != y]  # mi's, then ref's
        if diff:
            raise DataError(f"mixed prompt sets: {mi.where} vs {ref.where}: {'; '.join(diff)} (every model of a "
                            f"cross-model analysis must measure the same prompts)")
    with_blocks = [mi for mi in inputs if _has_blocks(mi.result)]
    if with_blocks:
        r0 = with_blocks[0]
        for mi in with_blocks[1:]:
            a = (r0.result.blocks.n_blocks, r0.result.blocks.seed)
            b = (mi.result.blocks.n_blocks, mi.result.blocks.seed)
            if a != b:
                raise DataError(f"mixed prompt blocks: {mi.where} has (blocks, block seed) {b}, {r0.where} has {a} "
                                f"(the paired block bootstrap needs one layout; rerun with the same --blocks "
                                f"and --block-seed)")


def _has_blocks(res: InternalsResult) -> bool:
    b = res.blocks
    return (b.n_blocks > 0 and b.counts.ndim == 2 and b.counts.shape[1] == b.n_blocks
            and b.layer_sums.ndim == 4 and b.layer_sums.shape[0] == res.n_layers and b.layer_sums.shape[2] == b.n_blocks)


def _per_head(head_sums: np.ndarray, n_heads: int) -> np.ndarray:
    """[L, 2, G, H * hd] -> [L * H, 2, G, hd] (head h of layer l at row l * H + h)."""
    L, S, G, W = head_sums.shape
    hd = W // n_heads
    return head_sums.reshape(L, S, G, n_heads, hd).transpose(0, 3, 1, 2, 4).reshape(L * n_heads, S, G, hd)


def model_replicates(res: InternalsResult, n_resamples: int, seed: int, level: float = 0.95) -> dict[str, np.ndarray] | None:
    """Block-bootstrap replicates [R] of each summary of one model (NaN = invalid resample), or None
    when the result has no block statistics.  Keys: final, mean, min, competing_layers, head_net,
    head_median, head_coop, head_competing, hidden (the last four / five only when tapped)."""
    if not _has_blocks(res):
        return None
    b = res.blocks
    boot = BlockBootstrap(np.asarray(b.counts, dtype=np.float64), int(n_resamples), int(seed) + BLOCK_SEED_OFFSET,
                          float(level))
    lay = boot.coupling(np.asarray(b.layer_sums, dtype=np.float64))          # [R, L]
    bad = ~np.isfinite(lay).all(axis=1)
    out = {"first": lay[:, 0].copy(), "final": lay[:, -1].copy(), "mean": lay.mean(axis=1), "min": lay.min(axis=1)}
    if b.pairs_below.ndim == 3 and b.pairs_below.shape[0] == res.n_layers and b.pairs_below.shape[1] == b.n_blocks:
        fr = boot.fraction_below(np.asarray(b.pairs_below), np.asarray(b.pair_counts, dtype=np.float64))
        comp = (fr > 0.5).sum(axis=1).astype(np.float64)
        comp[~np.isfinite(fr).all(axis=1)] = np.nan
        out["competing_layers"] = comp
    if res.n_heads and b.head_sums.ndim == 4 and b.head_sums.shape[0] == res.n_layers and b.head_sums.shape[2] == b.n_blocks \
            and b.head_sums.shape[3] % res.n_heads == 0 and b.head_sums.shape[3]:
        hc = boot.coupling(_per_head(np.asarray(b.head_sums, dtype=np.float64), res.n_heads))   # [R, L*H]
        hbad = ~np.isfinite(hc).all(axis=1)
        for key, v in (("head_net", hc.mean(axis=1)), ("head_median", np.median(hc, axis=1)),
                       ("head_coop", (hc > 0).mean(axis=1)),
                       ("head_competing", (hc < COMPETING_THRESHOLD).sum(axis=1).astype(np.float64))):
            v = np.asarray(v, dtype=np.float64)
            v[hbad] = np.nan
            out[key] = v
    if b.final_sums.ndim == 3 and b.final_sums.shape[1] == b.n_blocks and b.final_sums.shape[2]:
        out["hidden"] = boot.coupling(np.asarray(b.final_sums, dtype=np.float64)[None])[:, 0]
    for k in ("first", "final", "mean", "min"):
        out[k][bad] = np.nan
    return out


def _ci(reps: dict | None, key: str, level: float) -> ConfidenceInterval:
    if reps is None or key not in reps:
        return ConfidenceInterval.undefined(level)
    v = reps[key]
    return percentile_interval(v[np.isfinite(v)], level)


def model_row(mi: ModelInput, reps: dict[str, np.ndarray] | None, level: float) -> ModelRow:
    """The table row of one model: point values from its stored result, intervals from ``reps``."""
    res = mi.result
    c = res.layer_coupling
    notes = []
    if reps is None:
        notes.append("no block statistics: intervals over prompts undefined")
    hs = res.head_summary
    hc = res.head_coupling
    measured = hs.n_heads_total > 0 and np.isfinite(hc).any()
    d = res.d_rep
    dfin = np.isfinite(d)
    bn = res.bottleneck
    ok = np.isfinite(c)
    row = ModelRow(
        model=mi.name, family=mi.family, params=float(mi.params), params_source=mi.params_source,
        n_layers=int(res.n_layers), d_model=int(res.d_model), n_heads=int(res.n_heads), input=mi.where,
        final_coupling=float(c[-1]) if len(c) else math.nan, final_coupling_ci=_ci(reps, "final", level),
        first_coupling=float(c[0]) if len(c) else math.nan, first_coupling_ci=_ci(reps, "first", level),
        mean_coupling=float(np.mean(c)) if ok.all() and len(c) else math.nan,
        mean_coupling_ci=_ci(reps, "mean", level),
        min_coupling=float(np.min(c)) if ok.all() and len(c) else math.nan, min_coupling_ci=_ci(reps, "min", level),
        min_layer=int(np.argmin(c)) if ok.all() and len(c) else -1,
        competing_layers=int(np.sum(res.layer_competes)), competing_layers_ci=_ci(reps, "competing_layers", level),
        head_net=float(np.nanmean(hc)) if measured else math.nan, head_net_ci=_ci(reps, "head_net", level),
        head_median=float(np.nanmedian(hc)) if measured else math.nan,
        head_median_ci=_ci(reps, "head_median", level),
        head_cooperative_share=float(hs.cooperative_share) if measured else math.nan,
        head_cooperative_share_ci=_ci(reps, "head_coop", level),
        head_competing_count=int(hs.competing_count), head_competing_count_ci=_ci(reps, "head_competing", level),
        n_heads_total=int(hs.n_heads_total) if measured else 0,
        d_rep_first=float(d[0]) if dfin.any() else math.nan, d_rep_last=float(d[-1]) if dfin.any() else math.nan,
        d_rep_mean=float(np.mean(d[dfin])) if dfin.any() else math.nan,
        d_rep_max=float(np.max(d[dfin])) if dfin.any() else math.nan,
        d_rep_max_layer=int(np.nanargmax(d)) if dfin.any() else -1,
        bottleneck_hidden=float(bn.hidden) if bn.measured else math.nan,
        bottleneck_hidden_ci=_ci(reps, "hidden", level) if bn.measured else ConfidenceInterval.undefined(level),
        bottleneck_logits=float(bn.logits) if bn.measured else math.nan,
        projection_gain=float(bn.logits - bn.hidden) if bn.measured else math.nan,
        n_valid=int(np.isfinite(reps["final"]).sum()) if reps is not None else 0,
        note="; ".join(notes))
    if not mi.family:
        row.note = "; ".join(x for x in (row.note, "no family (not in the job spec or the score table)") if x)
    if not math.isfinite(mi.params):
        row.note = "; ".join(x for x in (row.note, "parameter count unknown") if x)
    return row


def quantity_value(row: ModelRow, quantity: str) -> float:
    """The ladder quantity of a table row."""
    return {"final": row.final_coupling, "mean": row.mean_coupling, "min": row.min_coupling,
            "head_net": row.head_net}[quantity]
