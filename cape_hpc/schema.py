"""One result schema: typed result classes that round-trip through HDF5 trees and JSON.

Every result the library writes is a dataclass that derives from :class:`Result`.  A result

- declares all of its fields (``slots=True`` is not required, but nothing may be added later:
  ``to_tree`` writes exactly the declared fields and ``from_tree`` refuses unknown ones),
- carries its class name and ``schema_version`` in the stored tree (``_schema``,
  ``_schema_version``),
- converts with ``to_tree()`` (dicts, lists, numpy arrays and scalars; what ``cape_hpc.io.store``
  writes), ``to_json()`` (NaN and inf become ``null``) and ``Cls.from_tree(tree, where=...)``, which
  checks every field against its annotation and raises :class:`SchemaError` naming the group and the
  field when a stored result does not match its class.

Conventions that keep the round trip exact through HDF5 column tables: numbers that can be missing
are ``float`` NaN (never ``None``), text that can be missing is ``""``; ``None`` is only used for
scalar top-level fields (stored as an empty attribute).

Shared value types live here too: :class:`ConfidenceInterval` (one interval, one level),
:class:`BootstrapSummary` (what every analysis keeps of a bootstrap) and :class:`Provenance`
(which named method, options, seed and inputs produced a number; stored one way: ``options`` as
canonical JSON text).  This module imports nothing of ``cape_hpc`` but ``errors``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cape_hpc.errors import SchemaError

__all__ = ["Result", "ConfidenceInterval", "BootstrapSummary", "Provenance", "SchemaError", "to_tree",
           "to_jsonable", "from_tree", "result_class", "load_result", "RESULT_CLASSES", "code_version",
           "git_commit"]

#: class name -> class, filled by ``Result.__init_subclass__`` (decoding a stored ``_schema``)
RESULT_CLASSES: dict[str, type] = {}


# ----------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------
def to_tree(obj: Any, _json: bool = False) -> Any:
    """Recursively convert a result object into dicts, lists, numpy arrays and scalars."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "_tree"):
            return obj._tree(_json)
        return {f.name: to_tree(getattr(obj, f.name), _json) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_tree(v, _json) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_tree(v, _json) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas DataFrame
        return {str(c): to_tree(obj[c].to_numpy()) for c in obj.columns}
    if hasattr(obj, "to_numpy") and hasattr(obj, "index"):  # pandas Series
        return to_tree(obj.to_numpy())
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor
        return obj.detach().cpu().numpy()
    return obj


def _json_scalar(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def _jsonable_tree(t: Any) -> Any:
    if isinstance(t, dict):
        return {k: _jsonable_tree(v) for k, v in t.items()}
    if isinstance(t, list):
        return [_jsonable_tree(v) for v in t]
    if isinstance(t, np.ndarray):
        if t.dtype.kind in "SUO":
            return [str(v) for v in t.tolist()]
        return _jsonable_tree(t.tolist())
    if isinstance(t, np.generic):
        return _json_scalar(t.item())
    return _json_scalar(t)


def to_jsonable(obj: Any) -> Any:
    """Like ``to_tree`` but JSON-ready: arrays become lists, NaN and inf become None."""
    return _jsonable_tree(to_tree(obj, _json=True))


# ----------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------
_NONE = type(None)


def _hints(cls: type) -> dict[str, Any]:
    cached = cls.__dict__.get("_cape_hints")
    if cached is None:
        cached = typing.get_type_hints(cls)
        setattr(cls, "_cape_hints", cached)
    return cached


def _fail(where: str, msg: str) -> SchemaError:
    return SchemaError(f"{where}: {msg}")


def _decode(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` (from a tree) against the annotation ``tp`` and convert it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        for a in (a for a in args if a is not _NONE):
            try:
                return _decode(a, value, where)
            except SchemaError:
                continue
        raise _fail(where, f"value {value!r:.60} matches none of {tp}")
    if dataclasses.is_dataclass(tp):
        return from_tree(tp, value, where=where)
    if tp is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            if value is None:
                return math.nan  # a NaN float read back from a JSON null
            raise _fail(where, f"expected a number, got {type(value).__name__} {value!r:.60}")
        return float(value)
    if tp is int:
        if isinstance(value, (bool, np.bool_)):
            raise _fail(where, f"expected an integer, got a bool {value!r}")
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        if not isinstance(value, (int, np.integer)):
            raise _fail(where, f"expected an integer, got {type(value).__name__} {value!r:.60}")
        return int(value)
    if tp is bool:
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
            return bool(value)
        raise _fail(where, f"expected a bool, got {type(value).__name__} {value!r:.60}")
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, f"expected text, got {type(value).__name__} {value!r:.60}")
        return value
    if tp is np.ndarray:
        if isinstance(value, (list, tuple, np.ndarray)):
            return np.asarray(value)
        raise _fail(where, f"expected an array, got {type(value).__name__}")
    if origin in (list, tuple):
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise _fail(where, f"expected a list, got {type(value).__name__} {value!r:.60}")
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(args) != len(value):
                raise _fail(where, f"expected {len(args)} items, got {len(value)}")
            return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, f"expected a group (mapping), got {type(value).__name__}")
        vt = args[1] if args else Any
        return {str(k): _decode(vt, v, f"{where}/{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise _fail(where, f"expected a group (mapping), got {type(value).__name__}")
        return value
    if tp is list:
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    raise _fail(where, f"annotation {tp!r} is not supported by the schema")


def from_tree(cls: type, tree: Any, *, where: str = "") -> Any:
    """Build a dataclass ``cls`` from a stored tree, checking every declared field.

    Raises SchemaError naming ``where`` (the HDF5 group or JSON path) and the field when a field is
    missing, has the wrong type, or the tree holds a field the class does not declare.
    """
    where = where or f"<{cls.__name__}>"
    if hasattr(cls, "_from_tree"):
        return cls._from_tree(tree, where)
    if not isinstance(tree, dict):
        raise _fail(where, f"expected a group for {cls.__name__}, got {type(tree).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if issubclass(cls, Result):
        stored = tree.get("_schema")
        if stored != cls.__name__:
            raise _fail(where, f"holds {stored!r}, not a stored {cls.__name__}")
        ver = tree.get("_schema_version")
        if ver != cls.schema_version:
            raise _fail(where, f"{cls.__name__} schema version {ver!r}, this code reads version "
                               f"{cls.schema_version}")
    extra = sorted(set(tree) - set(names) - {"_schema", "_schema_version"})
    if extra:
        raise _fail(where, f"field(s) {', '.join(map(repr, extra))} are not fields of {cls.__name__}")
    init, later = {}, {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:  # a stored result carries every field, defaults included
            raise _fail(where, f"field {f.name!r} of {cls.__name__} is missing")
        (init if f.init else later)[f.name] = _decode(hints[f.name], tree[f.name], f"{where}/{f.name}")
    obj = cls(**init)
    for k, v in later.items():
        object.__setattr__(obj, k, v)
    return obj


# ----------------------------------------------------------------------------------------------
# the result base class
# ----------------------------------------------------------------------------------------------
class Result:
    """Base of every stored result dataclass: schema name and version, tree and JSON round trip.

    Subclasses are ``@dataclass`` classes; bump ``schema_version`` when a field changes meaning or
    name.  Never set an attribute that is not a declared field (``__setattr__`` refuses it).
    """

    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        other = RESULT_CLASSES.get(cls.__name__)
        if other is not None and other.__module__ != cls.__module__:
            raise TypeError(f"two result classes named {cls.__name__}: {other.__module__} and {cls.__module__}")
        RESULT_CLASSES[cls.__name__] = cls

    def __setattr__(self, name, value):
        declared = getattr(type(self), "__dataclass_fields__", None)
        if declared is not None and name not in declared:
            raise AttributeError(f"{type(self).__name__} has no field {name!r} (declare it in the class)")
        object.__setattr__(self, name, value)

    def _tree(self, _json: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"_schema": type(self).__name__, "_schema_version": self.schema_version}
        for f in dataclasses.fields(self):
            out[f.name] = to_tree(getattr(self, f.name), _json)
        return out

    def to_tree(self) -> dict[str, Any]:
        return self._tree()

    def to_json(self, **kw) -> str:
        return json.dumps(to_jsonable(self), **kw)

    @classmethod
    def from_tree(cls, tree: Any, *, where: str = ""):
        return from_tree(cls, tree, where=where)


def result_class(name: str) -> type:
    """The registered Result subclass called ``name`` (SchemaError if unknown)."""
    try:
        return RESULT_CLASSES[name]
    except KeyError:
        raise SchemaError(f"no result class named {name!r} is loaded") from None


def load_result(tree: Any, *, where: str = "") -> Any:
    """Decode a stored result by its ``_schema`` name."""
    if not isinstance(tree, dict) or "_schema" not in tree:
        raise SchemaError(f"{where or '<tree>'}: not a stored result (no _schema attribute)")
    return result_class(str(tree["_schema"])).from_tree(tree, where=where)


# ----------------------------------------------------------------------------------------------
# shared value types
# ----------------------------------------------------------------------------------------------
#: relative tolerance under which an interval's bounds count as equal (``ConfidenceInterval.zero_width``)
ZERO_WIDTH_RTOL = 1e-9


@dataclass(frozen=True)
class ConfidenceInterval:
    """One interval at one confidence level (``level`` in (0, 1)); NaN bounds when undefined."""

    low: float
    high: float
    level: float

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def contains(self, x: float) -> bool:
        return self.defined and self.low <= x <= self.high

    @property
    def zero_width(self) -> bool:
        """Defined, with bounds that agree to ``ZERO_WIDTH_RTOL`` (relative; absolute 1e-12 near 0):
        the one rule of "every valid value inside it equal" (summaries and the audit)."""
        return self.defined and math.isclose(self.low, self.high, rel_tol=ZERO_WIDTH_RTOL, abs_tol=1e-12)

    @classmethod
    def undefined(cls, level: float) -> "ConfidenceInterval":
        return cls(math.nan, math.nan, float(level))


@dataclass
class BootstrapSummary:
    """What an analysis keeps of one bootstrap: estimate, median, intervals, counts and notes.

    ``degenerate`` is True when the intervals cannot carry a claim: no interval could be formed,
    fewer than ``min_valid`` resamples gave a valid value (``few_valid``), or every valid value was
    the same (``zero_width``); ``note`` says which, in words.

    The interval notes are fields too (docs/METHODS.md §2.4, "Interval notes"), set by
    ``cape_hpc.stats.summarize`` (``extrapolated`` by the N_c code, which knows the data's range):
    ``valid_share`` (n_valid / n_resamples, NaN when not run), ``zero_width``, ``estimate_missing``
    (the full-sample point estimate is NaN while resamples gave values), ``extrapolated`` (the point
    or a bound lies beyond the data or, for the gamma-fit, the range of the gamma midpoints),
    ``discrete`` (the estimator can only return observed sizes: a sign change), ``few_valid``.
    :meth:`tags` gives the short labels the tables print.
    """

    estimate: float
    median: float
    intervals: list[ConfidenceInterval]
    n_valid: int
    n_resamples: int
    seed: int | None  # None when no bootstrap was run
    stratified: bool
    method: str
    degenerate: bool
    note: str = ""
    valid_share: float = math.nan
    zero_width: bool = False
    estimate_missing: bool = False
    extrapolated: bool = False
    discrete: bool = False
    few_valid: bool = False

    def interval(self, level: float = 0.95) -> ConfidenceInterval:
        for ci in self.intervals:
            if abs(ci.level - level) < 1e-12:
                return ci
        return ConfidenceInterval.undefined(level)

    def tags(self) -> list[str]:
        """Short labels of the notes, in a fixed order ([] for a clean interval or no bootstrap)."""
        if not self.n_resamples:
            return []
        out = []
        if self.estimate_missing:
            out.append("no point estimate")
        if self.few_valid or (math.isfinite(self.valid_share) and self.valid_share < 1.0):
            share = 100.0 * self.valid_share
            out.append(f"{self.n_valid}/{self.n_resamples} valid ({share:.3g}%)"
                       + (": too few" if self.few_valid else ""))
        if not any(ci.defined for ci in self.intervals):
            out.append("no interval")
        if self.zero_width:
            out.append("zero width")
        if self.discrete:
            out.append("discrete: observed sizes only")
        if self.extrapolated:
            out.append("extrapolated")
        return out

    @classmethod
    def empty(cls, levels=(0.95, 0.68), note: str = "not bootstrapped") -> "BootstrapSummary":
        return cls(math.nan, math.nan, [ConfidenceInterval.undefined(v) for v in levels], 0, 0, None, False, "",
                   True, note)


@dataclass
class Provenance:
    """Stored beside every result: which named method and options produced it, from which inputs.

    ``options`` is the method's options dataclass as a plain dict (``Options.to_dict()``); in an
    HDF5 tree it is canonical JSON text, so it round-trips exactly whatever it holds; in JSON output
    it is an object.
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    n_resamples: int | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> sha256
    version: str = field(default_factory=lambda: _code_version())

    def _tree(self, _json: bool = False) -> dict[str, Any]:
        opts = to_jsonable(self.options)
        return {"method": self.method, "options": opts if _json else json.dumps(opts, sort_keys=True),
                "seed": self.seed, "n_resamples": self.n_resamples, "inputs": dict(self.inputs),
                "version": self.version}

    @classmethod
    def _from_tree(cls, tree: Any, where: str) -> "Provenance":
        if not isinstance(tree, dict):
            raise _fail(where, f"expected a provenance group, got {type(tree).__name__}")
        need = ("method", "options", "version")
        missing = [k for k in need if k not in tree]
        if missing:
            raise _fail(where, f"provenance lacks {', '.join(missing)}")
        extra = sorted(set(tree) - {"method", "options", "seed", "n_resamples", "inputs", "version"})
        if extra:
            raise _fail(where, f"field(s) {', '.join(map(repr, extra))} are not fields of Provenance")
        opts = tree["options"]
        if isinstance(opts, str):
            try:
                opts = json.loads(opts)
            except ValueError:
                raise _fail(f"{where}/options", "is not JSON text") from None
        if not isinstance(opts, dict):
            raise _fail(f"{where}/options", f"expected a mapping, got {type(opts).__name__}")
        seed, nres = tree.get("seed"), tree.get("n_resamples")
        return cls(method=str(tree["method"]), options=opts,
                   seed=None if seed is None else int(seed),
                   n_resamples=None if nres is None else int(nres),
                   inputs={str(k): str(v) for k, v in (tree.get("inputs") or {}).items()},
                   version=str(tree["version"]))


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the source checkout, or 'unknown' (e.g. an installed wheel); cached per
    process (a git subprocess per result cost 4 ms, more than a 10,000-resample bootstrap)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def code_version() -> str:
    """'<package version>+<git commit>' (commit 'unknown' outside a checkout)."""
    from cape_kernels import __version__

    return f"{__version__}+{git_commit()[:12]}"


def _code_version() -> str:
    return code_version()
