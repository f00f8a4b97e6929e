"""The options of the reproduction audit (``cape reproduce``; docs/METHODS.md §2.15), declared once
(``cape_hpc.options``) in a module of their own: the ``cape`` command parses its flags without numpy,
pandas or the analyses."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.options import Options, option

__all__ = ["AuditOptions"]


@dataclass(frozen=True)
class AuditOptions(Options):
    """What ``cape reproduce`` audits and how (docs/METHODS.md §2.15)."""

    claims: str | None = option(None, help="claims registry (none: the shipped data/claims.yaml)", metavar="YAML")
    only: tuple[str, ...] | None = option(None, help="audit only these claim ids (space- or comma-separated)",
                                          flag="--claim", metavar="ID")
    internals: str | None = option(None, help="results file with /internals groups", metavar="FILE.h5")
    n_resamples: int = option(1000, help="bootstrap resamples for the N_c intervals (the paper used 1000)",
                              minimum=1, aliases=("-n",))
    seed: int = option(0, help="seed of the resampling streams", minimum=0)
    budget: int = option(64, help="most combinations of method choices computed per claim (the stated one "
                                  "included)", minimum=1)
    mc_seeds: int = option(5, help="seeds of the stated method for a Monte Carlo target's tolerance (a value that "
                                   "changes with the seed: tolerance >= 2 sd over these seeds; 1: off)", minimum=1)

    def check(self) -> None:
        if self.only is not None:
            ids = tuple(s for item in self.only for s in (p.strip() for p in str(item).split(",")) if s)
            object.__setattr__(self, "only", ids or None)
