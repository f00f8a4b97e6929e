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
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Callable, Iterator, Protocol, TextIO

__all__ = ["Bar", "Display", "task", "shown", "tqdm_display", "is_shown"]


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


def tqdm_display(stream: TextIO | None = None, *, prefix: str = "", leave: bool = False) -> Display:
    """A display of tqdm bars on ``stream`` (default: stderr), each described as ``prefix + desc``
    (a sweep rank: ``"rank 3: "``): rate per second and time left; ``leave=False`` clears a bar when
    its task ends."""
    from tqdm.auto import tqdm

    out = sys.stderr if stream is None else stream

    def make(desc: str, total: int | None, unit: str) -> Bar:
        return tqdm(total=total, desc=prefix + desc, unit=unit, leave=leave, file=out, dynamic_ncols=True,
                    mininterval=0.5)
    return make
