"""Matplotlib figures (Agg) from a results file: every record of ``report/registry.py`` with a
static figure, drawn from its extracted data.

No file writing here (``cape figures`` saves them).  ``build_figures`` returns ``FigureOutcome``s:
a figure, or a skip note naming the missing group; ``draw(name, res)`` draws one record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cape_hpc.report.data import Results, Skip  # noqa: E402
from cape_hpc.report.registry import Extracted, figure_specs, spec  # noqa: E402


@dataclass
class FigureOutcome:
    name: str
    figure: Figure | None
    note: str = ""


#: the names of the records with a static figure (file stems; a record drawn per part adds _<part>)
FIGURES: tuple[str, ...] = tuple(s.name for s in figure_specs() if s.figure is not None)


def _named(name: str, drawn: Any) -> list[tuple[str, Figure]]:
    """A record's drawing as [(file stem, Figure)]: one figure, or one per part."""
    return [(name, drawn)] if isinstance(drawn, Figure) else list(drawn)


def draw(name: str, res: Results) -> Any:
    """The static figure of one record (a Figure, or [(name, Figure)] for one per part); Skip naming
    the missing group."""
    s = spec(name)
    return s.figure(s.extract(res))


def build_figures(res: Results) -> list[FigureOutcome]:
    """Every figure the file has data for; the others as skip notes naming the missing group."""
    extracted = Extracted(res)
    out: list[FigureOutcome] = []
    for s in figure_specs():
        if s.figure is None:
            continue
        try:
            out += [FigureOutcome(n, f) for n, f in _named(s.name, s.figure(extracted(s)))]
        except Skip as exc:
            out.append(FigureOutcome(s.name, None, str(exc)))
    return out


def close(fig: Figure) -> None:
    plt.close(fig)
