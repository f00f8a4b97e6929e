"""Shared CLI helpers: common options, printing tables, --json output, writing results."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, Sequence

from cape_hpc.schema import to_jsonable


def add_output_args(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    """--json, and (optionally) --out FILE.h5 with --force."""
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (every option, seed and count)")
    if out:
        p.add_argument("--out", metavar="FILE.h5", help="also write the result to this HDF5 file (atomically)")
        p.add_argument("--force", action="store_true", help="overwrite an existing --out file with different content")


def add_scores_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", metavar="CSV", default=None,
                   help="score table in cape_hpc's schema, or evaluation results: a results JSON or a folder "
                        "of them (lm-eval, Open LLM Leaderboard v1; read as `cape scores import` does) "
                        "(default: the shipped data/base_models.csv)")


def emit_json(obj: Any, file=None) -> None:
    """Print a result (dataclass, dict, arrays) as JSON; NaN becomes null."""
    json.dump(to_jsonable(obj), file or sys.stdout, indent=2, sort_keys=False)
    (file or sys.stdout).write("\n")


def fmt(v: Any, digits: int = 4) -> str:
    """Format one cell: floats with `digits` significant digits, NaN/None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:.{digits}g}"
    return str(v)


def _console(file=None):
    """A rich console on the current stdout: terminal width on a terminal, else wide (no wrapping in
    pipes and files), never colour codes in pipes."""
    import os
    import shutil

    from rich.console import Console

    out = file or sys.stdout
    tty = hasattr(out, "isatty") and out.isatty()
    width = shutil.get_terminal_size((160, 24)).columns if tty else int(os.environ.get("COLUMNS", 0) or 200)
    return Console(file=out, width=width, highlight=False, soft_wrap=False, emoji=False, markup=False)


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], title: str | None = None,
                digits: int = 4, file=None) -> None:
    """Print an aligned table (rich): floats with ``digits`` significant digits, NaN/None as '-'."""
    from rich import box
    from rich.table import Table

    console = _console(file)
    if title:
        console.print()
        console.print(title)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    rows = [list(r) for r in rows]
    for i, h in enumerate(headers):
        numeric = bool(rows) and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                                     for r in rows if r[i] is not None)
        table.add_column(str(h), justify="right" if numeric else "left", overflow="fold")
    for r in rows:
        table.add_row(*(fmt(v, digits) for v in r))
    console.print(table)
