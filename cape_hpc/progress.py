"""Progress of long work: the library reports it, the CLI decides whether and how it is shown.

Library code never prints.  A long loop opens a :func:`task` and advances it; nothing is shown
unless the caller installed a display with :func:`shown` (the CLI does, on stderr, with tqdm:
items per second and time left).  The display is a context variable, so threads and nested calls
see the display of the code that started them, and a library user who wants bars does the same::

    with progress.task("scoring", total=len(rows), unit="row") as advance:
        for batch in batches:
            ...
            advance(batch.size)

    with progress.shown(progress.tqdm_display()):   # the CLI, around a command
        evaluate_steering(...)

Without a display, :func:`task` costs one context-variable read per call and ``advance`` is a no-op.

Whether a command shows bars is one option, ``--progress {auto,on,off}`` (:class:`ProgressOptions`,
decided by :func:`wanted`): ``auto`` shows them when stderr is a terminal and the output is not
``--json``; ``on`` always; ``off`` never.  On a terminal a bar redraws itself in place.  Written to a
file or a pipe (a Slurm ``.err`` log, ``mpiexec``'s merged output) each bar is plain lines instead:
at most one every ``LOG_INTERVAL`` seconds (``CAPE_PROGRESS_INTERVAL``) and one when it ends, ASCII, no
carriage returns or cursor moves, so the log stays readable with ``less`` or ``tail``; a task that ends
within the interval writes nothing (a bootstrap of a second does not fill the log).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, TextIO

from cape_hpc.options import Options, option

__all__ = ["Bar", "Display", "task", "shown", "tqdm_display", "is_shown", "MODES", "LOG_INTERVAL",
           "ProgressOptions", "wanted", "display_for"]

#: ``--progress``: auto (a terminal and not --json), on, off
MODES = ("auto", "on", "off")
#: seconds between two lines of one bar written to a file or a pipe (default; CAPE_PROGRESS_INTERVAL)
LOG_INTERVAL = 30.0


class Bar(Protocol):
    """One progress bar: ``update(n)`` adds n units done; ``close()`` ends it."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


#: makes a bar: ``display(desc, total, unit)`` (``total`` None: unknown)
Display = Callable[[str, "int | None", str], Bar]

_DISPLAY: contextvars.ContextVar[Display | None] = contextvars.ContextVar("cape_progress_display", default=None)


def _noop(n: int = 1) -> None:
    return None


def is_shown() -> bool:
    """Whether a display is installed (a caller may skip preparing what only a bar would show)."""
    return _DISPLAY.get() is not None


@contextlib.contextmanager
def task(desc: str, total: int | None, unit: str) -> Iterator[Callable[[int], object]]:
    """A unit of long work of ``total`` ``unit``s (None: unknown): yields ``advance(n)``; the bar
    (if a display is installed) closes on exit, also when the body raises."""
    display = _DISPLAY.get()
    if display is None:
        yield _noop
        return
    bar = display(desc, total, unit)
    try:
        yield bar.update
    finally:
        bar.close()


@contextlib.contextmanager
def shown(display: Display | None) -> Iterator[None]:
    """Inside: tasks are shown through ``display`` (None: not shown)."""
    token = _DISPLAY.set(display)
    try:
        yield
    finally:
        _DISPLAY.reset(token)


def tqdm_display(stream: TextIO | None = None, *, prefix: str = "", leave: bool = False,
                 log: bool | None = None, interval: float | None = None) -> Display:
    """A display of tqdm bars on ``stream`` (default: stderr), each described as ``prefix + desc``
    (a sweep rank: ``"rank 3: "``): rate per second and time left; ``leave=False`` clears a bar when
    its task ends.  ``log`` (default: ``stream`` is not a terminal): plain lines, at most one per bar
    every ``interval`` seconds (default ``LOG_INTERVAL`` or ``CAPE_PROGRESS_INTERVAL``) and the last
    one, none for a task shorter than ``interval`` (see the module doc)."""
    out = sys.stderr if stream is None else stream
    if log is None:
        log = not _is_terminal(out)
    if log:
        from tqdm.std import tqdm as plain

        every = log_interval() if interval is None else float(interval)
        lines = _Lines(out)

        def make_line(desc: str, total: int | None, unit: str) -> Bar:
            return plain(total=total, desc=prefix + desc, unit=unit, leave=True, file=lines, ascii=True, ncols=100,
                         position=0, mininterval=every, miniters=1, delay=every)
        return make_line

    from tqdm.auto import tqdm

    def make(desc: str, total: int | None, unit: str) -> Bar:
        return tqdm(total=total, desc=prefix + desc, unit=unit, leave=leave, file=out, dynamic_ncols=True,
                    mininterval=0.5)
    return make


def log_interval() -> float:
    """Seconds between two lines of a bar in a log: ``CAPE_PROGRESS_INTERVAL`` or ``LOG_INTERVAL``."""
    try:
        return max(0.0, float(os.environ.get("CAPE_PROGRESS_INTERVAL", LOG_INTERVAL)))
    except ValueError:
        return LOG_INTERVAL


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TIMES = re.compile(r"\s*\[[^\]]*\]$")   # tqdm's trailing "[elapsed<left, rate]"
_BAR = re.compile(r"\|[^|]*\|")           # tqdm's "|####  |": its width follows the rate's text length


class _Lines:
    """A stream for tqdm that turns each in-place redraw (``\\r`` + status) into one line; blank
    redraws (a cleared bar) and a repeat of the previous line (the same count: a bar's closing redraw,
    whatever its times, rate and bar width) are dropped."""

    def __init__(self, out: TextIO):
        self.out = out
        self.last = ""

    def write(self, s: str) -> int:
        for part in _CONTROL.sub("", s).replace("\n", "\r").split("\r"):
            line = part.rstrip()
            key = _BAR.sub("", _TIMES.sub("", line))
            if line and key != self.last:
                self.out.write(line + "\n")
                self.last = key
        return len(s)

    def flush(self) -> None:
        self.out.flush()


def wanted(mode: str, *, quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Whether a command shows its progress: ``mode`` 'on' always, 'off' never, 'auto' when ``stream``
    (default: stderr) is a terminal and the output is not machine-readable (``quiet``: ``--json``)."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return not quiet and _is_terminal(sys.stderr if stream is None else stream)


def display_for(mode: str, *, quiet: bool = False, prefix: str = "", stream: TextIO | None = None) -> Display | None:
    """The display a command installs (``shown(display_for(...))``): tqdm bars on ``stream`` (stderr)
    when :func:`wanted`, else None (nothing shown)."""
    return tqdm_display(stream, prefix=prefix) if wanted(mode, quiet=quiet, stream=stream) else None


@dataclass(frozen=True)
class ProgressOptions(Options):
    """``--progress``: whether a long command shows its progress bars on stderr (declared once)."""

    progress: str = option("auto", choices=MODES,
                           help="progress bars on stderr (items per second, time left): auto = when stderr is a "
                                "terminal and the output is not --json; on = always (in a log file or a pipe: "
                                "plain lines, one per bar every CAPE_PROGRESS_INTERVAL seconds, default 30); off")
