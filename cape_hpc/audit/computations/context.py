"""What every claim computation shares: :class:`AuditContext` (the tables, the bootstrap settings, a
cache of expensive results, the facts of the current fit), :class:`Unavailable`, and the checks
that the named families / models are in the scores table; the cached local coupling (§2.1)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Unavailable", "AuditContext", "families_present", "need_families", "need_models", "coupling", "gammas"]


class Unavailable(Exception):
    """A claim's inputs are not available: kind 'internals', 'data' or 'method'."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class AuditContext:
    scores: pd.DataFrame
    frontier: pd.DataFrame | None = None
    loss: pd.DataFrame | None = None
    internals: str | None = None        # a results file with /internals/<model> groups
    n_resamples: int = 1000
    seed: int = 0
    cache: dict = field(default_factory=dict)
    facts: list = field(default_factory=list)   # what the current evaluation's fits were (degeneracy)
    checks: dict = field(default_factory=dict)  # the current claim's degeneracy thresholds

    def cached(self, key, fn):
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    def fact(self, kind: str, value) -> None:
        """Record a fact about a fit or interval used (``cape_hpc.audit.degeneracy.reasons`` reads them)."""
        self.facts.append((kind, value))


def families_present(df: pd.DataFrame, families, min_models: int = 1) -> tuple[list[str], list[str]]:
    fams = [families] if isinstance(families, str) else list(families)
    counts = df["family"].value_counts()
    present = [f for f in fams if counts.get(f, 0) >= min_models]
    return present, [f for f in fams if f not in present]


def need_families(df, families, min_models=1, what="") -> list[str]:
    present, missing = families_present(df, families, min_models)
    if missing:
        raise Unavailable("data", f"famil{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
                                  f"with >= {min_models} model(s) not in the scores table{what}")
    return present


def need_models(df, models) -> None:
    missing = [m for m in models if m not in set(df["model"])]
    if missing:
        raise Unavailable("data", f"model(s) {', '.join(missing)} not in the scores table")


def coupling(ctx: AuditContext, b1="HS", b2="TQA", families=None, df=None):
    """The local coupling (docs/METHODS.md §2.1) of the scores table (or ``df``), cached per table."""
    from cape_hpc.analysis.coupling import local_coupling
    from cape_hpc.analysis.options import CouplingOptions

    fams = None if families is None else tuple([families] if isinstance(families, str) else families)
    opts = CouplingOptions(pair=(b1, b2), families=fams)
    if df is not None:
        return local_coupling(df, opts)
    return ctx.cached(("coupling", opts), lambda: local_coupling(ctx.scores, opts))


def gammas(ctx, family, b1="HS", b2="TQA"):
    return [iv.gamma for iv in coupling(ctx, b1, b2, [family]).intervals if math.isfinite(iv.gamma)]
