"""Merge a results directory's shards into one results file (DESIGN.md's HDF5 layout).

Output::

    /internals/<model>/...        copied from each complete shard
    /steering/<model>/<run>/...
    /sweep                        attrs: job provenance shared by all shards (options, prompt hashes,
                                  code version); table ``models``: model, content hash of its internals,
                                  provenance hash, source, resolved revision

Only complete, intact shards are merged; corrupt or incomplete ones are reported (and make the
exit status non-zero), never copied.  Shards whose job-level provenance differs (another prompt
set, other options or code) are refused unless ``allow_mixed``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import h5py

from cape_hpc.errors import StoreError
from cape_hpc.schema import Provenance
from cape_hpc.io.store import atomic_h5, content_hash
from cape_hpc.sweep import shards as sh
from cape_hpc.sweep.spec import options_hash

_JOB_KEYS = ("job_options", "prompt_sha256", "code_version", "format")


@dataclass
class MergeResult:
    output: str
    merged: list[str]
    bad: list[dict] = field(default_factory=list)       # {"shard", "status", "detail"}
    missing: list[str] = field(default_factory=list)    # models of --job without a complete shard
    outcome: str = "written"
    provenance: Provenance | None = None

    def exit_status(self) -> int:
        return 1 if self.bad or self.missing else 0


def merge_shards(results_dir: str | os.PathLike, output: str | os.PathLike, *, force: bool = False,
                 allow_mixed: bool = False, expect: list[str] | None = None) -> MergeResult:
    d = sh.shards_dir(results_dir)
    if not d.is_dir():
        raise StoreError(f"{results_dir}: no shards/ folder (is this a `cape sweep` results directory?)")
    good: list[sh.ShardState] = []
    bad = []
    for p in sorted(d.glob("*.h5")):
        if p.name.startswith("."):
            continue
        st = sh.inspect_shard(p)
        if st.status == "complete":
            good.append(st)
        else:
            bad.append({"shard": str(p), "status": st.status, "detail": st.detail})
    if not good:
        raise StoreError(f"{d}: no complete shard to merge" + (f" ({len(bad)} corrupt/incomplete)" if bad else ""))
    ref = {k: good[0].provenance.get(k) for k in _JOB_KEYS}
    mixed = []
    for st in good[1:]:
        diff = sh.provenance_diff(ref, {k: st.provenance.get(k) for k in _JOB_KEYS})
        if diff:
            mixed.append(f"{st.path.name}: {'; '.join(diff[:3])}")
    if mixed and not allow_mixed:
        raise StoreError(f"{results_dir}: shards of different provenance are not merged "
                         f"(vs {good[0].path.name}): " + " | ".join(mixed[:5]) + " (pass --allow-mixed to merge anyway)")
    names = [st.provenance["model"] for st in good]
    missing = sorted(set(expect or []) - set(names))
    rows = []
    with atomic_h5(output, force=force) as out:
        sweep = out.require_group("sweep")
        for k in _JOB_KEYS:
            sweep.attrs[k] = json.dumps(ref[k], sort_keys=True, default=str)
        sweep.attrs["mixed_provenance"] = bool(mixed)
        for st in good:
            name = st.provenance["model"]
            with h5py.File(st.path, "r") as src:
                for top in ("internals", "steering"):
                    if top in src and name in src[top]:
                        dst = out.require_group(top)
                        if name in dst:
                            raise StoreError(f"{st.path}: model {name!r} appears in two shards")
                        src.copy(src[f"{top}/{name}"], dst, name=name)
                info = {k[5:]: (v.decode() if isinstance(v, bytes) else v) for k, v in src.attrs.items()
                        if k.startswith("info_") and k[5:] in ("source", "resolved_revision")}
            data = content_hash(out[f"internals/{name}"]) if name in out.get("internals", {}) else ""
            rows.append((name, data, options_hash(st.provenance), str(info.get("source", "")),
                         str(info.get("resolved_revision", ""))))
        tab = sweep.create_group("models")
        tab.attrs["_kind"] = "table"
        str_dt = h5py.string_dtype("utf-8")
        for i, col in enumerate(("model", "internals_sha256", "provenance_sha256", "source", "resolved_revision")):
            tab.create_dataset(col, data=[r[i] for r in rows], dtype=str_dt)
    return MergeResult(str(output), names, bad, missing,
                       provenance=Provenance("sweep.merge", {"results_dir": str(results_dir), "allow_mixed": allow_mixed},
                                             inputs={r[0]: r[1] for r in rows}))
