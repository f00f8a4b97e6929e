"""Tolerant access to a results file for figures and the HTML report.

Every producer (analysis, dynamics, internals, steering) stores its dataclasses through
``cape_hpc.io.store``; the field names may evolve.  The readers here never raise on a missing group
or field: they return ``None`` and the caller records a note that names the missing group, so a
figure without data is *skipped*, never an error.

``Results`` holds the whole tree (read once with ``read_results(path, "/")``) and offers:

- ``group("analysis/coupling")`` -> dict or None
- ``children("internals")`` -> {name: subtree}
- ``provenance_rows()`` -> one row per stored result group (method, options, seed, inputs, ...)
- ``root_attrs`` (version, git commit, created, command line)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cape_hpc.errors import DataError


class Skip(Exception):
    """Raised by an extractor/figure when the results file lacks the data it needs."""


def first(d: Any, *keys: str, default: Any = None) -> Any:
    """The value of the first key present (and not None) in dict ``d``."""
    if not isinstance(d, dict):
        return default
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def fnum(v: Any) -> float:
    """A float from a scalar (NaN for None / non-numbers)."""
    try:
        if v is None:
            return math.nan
        if isinstance(v, np.ndarray):
            v = v.item() if v.size == 1 else math.nan
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def as_records(obj: Any) -> list[dict]:
    """A list of row dicts from a stored table (list of dicts) or a dict of equal-length columns."""
    if obj is None:
        return []
    if isinstance(obj, list):
        if all(isinstance(r, dict) for r in obj):
            return obj
        return []
    if isinstance(obj, dict):
        cols = {k: v for k, v in obj.items() if isinstance(v, (list, np.ndarray)) and np.ndim(v) == 1}
        if not cols:
            return []
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            return []
        n = lengths.pop()
        return [{k: _scalar(v[i]) for k, v in cols.items()} for i in range(n)]
    return []


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def interval_of(d: Any, level: str = "0.95") -> tuple[float, float]:
    """(lo, hi) from the many shapes a confidence interval may be stored in; NaNs if absent.

    Accepts ``ci`` as {"0.95": [lo, hi]} (a BootstrapResult), ``ci_lo``/``ci_hi`` fields,
    ``lo``/``hi``, ``ci95`` = [lo, hi], or an array [lo, hi].
    """
    if d is None:
        return math.nan, math.nan
    if isinstance(d, (list, tuple, np.ndarray)) and len(d) == 2:
        return fnum(d[0]), fnum(d[1])
    if not isinstance(d, dict):
        return math.nan, math.nan
    for lo_k, hi_k in (("ci_lo", "ci_hi"), ("lo", "hi"), ("ci95_lo", "ci95_hi"), ("ci_low", "ci_high"),
                       ("lower", "upper"), ("wilson_lo", "wilson_hi"), ("rate_ci_low", "rate_ci_high")):
        if lo_k in d and hi_k in d:
            return fnum(d[lo_k]), fnum(d[hi_k])
    ci = first(d, "ci", "interval", "ci95", "wilson")
    if isinstance(ci, dict):
        for k in (level, str(float(level)), f"{float(level):g}", "95", "0.95"):
            if k in ci:
                return interval_of(ci[k])
        vals = list(ci.values())
        if vals:
            return interval_of(vals[0])
    if ci is not None:
        return interval_of(ci)
    boot = first(d, "bootstrap", "boot")
    if isinstance(boot, dict):
        return interval_of(boot, level)
    return math.nan, math.nan


def parse_options(v: Any) -> Any:
    """Provenance options are stored as a group (dict) or canonical JSON text."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


@dataclass
class Results:
    path: str
    tree: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "Results":
        from cape_hpc.io.store import read_results

        p = Path(path)
        if not p.exists():
            raise DataError(f"{p}: results file not found")
        try:
            tree = read_results(p, "/")
        except OSError as exc:
            raise DataError(f"{p}: not a readable HDF5 results file ({exc})") from None
        return cls(str(p), tree)

    @property
    def root_attrs(self) -> dict[str, Any]:
        return {k: v for k, v in self.tree.items() if not isinstance(v, (dict, list, np.ndarray))}

    def group(self, path: str) -> dict | None:
        node: Any = self.tree
        for part in path.strip("/").split("/"):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, dict) else None

    def first_group(self, *paths: str) -> tuple[str, dict] | tuple[None, None]:
        for p in paths:
            g = self.group(p)
            if g is not None:
                return p, g
        return None, None

    def need(self, *paths: str) -> tuple[str, dict]:
        """The first present group among ``paths``; Skip naming them when none is present."""
        p, g = self.first_group(*paths)
        if g is None:
            raise Skip("no " + " or ".join(f"/{q.strip('/')}" for q in paths) + f" group in {self.path}")
        return p, g

    def children(self, path: str) -> dict[str, dict]:
        g = self.group(path)
        if g is None:
            return {}
        return {k: v for k, v in g.items() if isinstance(v, dict)}

    def result_groups(self) -> list[tuple[str, dict]]:
        """Every group that carries a ``provenance`` (a stored result), depth-first, with its path."""
        out: list[tuple[str, dict]] = []

        def walk(prefix: str, node: dict) -> None:
            if "provenance" in node or "method" in node and prefix.count("/") >= 1:
                out.append((prefix, node))
                return
            for k, v in node.items():
                if isinstance(v, dict) and k not in ("provenance",):
                    walk(f"{prefix}/{k}", v)

        for k, v in self.tree.items():
            if isinstance(v, dict):
                walk(f"/{k}", v)
        return out

    def provenance_rows(self) -> list[dict[str, Any]]:
        rows = []
        for path, node in self.result_groups():
            prov = node.get("provenance") if isinstance(node.get("provenance"), dict) else node
            inputs = prov.get("inputs") if isinstance(prov.get("inputs"), dict) else {}
            inputs.update({k.split(":", 1)[1]: v for k, v in prov.items()
                           if isinstance(k, str) and k.startswith("input_sha256:")})
            opts = parse_options(prov.get("options"))
            rows.append({
                "group": path,
                "method": prov.get("method", ""),
                "options": json.dumps(_plain(opts), sort_keys=True, default=str) if opts not in (None, "") else "",
                "seed": prov.get("seed"),
                "n_resamples": prov.get("n_resamples"),
                "inputs": ", ".join(f"{k}={str(v)[:12]}" for k, v in sorted(inputs.items())),
                "version": prov.get("version", ""),
            })
        for name, g in self.children("scores").items():  # the input tables as used
            rows.append({"group": f"/scores/{name}", "method": "input table", "options": "",
                         "seed": None, "n_resamples": None,
                         "inputs": f"{g.get('file', name)}={str(g.get('sha256', ''))[:12]} ({g.get('n_rows', '?')} rows)",
                         "version": ""})
        return rows


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def jsonable(v: Any) -> Any:
    """Plain JSON-ready values (NaN/inf -> null), for embedding into the HTML."""
    return _plain(v)


def finite(values: Iterable[Any]) -> np.ndarray:
    return np.array([fnum(v) for v in values], dtype=float)
