"""One record per figure: what `cape figures` draws and what `cape report` charts, from which group.

A ``FigureSpec`` names a figure (the file stem of `cape figures`), its report title, the group(s)
it reads, and its four functions: ``extract(Results) -> dict`` (plain lists, JSON-ready; ``Skip``
naming the missing group), ``figure(data)`` (a matplotlib Figure, or [(name, Figure)] for one per
part), ``chart(data)`` (a plotly spec, or a list of ``Card``s) and ``table(data)`` (the rows behind
a one-card chart); ``answer`` marks the study's answers (ladders, N_c, phases: the report's first
section), a ``Card`` naming one ``model`` goes behind the report's model picker.  The PNGs and the report draw the same extracted data, so they never disagree.

The records live in one module per figure family (``report/families/*.py``, each a ``FIGURES``
tuple); adding a figure is adding one record there.  ``FAMILIES`` lists the modules, in the order
the figures are drawn and charted.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from cape_hpc.report.data import Results, Skip

FAMILIES = ("coupling", "benchmark", "dynamics", "internals", "steering", "crossmodel")


def rows_of(data: dict) -> list[dict]:
    """The default table behind a chart: the extracted ``rows``."""
    return data.get("rows", [])


@dataclass(frozen=True)
class Card:
    """One chart of the HTML report: its plotly spec and the table behind it."""

    title: str
    spec: dict
    rows: list[dict]
    source: str
    note: str = ""
    model: str = ""         # the one model the card shows ("" = several): behind the report's model picker


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its file stem, report title, the group(s) read, and how it is extracted and drawn."""

    name: str                                   # `cape figures` file stem; key of ``extractors()``
    title: str                                  # the report card's title and its skip note
    group: str                                  # results-file group(s) read (as the docs write them)
    extract: Callable[[Results], dict]
    figure: Callable[[dict], Any] | None = None  # Figure, or [(name, Figure)]: one per part
    chart: Callable[[dict], Any] | None = None   # plotly spec (one card titled ``title``) or [Card]
    table: Callable[[dict], list[dict]] = rows_of  # rows behind the one card
    skip_as: str = ""                           # a shared skip note's name (one note for a family)
    answer: bool = False                        # one of the study's answers: the report shows it first

    def cards(self, data: dict) -> list[Card]:
        """The report's cards of this figure (none without a chart)."""
        if self.chart is None:
            return []
        spec = self.chart(data)
        if isinstance(spec, dict):
            return [Card(self.title, spec, self.table(data), data.get("source", ""), data.get("note", ""))]
        return list(spec)


@lru_cache(maxsize=None)
def figure_specs() -> tuple[FigureSpec, ...]:
    """Every record of every family module, in drawing order."""
    return tuple(spec for fam in FAMILIES
                 for spec in importlib.import_module(f"cape_hpc.report.families.{fam}").FIGURES)


def spec(name: str) -> FigureSpec:
    return next(s for s in figure_specs() if s.name == name)


def extractors() -> dict[str, Callable[[Results], dict]]:
    """name -> extract function of every record."""
    return {s.name: s.extract for s in figure_specs()}


class Extracted:
    """The data of each record for one Results, extracted once per function (several records share
    one extraction: the cross-model figures, the coupling's model points)."""

    def __init__(self, res: Results):
        self.res = res
        self._done: dict[Callable, dict | Skip] = {}

    def __call__(self, s: FigureSpec) -> dict:
        if s.extract not in self._done:
            try:
                self._done[s.extract] = s.extract(self.res)
            except Skip as exc:
                self._done[s.extract] = exc
        out = self._done[s.extract]
        if isinstance(out, Skip):
            raise out
        return out
