"""Lazy package exports: ``import cape_hpc.models`` stays cheap (no torch) until a name is used.

The ``cape`` command relies on it: parsing the command line imports only the options classes
(declarations), and each command imports what it computes with when it runs (tests/test_cli_startup.py).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable


class _LazyPackage(types.ModuleType):
    """A package whose exported ``name`` may equal the name of the submodule defining it (``bootstrap``
    in ``cape_hpc.stats.bootstrap``): when the import system binds that submodule on the package, the
    package keeps the exported object, as an eager ``from .bootstrap import bootstrap`` would."""

    def __setattr__(self, name: str, value: Any) -> None:
        shadowing = getattr(self, "_lazy_same_name", ())
        if name in shadowing and isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose public ``name`` lives in ``package.<exports[name]>``.

    Use as ``__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)``; a name is imported on first
    use and cached in the package's namespace.
    """
    names = sorted(exports)
    same_name = tuple(name for name, mod in exports.items() if name == mod)
    if same_name:
        module = sys.modules[package]
        module.__class__ = _LazyPackage
        module._lazy_same_name = same_name

    def __getattr__(name: str) -> Any:
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        pkg = importlib.import_module(package)
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        setattr(pkg, name, value)
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
