"""Where the shipped data lives: the curated tables, prompt sets, item sets and the claims registry.

One rule, used by every reader of a shipped file (``data/README.md`` lists the files):

1. ``CAPE_DATA_DIR``, when set and not empty, names the folder (read on every call, so a test or a
   user can point one process at another copy);
2. an installed wheel carries the folder as package data, ``cape_hpc/data/``;
3. a checkout (editable install, or the repository root on ``sys.path``) reads ``<root>/data/``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "data_file"]

_PACKAGE = Path(__file__).resolve().parents[1]  # .../cape_hpc


def data_dir() -> Path:
    """The folder of the shipped data (see the module docstring for the order of the rule)."""
    env = os.environ.get("CAPE_DATA_DIR", "").strip()
    if env:
        return Path(env)
    installed = _PACKAGE / "data"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / "data"


def data_file(*parts: str) -> Path:
    """A shipped file, e.g. ``data_file("prompts", "neutral.jsonl")``: ``data_dir()`` joined with parts."""
    return data_dir().joinpath(*parts)
