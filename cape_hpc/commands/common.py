"""Shared CLI helpers: common options, printing tables, --json output, writing results, progress."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any, Iterable, Iterator, Sequence

from cape_hpc.schema import to_jsonable


def add_output_args(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    """--json, and (optionally) --out FILE.h5 with --force."""
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (every option, seed and count)")
    if out:
        p.add_argument("--out", metavar="FILE.h5", help="also write the result to this HDF5 file (atomically)")
        p.add_argument("--force", action="store_true", help="overwrite an existing --out file with different content")


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    """--progress {auto,on,off} (``cape_hpc.progress.ProgressOptions``) for a command that shows progress."""
    from cape_hpc.progress import ProgressOptions

    ProgressOptions.add_arguments(p)


@contextlib.contextmanager
def progress_shown(args: argparse.Namespace, *, prefix: str = "") -> Iterator[None]:
    """Inside: the library's progress tasks are shown on stderr as ``--progress`` asks (auto: a terminal
    and not ``--json``; ``cape_hpc.progress.wanted``), each bar described with ``prefix`` first.  A
    command without ``--progress`` shows nothing."""
    from cape_hpc import progress

    display = progress.display_for(getattr(args, "progress", "off"), quiet=bool(getattr(args, "json", False)),
                                   prefix=prefix)
    with progress.shown(display):
        yield


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


def check_out_first(args, *, update: bool = False, option: str = "out", flag: str = "--out") -> None:
    """Check the output named by ``args.<option>`` before anything is computed (a long run must not
    end in a refusal): ``update`` -- a results file that groups are added to (``check_update_target``:
    an existing file must be an intact, writable results file); otherwise a new file
    (``check_target``: a writable folder, a regular file or none; an existing one needs ``--force``
    when ``args`` has that flag)."""
    path = getattr(args, option, None)
    if path is None:
        return
    from cape_hpc.errors import StoreError
    from cape_hpc.io.store import check_target, check_update_target

    force = bool(getattr(args, "force", False))
    if update:
        check_update_target(path, force=force, what=flag)
        return
    target = check_target(path, flag)
    if hasattr(args, "force") and not force and target.exists():
        raise StoreError(f"{path}: exists; pass --force to overwrite it (option '{flag}')")


def check_internals_file(path: str | None, flag: str = "--internals") -> None:
    """An ``--internals`` file, checked before anything is computed: it exists, is an intact results
    file (content hash) and holds at least one ``/internals/<model>`` group (a group, not a dataset).
    A typo must not turn every internal claim into a verdict."""
    if path is None:
        return
    import h5py

    from cape_hpc.errors import DataError, StoreError
    from cape_hpc.io.verify import open_results

    try:
        f = open_results(path)
    except StoreError as exc:
        raise StoreError(f"option '{flag}': {exc}") from None
    with f:
        group = f.get("internals")
        if not isinstance(group, h5py.Group) or not len(group):
            raise DataError(f"option '{flag}': {path} has no /internals group (run `cape internals --out` or "
                            f"`cape sweep` + `cape merge` first)")
        for key, item in group.items():
            if not isinstance(item, h5py.Group):
                raise DataError(f"option '{flag}': {path}:/internals/{key} is a dataset, not a model's group")
