"""The bounded search over a claim's method choices (docs/METHODS.md §2.15, "Search").

A claim declares method *axes* (``axes:`` in ``data/claims.yaml``): for each axis (estimator,
derivative scheme, units, start point, subset, attach rule, interval split, ...) the alternatives
to the stated choice, each a named override of the computation's ``args`` (optionally another
``fn`` -- then its ``args`` replace the stated ones instead of overriding them --, optionally
``when:`` -- the merged args it applies to, e.g. an attach rule only for the
sign-change estimator).  The registry's flat ``alternatives:`` list is one more axis,
``alternative``, whose entries exclude each other.

:func:`combinations` enumerates the stated combination first, then every combination that changes
one axis, then two, ... (the product of the axes, in registry order within each size) until
``budget`` combinations are listed.  Combinations whose merged computation is identical to an earlier
one (same ``fn`` and ``args``) are dropped, not counted: they cannot change the value.  A choice whose
``when`` does not hold for the merged args is not combined (it would be ignored by the computation).
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Choice", "Combination", "combinations", "n_product", "STATED"]

STATED = "stated method"


@dataclass(frozen=True)
class Choice:
    """One alternative on one axis: ``args`` override the stated ones; ``fn`` ('' = the same)."""

    axis: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    fn: str = ""
    when: dict[str, Any] = field(default_factory=dict)

    def applies(self, args: dict[str, Any]) -> bool:
        for k, want in self.when.items():
            have = args.get(k)
            if isinstance(want, list):
                if have not in want:
                    return False
            elif have != want:
                return False
        return True


@dataclass(frozen=True)
class Combination:
    """A point of the search: the choices made (empty = the stated method), the merged computation."""

    choices: tuple[Choice, ...]
    fn: str
    args: dict[str, Any]

    @property
    def name(self) -> str:
        return " + ".join(c.name for c in self.choices) if self.choices else STATED

    @property
    def n_changes(self) -> int:
        return len(self.choices)


def _key(fn: str, args: dict) -> str:
    return fn + json.dumps(args, sort_keys=True, default=str)


def n_product(axes: list[tuple[str, list[Choice]]]) -> int:
    """The size of the full product (each axis: its stated choice plus its alternatives)."""
    return math.prod(len(ch) + 1 for _, ch in axes)


def combinations(fn: str, args: dict[str, Any], axes: list[tuple[str, list[Choice]]],
                 budget: int) -> tuple[list[Combination], int]:
    """(combinations to evaluate, number of duplicates dropped); see the module doc."""
    out: list[Combination] = []
    seen: set[str] = set()
    dupes = 0
    for k in range(len(axes) + 1):
        for subset in itertools.combinations(range(len(axes)), k):
            for picks in itertools.product(*(axes[i][1] for i in subset)):
                if len(out) >= budget:
                    return out, dupes
                merged = dict(args)
                f = fn
                for c in picks:
                    if c.fn and c.fn != f:   # another computation: its own args, not the stated ones
                        merged = {}
                        f = c.fn
                    merged.update(c.args)
                if not all(c.applies(merged) for c in picks):
                    continue
                key = _key(f, merged)
                if key in seen:
                    dupes += 1
                    continue
                seen.add(key)
                out.append(Combination(tuple(picks), f, merged))
    return out, dupes
