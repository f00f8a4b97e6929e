"""Paper values, their tolerance, and the verdict rules of the reproduction audit (docs/METHODS.md §2.15).

A paper value is kept as printed (a string in ``data/claims.yaml``) and parsed into a
:class:`Target`:

- a number ``"-0.989"`` matches a computed value within half a unit of its last printed digit
  (``tolerance:`` in the registry overrides it, e.g. "60x" rounded to tens);
- ``"<1e-5"``, ``">0.78"``, ``"<=0.09"``, ``">=0.99"``: a bound;
- ``"6/7"``: an exact count pair (computed as (k, n));
- ``"true"``/``"false"``: a yes/no property;
- a list of these: every element must match.

A computation may return a :class:`Partial` (a count known only to lie in [lo, hi] because some
named inputs are missing): :func:`match` then answers ``None`` ("the missing data decide") when the
paper's value lies in the range, ``False`` when it does not.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from cape_hpc.errors import DataError

__all__ = ["VERDICT_OK", "VERDICT_ALT", "VERDICT_NO", "VERDICT_DEGENERATE", "VERDICT_INTERNALS", "VERDICT_DATA",
           "VERDICT_METHOD", "VERDICT_UNINFORMATIVE", "VERDICTS", "Target", "Partial", "half_unit", "parse_target",
           "match", "distance", "fmt_value", "verdict_key", "verdict_not_reproduced"]

VERDICT_OK = "reproduced"
VERDICT_ALT = "reproduced only with"
VERDICT_NO = "not reproduced"           # printed as "not reproduced by any of K combinations tried"
VERDICT_DEGENERATE = "degenerate"        # a match only on a degenerate fit or interval (docs/METHODS.md §2.15)
VERDICT_INTERNALS = "needs model internals"
VERDICT_DATA = "needs data not available"
VERDICT_METHOD = "not computable (method not stated)"
VERDICT_UNINFORMATIVE = "holds but not informative"   # a match that a null, a base rate or the fit's size explains
VERDICTS = (VERDICT_OK, VERDICT_ALT, VERDICT_NO, VERDICT_DEGENERATE, VERDICT_INTERNALS, VERDICT_DATA, VERDICT_METHOD,
            VERDICT_UNINFORMATIVE)

#: the verdict of a claim whose computation raised ``Unavailable(kind, ...)``
UNAVAILABLE_VERDICT = {"internals": VERDICT_INTERNALS, "data": VERDICT_DATA, "method": VERDICT_METHOD}


def verdict_not_reproduced(k: int) -> str:
    return f"{VERDICT_NO} by any of {k} combination{'' if k == 1 else 's'} tried"


def verdict_key(verdict: str) -> str:
    """The key under which a verdict is counted ('reproduced only with X' counts as one kind, so does
    'not reproduced by any of K combinations tried')."""
    if verdict.startswith(VERDICT_ALT):
        return f"{VERDICT_ALT} an alternative"
    if verdict.startswith(VERDICT_NO):
        return VERDICT_NO
    if verdict.startswith(VERDICT_UNINFORMATIVE):
        return VERDICT_UNINFORMATIVE
    return verdict


@dataclass
class Partial:
    """A count known only to lie in [lo, hi] because some named inputs are missing."""

    lo: float
    hi: float
    missing: list[str]


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass
class Target:
    """One parsed paper value: kind 'num' | 'bound' | 'ratio' | 'bool'."""

    kind: str
    value: Any
    tol: float = 0.0
    op: str = ""

    def text(self) -> str:
        if self.kind == "num":
            return f"{self.value:g}"
        if self.kind == "bound":
            return f"{self.op}{self.value:g}"
        if self.kind == "ratio":
            return f"{self.value[0]}/{self.value[1]}"
        return str(self.value).lower()


def half_unit(text: str) -> float:
    """Half a unit of the last printed digit: '0.989' -> 0.0005, '3.5' -> 0.05, '14' -> 0.5, '1e-5' -> 5e-6."""
    t = text.strip().lstrip("+-")
    mant, _, exp = t.lower().partition("e")
    dec = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-dec + (int(exp) if exp else 0))


def parse_target(raw: Any, tolerance: float | None = None) -> Target:
    """A paper value as printed -> Target (DataError when it is none of the forms above)."""
    if isinstance(raw, bool):
        return Target("bool", raw)
    text = str(raw).strip().replace("\u2212", "-")
    low = text.lower()
    if low in ("true", "false", "yes", "no"):
        return Target("bool", low in ("true", "yes"))
    m = re.fullmatch(r"(<=|>=|<|>)\s*(" + _NUM + ")", text)
    if m:
        return Target("bound", float(m.group(2)), op=m.group(1))
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if m:
        return Target("ratio", (int(m.group(1)), int(m.group(2))))
    m = re.fullmatch(_NUM, text)
    if m:
        return Target("num", float(text), tolerance if tolerance is not None else half_unit(text))
    raise DataError(f"claims registry: cannot parse paper value {raw!r}")


def _match_one(t: Target, v: Any) -> bool | None:
    """True / False, or None when the value is a Partial whose range still allows the target."""
    if isinstance(v, Partial):
        if t.kind == "num":
            lo_ok = v.lo - t.tol <= t.value <= v.hi + t.tol
            if not lo_ok:
                return False
            return True if v.lo == v.hi and abs(v.lo - t.value) <= t.tol else None
        return None
    if v is None:
        return False
    if t.kind == "bool":
        return bool(v) is t.value
    if t.kind == "ratio":
        try:
            return (int(v[0]), int(v[1])) == tuple(t.value)
        except (TypeError, ValueError, IndexError):
            return False
    try:
        fv = float(v)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(fv):
        return False
    if t.kind == "num":
        return abs(fv - t.value) <= t.tol * (1 + 1e-9)
    return {"<": fv < t.value, "<=": fv <= t.value, ">": fv > t.value, ">=": fv >= t.value}[t.op]


def match(targets: list[Target], value: Any) -> bool | None:
    """Does ``value`` (one value, or a list with one per target) match the paper's targets?
    None: a Partial value's range still allows them (the missing inputs decide)."""
    vals = value if len(targets) > 1 else [value]
    if not isinstance(vals, (list, tuple)) or len(vals) != len(targets):
        return False
    results = [_match_one(t, v) for t, v in zip(targets, vals)]
    if any(r is False for r in results):
        return False
    if any(r is None for r in results):
        return None
    return True


def _distance_one(t: Target, v: Any) -> float:
    if isinstance(v, Partial):
        if t.kind != "num":
            return 0.0
        lo, hi = v.lo - t.tol, v.hi + t.tol
        return 0.0 if lo <= t.value <= hi else min(abs(t.value - lo), abs(t.value - hi)) / max(t.tol, 1e-12)
    if v is None:
        return math.inf
    if t.kind == "bool":
        return 0.0 if bool(v) is t.value else 1.0
    if t.kind == "ratio":
        try:
            k, n = int(v[0]), int(v[1])
        except (TypeError, ValueError, IndexError):
            return math.inf
        return float(abs(k - t.value[0]) + abs(n - t.value[1]))
    try:
        fv = float(v)
    except (TypeError, ValueError):
        return math.inf
    if not math.isfinite(fv):
        return math.inf
    if t.kind == "num":
        return max(0.0, abs(fv - t.value) / max(t.tol, 1e-12) - 1.0)
    ok = {"<": fv < t.value, "<=": fv <= t.value, ">": fv > t.value, ">=": fv >= t.value}[t.op]
    return 0.0 if ok else abs(fv - t.value) / max(abs(t.value), 1e-12)


def distance(targets: list[Target], value: Any) -> float:
    """How far ``value`` is from the paper's targets (0 = within tolerance; numbers: tolerances
    beyond the tolerance; bounds: relative distance past the bound; counts: units; yes/no: 1); the
    largest over the targets; inf when nothing comparable was computed.  Ranks combinations only."""
    vals = value if len(targets) > 1 else [value]
    if not isinstance(vals, (list, tuple)) or len(vals) != len(targets):
        return math.inf
    return max(_distance_one(t, v) for t, v in zip(targets, vals))


def fmt_value(v: Any) -> str:
    """A computed value as the audit table prints it ('-' when there is none)."""
    if isinstance(v, Partial):
        return f"[{v.lo:g}..{v.hi:g}] (missing: {', '.join(v.missing)})"
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, (int, np.integer)) for x in v):
        return f"{v[0]}/{v[1]}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    fv = float(v)
    if not math.isfinite(fv):
        return "nan"
    if fv != 0 and (abs(fv) < 1e-3 or abs(fv) >= 1e5):
        return f"{fv:.3g}"
    return f"{fv:.4g}"
