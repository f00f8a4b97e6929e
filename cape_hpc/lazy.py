"""Lazy package exports: ``import cape_hpc.models`` stays cheap (no torch) until a name is used."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose public ``name`` lives in ``package.<exports[name]>``.

    Use as ``__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)``; a name is imported on first
    use and cached in the package's namespace.
    """
    names = sorted(exports)

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
