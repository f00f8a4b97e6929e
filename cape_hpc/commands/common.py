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
                   help="score table in cape_hpc's schema (default: the shipped data/base_models.csv)")


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


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], digits: int = 4) -> str:
    """A plain aligned text table."""
    cells = [[fmt(v, digits) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join([line, sep, *body])


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], title: str | None = None,
                digits: int = 4) -> None:
    if title:
        print(f"\n{title}")
    print(format_table(rows, headers, digits))
