"""Options declared once: a frozen dataclass per method that validates itself, is stored unchanged
as provenance, and generates its own command-line flags.

Declare a method's options as a frozen dataclass deriving from :class:`Options`, one
:func:`option` per field::

    @dataclass(frozen=True)
    class CouplingOptions(Options):
        b1: str = option("HS", help="first score column", flag="--pair")   # (example only)
        min_delta: float = option(0.5, help="|dB1| below which gamma is undefined", unit="units",
                                  minimum=0.0)

- the name, default, choices, bounds, unit and help live in the field, nowhere else;
- ``__post_init__`` converts and checks every field (OptionError names the flag and the value);
  override ``check()`` for rules that involve several fields;
- ``Cls.field_value(name, value, label=)`` converts and checks one field's value (what a job file's
  reader uses, naming the file and key); ``Cls.parse_field(name, text)`` does it from text
  (``--set ANALYSIS.OPTION=VALUE``);
- ``to_dict()`` is what a result stores as ``Provenance.options``;
- ``Cls.add_arguments(parser)`` adds one flag per field (``--min-delta`` for ``min_delta``;
  booleans as ``--x/--no-x``; tuples as ``nargs``); a flag already on the parser (a shared option
  such as ``--seed``) is not added twice, so several option classes compose on one parser;
- ``Cls.from_args(args)`` builds the options from parsed arguments.

This module imports nothing of ``cape_hpc`` but ``errors``.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

from cape_hpc.errors import OptionError

__all__ = ["Options", "option", "UNITS", "units_factor"]

UNITS = ("percent", "fraction")


def units_factor(units: str) -> float:
    """The factor that converts the tables' percent into ``units`` (1 or 0.01)."""
    if units not in UNITS:
        raise OptionError(f"option '--units': {units!r} is not one of {', '.join(UNITS)}")
    return 1.0 if units == "percent" else 0.01


def option(default: Any, *, help: str, choices: Sequence[Any] | None = None, unit: str = "",
           minimum: float | None = None, maximum: float | None = None, exclusive_minimum: bool = False,
           flag: str | None = None, aliases: Sequence[str] = (), metavar: str | Sequence[str] | None = None,
           cli: bool = True, pattern: str | None = None, pattern_help: str = "") -> Any:
    """A declared option: its default, help text, and the checks ``Options`` applies.

    unit: shown in the help (``"units"`` means "in the chosen --units"); minimum/maximum: bounds
    (inclusive unless ``exclusive_minimum``); flag: the command-line flag (default ``--field-name``),
    aliases: more flags for the same option (e.g. ``-n``);
    cli=False keeps an option out of the command line (set by the program, still validated/stored);
    pattern: a regular expression every text value must match in full, ``pattern_help`` says it in words.
    """
    if isinstance(default, list):
        default = tuple(default)
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "unit": unit,
            "minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum, "flag": flag,
            "aliases": tuple(aliases), "metavar": metavar, "cli": cli, "pattern": pattern,
            "pattern_help": pattern_help}
    return field(default=default, metadata={"cape": meta})


def _meta(f: dataclasses.Field) -> dict[str, Any]:
    return f.metadata.get("cape", {"help": "", "choices": None, "unit": "", "minimum": None, "maximum": None,
                                   "exclusive_minimum": False, "flag": None, "aliases": (), "metavar": None,
                                   "cli": True, "pattern": None, "pattern_help": ""})


def _flag(f: dataclasses.Field) -> str:
    return _meta(f)["flag"] or "--" + f.name.replace("_", "-")


def _split_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _scalar(tp: Any, value: Any, label: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise OptionError(f"{label}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise OptionError(f"{label}: expected an integer, got {value!r}")
        try:
            iv = int(value)
        except (TypeError, ValueError):
            raise OptionError(f"{label}: {value!r} is not an integer") from None
        if iv != value and not (isinstance(value, str) and str(iv) == value.strip()):
            raise OptionError(f"{label}: {value!r} is not an integer")
        return iv
    if tp is float:
        if isinstance(value, bool):
            raise OptionError(f"{label}: expected a number, got {value!r}")
        try:
            fv = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{label}: {value!r} is not a number") from None
        return fv
    if tp is str:
        if not isinstance(value, str):
            raise OptionError(f"{label}: expected text, got {value!r}")
        return value
    raise TypeError(f"option type {tp!r} is not supported")


def _convert(tp: Any, value: Any, label: str) -> Any:
    tp, optional = _split_optional(tp)
    if value is None:
        if optional:
            return None
        raise OptionError(f"{label}: a value is required")
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = (value,)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_scalar(args[0], v, label) for v in value)
        if len(value) != len(args):
            raise OptionError(f"{label}: expected {len(args)} values, got {len(value)}")
        return tuple(_scalar(a, v, label) for a, v in zip(args, value))
    return _scalar(tp, value, label)


def _check_value(f: dataclasses.Field, value: Any, label: str) -> None:
    meta = _meta(f)
    items = value if isinstance(value, tuple) else (value,)
    for v in items:
        if v is None:
            continue
        if meta["choices"] is not None and v not in meta["choices"]:
            raise OptionError(f"{label}: {v!r} is not one of {', '.join(map(str, meta['choices']))}")
        if meta["pattern"] is not None and isinstance(v, str) and not re.fullmatch(meta["pattern"], v):
            raise OptionError(f"{label}: {v!r} is not {meta['pattern_help'] or 'of the form ' + meta['pattern']}")
        if isinstance(v, float) and not math.isfinite(v):
            raise OptionError(f"{label}: must be finite, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = meta["minimum"], meta["maximum"]
            if lo is not None and (v < lo or (meta["exclusive_minimum"] and v == lo)):
                raise OptionError(f"{label}: must be {'>' if meta['exclusive_minimum'] else '>='} "
                                  f"{lo:g}, got {v!r}")
            if hi is not None and v > hi:
                raise OptionError(f"{label}: must be <= {hi:g}, got {v!r}")


_SWITCH_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False,
                 "0": False}


@functools.lru_cache(maxsize=None)
def _hints_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.lru_cache(maxsize=None)
def _fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class Options:
    """Base class of every method's options (see the module docstring)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, type(self).field_value(f.name, getattr(self, f.name)))
        self.check()

    @classmethod
    def field_value(cls, name: str, value: Any, *, label: str | None = None) -> Any:
        """``value`` converted by the annotation of field ``name`` and checked against its choices and
        bounds: what the options do with every field they are given.  An OptionError starts with
        ``label`` (default ``option '--flag'``; a job file passes ``FILE: models[3].dtype``)."""
        f = _fields_of(cls).get(name)
        if f is None:
            raise OptionError(f"{label or cls.__name__}: no option {name!r}")
        label = label or f"option '{_flag(f)}'"
        value = _convert(_hints_of(cls)[name], value, label)
        _check_value(f, value, label)
        return value

    @classmethod
    def parse_field(cls, name: str, text: str, *, label: str | None = None) -> Any:
        """The value of field ``name`` written as text (``--set ANALYSIS.OPTION=TEXT``), converted as its
        command-line flag converts it and checked by :meth:`field_value`: ``none`` (or nothing) for an
        optional field, ``true/false`` (yes/no, on/off, 1/0) for a switch, comma-separated items for a
        list."""
        f = _fields_of(cls).get(name)
        if f is None:
            raise OptionError(f"{label or cls.__name__}: no option {name!r}")
        label = label or f"option '{_flag(f)}'"
        tp, optional = _split_optional(_hints_of(cls)[name])
        word = text.strip().lower()
        if optional and word in ("none", ""):
            return None
        if tp is bool:
            if word not in _SWITCH_WORDS:
                raise OptionError(f"{label}: expected true or false, got {text!r}")
            value: Any = _SWITCH_WORDS[word]
        elif typing.get_origin(tp) is tuple:
            value = tuple(v.strip() for v in text.split(",") if v.strip())
        else:
            value = text
        return cls.field_value(name, value, label=label)

    def check(self) -> None:
        """Rules that involve several fields; raise OptionError naming the flags."""

    def to_dict(self) -> dict[str, Any]:
        """The options as stored in provenance (tuples as lists)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in (getattr(self, f.name),)}

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The declared default of option ``name`` (read from the option, never copied)."""
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.default
        raise KeyError(f"{cls.__name__} has no option {name!r}")

    @classmethod
    def flag(cls, name: str) -> str:
        """The command-line flag of field ``name`` (for error messages)."""
        return _flag(next(f for f in dataclasses.fields(cls) if f.name == name))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, skip: Sequence[str] = (),
                      defaults: dict[str, Any] | None = None) -> None:
        """Add one flag per field (those in ``skip`` and those already on the parser excepted)."""
        hints = typing.get_type_hints(cls)
        have = {a.dest for a in parser._actions}
        for f in dataclasses.fields(cls):
            meta = _meta(f)
            if not meta["cli"] or f.name in skip or f.name in have:
                continue
            default = (defaults or {}).get(f.name, f.default)
            tp, optional = _split_optional(hints[f.name])
            kw: dict[str, Any] = {"dest": f.name, "default": default}
            shown = ("none" if default is None else " ".join(map(str, default)) if isinstance(default, tuple)
                     else str(default))
            unit = {"units": " in --units"}.get(meta["unit"], f" {meta['unit']}" if meta["unit"] else "")
            text = f"{meta['help']} (default: {shown}{unit if default is not None else ''})"
            kw["help"] = text.replace("%", "%%")
            if meta["metavar"] is not None:
                kw["metavar"] = meta["metavar"]
            if tp is bool:
                kw["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(tp) is tuple:
                args = typing.get_args(tp)
                item = args[0]
                kw["nargs"] = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
                kw["type"] = item
                if meta["choices"] is not None:
                    kw["choices"] = meta["choices"]
            else:
                kw["type"] = tp
                if meta["choices"] is not None:
                    kw["choices"] = meta["choices"]
            have_flags = {s for a in parser._actions for s in a.option_strings}
            flags = [s for s in (*meta.get("aliases", ()), _flag(f)) if s not in have_flags]
            parser.add_argument(*flags, **kw)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any):
        """Options from parsed arguments (fields absent from ``args`` keep their defaults)."""
        kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        kw.update(overrides)
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}
        return cls(**kw)
