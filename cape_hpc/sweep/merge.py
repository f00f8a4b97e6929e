"""Merge a results directory's shards into one results file.

Output::

    /internals/<model>            InternalsResult of each complete shard
    /steering/<model>/<run>       SteeringResult of each run
    /scores_runs/<model>          ScoreRun of each shard with benchmark scores (a job's scores: section)
    /score_table                  ScoreImport built from them (``--scores merged.h5``; sweep/scores.py)
    /sweep                        SweepIndex: job provenance shared by all shards (options, prompt
                                  hashes, code version) and one row per model (content hash of its
                                  internals, provenance hash, source, resolved revision); its
                                  provenance inputs hold each internals hash and, as "<model>.threads",
                                  the threads the shard was computed with (torch=,numba=,omp=)

Every result is read from its shard with its class's ``from_tree`` (a shard whose results do not
match the schema is reported, not merged) and written with the schema's ``to_tree``.  Only
complete, intact shards are merged; corrupt or incomplete ones are reported (and make the exit
status non-zero), never copied.  Shards whose job-level provenance differs (another prompt set,
other options or code) are refused unless ``allow_mixed``.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import h5py

from cape_hpc.errors import SchemaError, StoreError
from cape_hpc.internals.results import InternalsResult
from cape_hpc.io.store import atomic_h5, content_hash, read_tree, write_tree
from cape_hpc.schema import Provenance, Result
from cape_hpc.steering.results import SteeringResult
from cape_hpc.sweep.scores import merge_scores
from cape_hpc.sweep import shards
from cape_hpc.sweep.options import MergeOptions
from cape_hpc.sweep.spec import options_hash

__all__ = ["merge_shards", "read_shard_results", "MergeResult", "BadShard", "SweepIndex", "MergedModel"]

_JOB_KEYS = ("job_options", "prompt_sha256", "code_version", "format")


@dataclass
class BadShard:
    """A shard that was not merged: corrupt, incomplete, or not matching the result schema."""

    shard: str
    status: str          # corrupt | incomplete | schema
    detail: str


@dataclass
class MergeResult(Result):
    """What ``merge_shards`` did."""

    output: str
    merged: list[str]
    bad: list[BadShard]
    missing: list[str]   # models of --job without a complete shard
    outcome: str
    provenance: Provenance

    def exit_status(self) -> int:
        return 1 if self.bad or self.missing else 0


@dataclass
class MergedModel:
    model: str
    internals_sha256: str    # content hash of /internals/<model> ("" when the shard has none)
    provenance_sha256: str   # hash of the shard's provenance (model entry, job options, prompts, code)
    source: str
    resolved_revision: str
    family: str = ""         # from the job spec ("" when not given)
    params: float = math.nan  # parameter count from the job spec (NaN when not given)


@dataclass
class SweepIndex(Result):
    """Stored at ``/sweep`` of a merged file: the job provenance the shards share, model by model."""

    job_options: str         # canonical JSON of the job options
    prompt_sha256: dict[str, str]
    code_version: str
    format: int
    mixed_provenance: bool
    models: list[MergedModel]
    provenance: Provenance


def _threads_of(good: list, names: list[str]) -> dict[str, str]:
    """``{"<model>.threads": "torch=8,numba=8,omp=8"}``: the threads each shard was computed with (its
    ``info_threads``; shards written before it was recorded have none)."""
    return {f"{name}.threads": str(info["threads"]) for (_, _, _, info), name in zip(good, names) if "threads" in info}


def read_shard_results(path: str | os.PathLike, name: str) -> tuple[InternalsResult | None, dict[str, SteeringResult], dict]:
    """The results of one shard, decoded by the schema: (internals or None, {run: steering}, info attrs).

    Raises SchemaError naming the shard, group and field when a stored result does not match its class.
    """
    with h5py.File(path, "r") as src:
        internals = None
        if "internals" in src and name in src["internals"]:
            where = f"{path}:/internals/{name}"
            internals = InternalsResult.from_tree(read_tree(src[f"internals/{name}"]), where=where)
        steering = {}
        if "steering" in src and name in src["steering"]:
            for run in src[f"steering/{name}"]:
                where = f"{path}:/steering/{name}/{run}"
                steering[run] = SteeringResult.from_tree(read_tree(src[f"steering/{name}/{run}"]), where=where)
        info = {k[5:]: (v.decode() if isinstance(v, bytes) else v) for k, v in src.attrs.items()
                if k.startswith("info_")}
    return internals, steering, info


def merge_shards(results_dir: str | os.PathLike, output: str | os.PathLike, opts: MergeOptions | None = None, *,
                 expect: list[str] | None = None, **changes: Any) -> MergeResult:
    """Merge the complete shards of ``results_dir`` into ``output`` (see the module docstring).

    ``opts`` (defaults when None), any field overridden by keyword (``force=True``); ``expect``: the
    models that should have a shard (the missing ones are reported)."""
    opts = opts or MergeOptions()
    if changes:
        opts = opts.replace(**changes)
    d = shards.shards_dir(results_dir)
    if not d.is_dir():
        raise StoreError(f"{results_dir}: no shards/ folder (is this a `cape sweep` results directory?)")
    good: list[tuple[shards.ShardState, InternalsResult | None, dict, dict]] = []
    bad: list[BadShard] = []
    for p in sorted(d.glob("*.h5")):
        if p.name.startswith("."):
            continue
        st = shards.inspect_shard(p)
        if st.status != "complete":
            bad.append(BadShard(str(p), st.status, st.detail))
            continue
        try:
            internals, steering, info = read_shard_results(p, st.provenance["model"])
        except SchemaError as exc:
            bad.append(BadShard(str(p), "schema", str(exc)))
            continue
        good.append((st, internals, steering, info))
    if not good:
        raise StoreError(f"{d}: no complete shard to merge" + (f" ({len(bad)} corrupt/incomplete)" if bad else ""))
    ref = {k: good[0][0].provenance.get(k) for k in _JOB_KEYS}
    mixed = []
    for st, *_ in good[1:]:
        diff = shards.provenance_diff(ref, {k: st.provenance.get(k) for k in _JOB_KEYS})
        if diff:
            mixed.append(f"{st.path.name}: {'; '.join(diff[:3])}")
    if mixed and not opts.allow_mixed:
        raise StoreError(f"{results_dir}: shards of different provenance are not merged "
                         f"(vs {good[0][0].path.name}): " + " | ".join(mixed[:5]) + " (pass --allow-mixed to merge anyway)")
    names = [st.provenance["model"] for st, *_ in good]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise StoreError(f"{results_dir}: model {twice[0]!r} appears in two shards")
    missing = sorted(set(expect or []) - set(names))
    rows = []
    with atomic_h5(output, force=opts.force) as out:
        for (st, internals, steering, info), name in zip(good, names):
            digest = ""
            if internals is not None:
                g = out.require_group(f"internals/{name}")
                write_tree(g, internals)
                digest = content_hash(g)
            for run, res in steering.items():
                write_tree(out.require_group(f"steering/{name}/{run}"), res)
            rows.append(MergedModel(name, digest, options_hash(st.provenance), str(info.get("source", "")),
                                    str(info.get("resolved_revision", "")), str(info.get("family", "")),
                                    float(info.get("params", math.nan))))
        prov = Provenance("cape_hpc.sweep.merge_shards", opts.to_dict(),
                          inputs={**{r.model: r.internals_sha256 for r in rows}, **_threads_of(good, names)})
        index = SweepIndex(job_options=json.dumps(ref["job_options"], sort_keys=True, default=str),
                           prompt_sha256={str(k): str(v) for k, v in (ref["prompt_sha256"] or {}).items()},
                           code_version=str(ref["code_version"]), format=int(ref["format"] or 0),
                           mixed_provenance=bool(mixed), models=rows, provenance=prov)
        write_tree(out.require_group("sweep"), index)
        no_table = merge_scores(out, [(st.path, name) for (st, *_), name in zip(good, names)])
        if no_table and "scores" in (ref["job_options"] or {}):
            warnings.warn(f"{output}: no score table merged: {no_table}", stacklevel=2)
    return MergeResult(str(output), names, bad, missing, "written", prov)
