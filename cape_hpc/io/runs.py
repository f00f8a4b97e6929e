"""What one `cape analyze` run did, stored beside its results under ``/analyze``.

An analysis that cannot run on the table given (a single-family analysis whose family is not in
it, an isocline calibration family that is absent, an eigen-geometry without one full window, ...)
is skipped with its reason; the others still run and are stored.
"""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.schema import Provenance, Result

__all__ = ["SkippedAnalysis", "AnalyzeRun"]


@dataclass
class SkippedAnalysis:
    """One analysis `cape analyze` did not run (a row)."""

    name: str
    reason: str


@dataclass
class AnalyzeRun(Result):
    """The analyses of one `cape analyze` run: those stored under ``/analysis/<name>`` and those skipped."""

    ran: list[str]
    skipped: list[SkippedAnalysis]
    provenance: Provenance
