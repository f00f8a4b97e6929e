"""Typed access to a results file for the figures and the HTML report.

A results file is read once (``read_results(path, "/")``) and every stored result in it is decoded
into its class (``docs/CONTRACTS.md`` "Results: one schema"):

- a group that carries ``_schema`` is decoded with :func:`cape_hpc.schema.load_result`;
- ``LAYOUT`` says which class the report expects at which path (``/analysis/coupling`` holds a
  ``CouplingResult``, ``/internals/<model>`` an ``InternalsResult``, ...).  A stored result of
  another class at such a path, a missing field, an extra field or a value of the wrong type
  raises :class:`cape_hpc.errors.SchemaError` naming the group and the field (the CLI prints one
  line).  Nothing is guessed: the figures read the typed attributes of the decoded results.
- a group that is simply absent is not an error: ``Results.get`` raises :class:`Skip` with a note
  naming the missing group, and the figure or chart is skipped with that note.

``Results`` offers ``get(path, cls)`` (one result), ``find(cls)`` (every stored result of a class,
with its path), ``stored`` (every decoded result, in file order), ``provenance_rows()`` and
``root_attrs``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cape_hpc.errors import CapeError, DataError, SchemaError
from cape_hpc.schema import (RESULT_CLASSES, BootstrapSummary, ConfidenceInterval, Provenance, load_result, to_jsonable)
from cape_hpc.io.scores import InputTable
from cape_hpc.report.layout import LAYOUT


class Skip(Exception):
    """Raised by an extractor or figure when the results file lacks the group it needs."""


def expected_class(path: str) -> type | None:
    """The class ``LAYOUT`` expects at a group path (None: any stored result, or none)."""
    for pattern, cls in LAYOUT:
        if pattern.fullmatch(path):
            return cls
    return None


def decode(tree: Any, where: str, cls: type | None) -> Any:
    """The stored result at ``where`` as an instance of ``cls`` (SchemaError naming group and field)."""
    if isinstance(tree, dict) and "_schema" in tree:
        name = str(tree["_schema"])
        if cls is not None and name != cls.__name__:
            raise SchemaError(f"{where}: holds a {name}, the report reads a {cls.__name__} here")
        return load_result(tree, where=where)
    if cls is None:
        raise SchemaError(f"{where}: not a stored result (no _schema attribute)")
    # every class of the layout derives from Result: from_tree requires _schema and names the group
    return cls.from_tree(tree, where=where)


@dataclass
class Results:
    path: str
    tree: dict[str, Any]
    #: every stored result, decoded, by group path (file order)
    stored: dict[str, Any] = field(default_factory=dict)
    #: stored results of classes the report does not know (e.g. written by a newer version): path -> class
    unknown: dict[str, str] = field(default_factory=dict)
    #: the files read (one, or several for ``load_many``)
    files: list[str] = field(default_factory=list)
    #: groups stored in more than one file of ``load_many``: group -> the later file not shown
    shadowed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "Results":
        from cape_hpc.io.store import is_cape_file, read_results

        p = Path(path)
        if not p.exists():
            raise DataError(f"{p}: results file not found")
        if p.is_dir():
            raise DataError(f"{p}: is a folder, not a results file")
        try:
            tree = read_results(p, "/")
        except (OSError, CapeError) as exc:
            raise DataError(f"{p}: not a readable HDF5 results file ({exc})") from None
        if not is_cape_file(p):
            raise DataError(f"{p}: an HDF5 file that cape_hpc did not write (no cape_hpc_version root "
                            f"attribute): nothing to report")
        return cls.from_tree(str(p), tree)

    @classmethod
    def load_many(cls, paths: list[str | Path]) -> "Results":
        """One Results over several files (an analysis file, a merged sweep, a steering run), each
        read and verified by ``load``.  ``path`` joins the file names; the root attributes are the
        first file's; a group stored in two files is the first file's, the later copy is listed in
        ``shadowed`` (group -> file)."""
        parts = [cls.load(p) for p in paths]
        if len(parts) == 1:
            return parts[0]
        out = cls(", ".join(r.path for r in parts), {k: v for k, v in parts[0].tree.items() if not isinstance(v, dict)})
        for r in parts:
            out.files.append(r.path)
            for group, obj in r.stored.items():
                if group in out.stored:
                    out.shadowed[group] = r.path
                else:
                    out.stored[group] = obj
            out.unknown.update({g: n for g, n in r.unknown.items() if g not in out.unknown})
        return out

    @classmethod
    def from_tree(cls, path: str, tree: dict[str, Any]) -> "Results":
        res = cls(path, tree, files=[path])
        res.stored, res.unknown = _decode_all(tree)
        return res

    @property
    def root_attrs(self) -> dict[str, Any]:
        return {k: v for k, v in self.tree.items() if not isinstance(v, (dict, list, np.ndarray))}

    def has(self, path: str) -> bool:
        return _norm(path) in self.stored

    def get(self, path: str, cls: type) -> Any:
        """The result stored at ``path``; Skip naming the group when it is absent."""
        p = _norm(path)
        if p not in self.stored:
            raise Skip(f"no {p} group ({cls.__name__}) in {self.path}")
        obj = self.stored[p]
        if not isinstance(obj, cls):  # LAYOUT and the caller disagree: a bug of the report
            raise SchemaError(f"{p}: holds a {type(obj).__name__}, the report reads a {cls.__name__} here")
        return obj

    def optional(self, path: str, cls: type) -> Any | None:
        """Like ``get`` but None when the group is absent."""
        try:
            return self.get(path, cls)
        except Skip:
            return None

    def find(self, cls: type, under: str = "/") -> list[tuple[str, Any]]:
        """Every stored result of class ``cls`` below ``under`` (file order), with its path."""
        prefix = _norm(under).rstrip("/") + "/"
        return [(p, o) for p, o in self.stored.items() if isinstance(o, cls) and (p + "/").startswith(prefix)]

    def provenance_rows(self) -> list[dict[str, Any]]:
        """One row per stored result (method, options, seed, resamples, input hashes, code version),
        then one per input table under /scores."""
        rows = []
        for path, obj in self.stored.items():
            if isinstance(obj, InputTable):
                rows.append({"group": path, "method": "input table", "options": "", "seed": None,
                             "n_resamples": None,
                             "inputs": f"{obj.file}={obj.sha256[:12]} ({obj.n_rows} rows)", "version": ""})
                continue
            prov = getattr(obj, "provenance", None) if _declares(obj, "provenance") else None
            if not isinstance(prov, Provenance):
                rows.append({"group": path, "method": "", "options": "", "seed": None, "n_resamples": None,
                             "inputs": "", "version": ""})
                continue
            rows.append({
                "group": path,
                "method": prov.method,
                "options": json.dumps(to_jsonable(prov.options), sort_keys=True) if prov.options else "",
                "seed": prov.seed,
                "n_resamples": prov.n_resamples,
                "inputs": ", ".join(f"{k}={str(v)[:12]}" for k, v in sorted(prov.inputs.items())),
                "version": prov.version,
            })
        return rows


def _norm(path: str) -> str:
    return "/" + path.strip("/")


def _declares(obj: Any, name: str) -> bool:
    return dataclasses.is_dataclass(obj) and any(f.name == name for f in dataclasses.fields(obj))


def _decode_all(tree: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Decode every stored result of a file tree: the groups ``LAYOUT`` names and any other group
    with ``_schema``; descend into the others (``/analysis``, ``/internals``, ``/steering/<model>``).
    A result of a class the report does not import, at a path ``LAYOUT`` does not name, is listed
    in ``unknown`` (shown, not drawn)."""
    out: dict[str, Any] = {}
    unknown: dict[str, str] = {}

    def visit(path: str, node: dict[str, Any]) -> None:
        cls = expected_class(path)
        if cls is None and "_schema" in node and str(node["_schema"]) not in RESULT_CLASSES:
            unknown[path] = str(node["_schema"])
            return
        if "_schema" in node or cls is not None:
            out[path] = decode(node, path, cls)
            return
        for k, v in node.items():
            if isinstance(v, dict):
                visit(f"{path}/{k}", v)

    for k, v in tree.items():
        if isinstance(v, dict):
            visit(f"/{k}", v)
    return out, unknown


# ----------------------------------------------------------------------------------------- values

def ci_bounds(ci: ConfidenceInterval) -> tuple[float, float]:
    """(low, high) of a ConfidenceInterval."""
    return float(ci.low), float(ci.high)


def boot_interval(boot: BootstrapSummary, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of a bootstrap summary's interval at ``level`` (NaNs when it has none)."""
    return ci_bounds(boot.interval(level))


def jsonable(v: Any) -> Any:
    """Plain JSON-ready values (NaN/inf -> null), for embedding into the HTML."""
    return to_jsonable(v)

