"""Where each curated row comes from: ``data/row_sources.csv`` (docs/METHODS.md §2.15, "Data provenance").

One line per row of the curated tables: ``table``, ``model``, ``status`` and the ``source`` and
``evidence`` behind it (``data/SOURCES.md`` explains how each was traced).  Status:
``verified`` (equal to a public table named in the source), ``single-source`` (one public report,
not cross-checked), ``estimated`` (partly estimated by the authors of the source) or ``uncertain``
(conflicts with other public reports, or the origin is undocumented).  The audit reports, for each
claim, the rows it names whose status is ``uncertain`` or ``estimated``: its verdict rests on them.
Rows are matched by model name, so an edited copy of a table keeps the shipped statuses.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

__all__ = ["UNCERTAIN", "row_sources", "uncertain_models"]

UNCERTAIN = ("uncertain", "estimated")


def row_sources(path: str | Path | None = None) -> list[dict[str, str]]:
    """The rows of ``data/row_sources.csv`` (an empty list when the file is absent)."""
    from cape_hpc.io.data import data_file

    p = Path(path) if path else data_file("row_sources.csv")
    if not p.exists():
        return []
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def uncertain_models(scores: pd.DataFrame | None = None, path: str | Path | None = None) -> set[str]:
    """Models of the scores table whose row is uncertain or estimated, and ``pythia_loss.csv/<model>``
    keys for the loss table's rows."""
    out = set()
    have = set(scores["model"]) if scores is not None else None
    for r in row_sources(path):
        if r.get("status") not in UNCERTAIN:
            continue
        if r.get("table") == "base_models.csv" and (have is None or r["model"] in have):
            out.add(r["model"])
        elif r.get("table") == "pythia_loss.csv":
            out.add(f"pythia_loss.csv/{r['model']}")
    return out
