"""The claims registry ``data/claims.yaml``: loading, validation, the claim dataclasses (docs/METHODS.md §2.15).

Each claim: ``id``, ``section``, ``gist``, ``paper`` (the paper's value as printed, a string, or a
list of them), ``method`` (what the paper states), ``inputs`` (what it names), ``compute`` (``fn``
and ``args``: the toolkit computation of the stated method, one of
``cape_hpc.audit.computations.COMPUTE``), ``alternatives`` (named ``args`` overrides, optionally
another ``fn``: other estimators, stratification, units, subsets the paper names; one axis of the
search), ``axes`` (axis name -> list of such alternatives, combined by ``cape_hpc.audit.search``),
``tolerance`` (overrides half a unit of the last printed digit), ``checks`` (the degeneracy
thresholds of ``cape_hpc.audit.degeneracy`` that this claim needs, e.g. ``min_terms``), ``quote``
(the paper's sentence the claim comes from), ``needs`` (``internals``: the claim is evaluated from
model internals, issue 12's hook; with ``models`` and ``quantity`` in ``compute.args``) and ``note``.
Nothing in the registry is a result: every value of the audit is computed from the tables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cape_hpc.audit.search import Choice
from cape_hpc.audit.targets import Target, parse_target
from cape_hpc.audit.degeneracy import CHECKS
from cape_hpc.errors import DataError

__all__ = ["Alternative", "Claim", "default_registry", "load_claims"]


@dataclass(frozen=True)
class Alternative:
    """Another way of computing a claim: ``args`` override the stated ones; ``fn`` ('' = the same)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    fn: str = ""


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    gist: str
    paper: Any                  # as printed: a string (or bool), or a list of them
    method: str
    inputs: list[str]
    fn: str
    args: dict[str, Any]
    alternatives: list[Alternative]
    tolerance: float | None = None
    note: str = ""
    axes: list[tuple[str, list[Choice]]] = field(default_factory=list)  # the search (alternatives included)
    quote: str = ""
    checks: dict[str, Any] = field(default_factory=dict)
    needs: str = ""

    @property
    def papers(self) -> list[Any]:
        return self.paper if isinstance(self.paper, list) else [self.paper]

    @property
    def paper_text(self) -> str:
        return ", ".join(str(p) for p in self.papers)

    def targets(self) -> list[Target]:
        return [parse_target(p, self.tolerance) for p in self.papers]


def default_registry() -> Path:
    from cape_hpc.io.data import data_file

    return data_file("claims.yaml")


def _mapping(value: Any, where: str, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(f"{where}: {what} must be a mapping, got {type(value).__name__}")
    return dict(value)


def load_claims(path: str | os.PathLike | None = None, functions: Mapping[str, Any] | None = None) -> list[Claim]:
    """Read and validate the registry (DataError naming the file and the claim on any problem).

    ``functions``: the known computation names (default ``cape_hpc.audit.computations.COMPUTE``).
    """
    import yaml

    if functions is None:
        from cape_hpc.audit.computations import COMPUTE as functions
    path = Path(path) if path else default_registry()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None
    items = raw.get("claims") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a list of claims under 'claims'")
    out, seen = [], set()
    for i, c in enumerate(items):
        where = f"{path}: claim #{i + 1}"
        if not isinstance(c, Mapping):
            raise DataError(f"{where}: expected a mapping, got {type(c).__name__}")
        for k in ("id", "gist", "paper", "method", "compute"):
            if k not in c:
                raise DataError(f"{where}: missing field {k!r}")
        cid = str(c["id"])
        if cid in seen:
            raise DataError(f"{where}: duplicate id {cid!r}")
        seen.add(cid)
        where = f"{where} ({cid})"
        comp = _mapping(c["compute"], where, "'compute'")
        if comp.get("fn") not in functions:
            raise DataError(f"{where}: unknown compute fn {comp.get('fn')!r}")
        tol = c.get("tolerance")
        if tol is not None:
            try:
                tol = float(tol)
            except (TypeError, ValueError):
                raise DataError(f"{where}: tolerance {tol!r} is not a number") from None
        paper = c["paper"]
        for p in (paper if isinstance(paper, list) else [paper]):
            parse_target(p, tol)
        alts, axes = [], []
        for a in c.get("alternatives") or []:
            alts.append(_alternative(a, where, functions))
        for axis, entries in _mapping(c.get("axes"), where, "'axes'").items():
            if not isinstance(entries, list) or not entries:
                raise DataError(f"{where}: axis {axis!r} must be a non-empty list of alternatives")
            chs = []
            for a in entries:
                alt = _alternative(a, where, functions)
                chs.append(Choice(str(axis), alt.name, alt.args, alt.fn,
                                  _mapping(a.get("when"), where, f"alternative {alt.name!r} when")))
            axes.append((str(axis), chs))
        if alts:
            axes.append(("alternative", [Choice("alternative", a.name, a.args, a.fn) for a in alts]))
        checks = _mapping(c.get("checks"), where, "'checks'")
        unknown = sorted(set(checks) - set(CHECKS))
        if unknown:
            raise DataError(f"{where}: unknown check(s) {', '.join(unknown)} (known: {', '.join(CHECKS)})")
        needs = str(c.get("needs") or "")
        if needs not in ("", "internals", "data"):
            raise DataError(f"{where}: needs {needs!r} is not 'internals' or 'data'")
        out.append(Claim(cid, str(c.get("section", "")), str(c["gist"]), paper, str(c["method"]),
                         [str(x) for x in (c.get("inputs") or [])], str(comp["fn"]),
                         _mapping(comp.get("args"), where, "'compute.args'"), alts, tol, str(c.get("note", "")),
                         axes, str(c.get("quote", "") or "").strip(), checks, needs))
    return out


def _alternative(a: Any, where: str, functions) -> Alternative:
    if not isinstance(a, Mapping) or "name" not in a:
        raise DataError(f"{where}: alternative without a name")
    fn = str(a.get("fn") or "")
    if fn and fn not in functions:
        raise DataError(f"{where}: alternative {a['name']!r}: unknown compute fn {fn!r}")
    return Alternative(str(a["name"]), _mapping(a.get("args"), where, f"alternative {a['name']!r} args"), fn)
