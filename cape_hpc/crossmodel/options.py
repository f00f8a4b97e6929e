"""Options of the cross-model internals analysis (docs/METHODS.md §3.10), declared once."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.analysis.options import ATTACH, ESTIMATORS, ColumnPair, DeltaOptions, PhaseThresholds
from cape_hpc.crossmodel.results import QUANTITIES
from cape_hpc.errors import OptionError
from cape_hpc.options import option
from cape_hpc.stats.options import BootstrapOptions

__all__ = ["CrossModelOptions", "PHASE_FROM"]

#: what the internal phase of a model is read from: the sign and size of its internal gamma (slope
#: of the ladder into it) or of the internal coupling itself
PHASE_FROM = ("slope", "level")


@dataclass(frozen=True)
class CrossModelOptions(PhaseThresholds, DeltaOptions, ColumnPair, BootstrapOptions):
    """The ladder quantity, the estimators and the two-level bootstrap; ``pair``, ``units`` and
    ``min_delta`` define the benchmark-level phases the internal ones are compared with."""

    n_resamples: int = option(2000, help="resamples of the block bootstrap and of the two-level bootstrap "
                                         "(prompt blocks x models)", minimum=1, aliases=("-n",))
    quantity: str = option("final", help="internal coupling on the ladders: last layer, mean over the layers, "
                                         "smallest layer, or mean head coupling", choices=QUANTITIES)
    families: tuple[str, ...] | None = option(None, help="only these families", metavar="FAMILY")
    min_models: int = option(3, help="models a family needs for a ladder estimate (N_c, fixed point, slope)",
                             minimum=2)
    estimators: tuple[str, ...] = option(ESTIMATORS, help="N_c estimators on the internal ladders",
                                         choices=ESTIMATORS, metavar="ESTIMATOR")
    attach: str = option("larger", help="sign-change: N_c at the larger model of the interval, the smaller, "
                                        "or the midpoint", choices=ATTACH)
    at: str = option("mid", help="fixed point: coupling the derivative is regressed on (mean of the two or "
                                 "the left one)", choices=("mid", "left"))
    phase_from: str = option("slope", help="internal phase from the internal gamma (slope) or the coupling "
                                           "itself (level), with the same thresholds", choices=PHASE_FROM)
    match_tolerance: float = option(0.1, help="generation comparisons: largest |log10 N_a - log10 N_b| of a "
                                              "matched pair", minimum=0.0, unit="decades")
    generations: tuple[str, ...] | None = option(None, help="family pairs OLD:NEW compared at matched size "
                                                            "(none: families whose names differ only in "
                                                            "their version, e.g. Qwen2.5:Qwen3)",
                                                 metavar="OLD:NEW")

    def check(self) -> None:
        super().check()
        for g in self.generations or ():
            a, sep, b = g.partition(":")
            if not sep or not a or not b or a == b:
                raise OptionError(f"option '--generations': {g!r} is not OLD:NEW (two different families)")

    @property
    def level(self) -> float:
        """The level of the intervals in the table (the first of ``levels``)."""
        return float(self.levels[0])
