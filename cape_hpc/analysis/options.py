"""Options shared by the benchmark-level analyses: the score pair, families and the coupling rule.

One unit rule for every method: the tables hold percent; ``units`` says in which units thresholds
(``min_delta``) are given and fits are made, and every result states it.
"""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.errors import OptionError
from cape_hpc.options import UNITS, Options, option

DEFAULT_MIN_DELTA_POINTS = 0.5  # percentage points


@dataclass(frozen=True)
class PairOptions(Options):
    """A pair of score columns (B1, B2) and an optional family subset."""

    pair: tuple[str, str] = option(("HS", "TQA"), help="score columns B1 B2", metavar=("B1", "B2"))
    families: tuple[str, ...] | None = option(None, help="only these families", metavar="FAMILY")

    @property
    def b1(self) -> str:
        return self.pair[0]

    @property
    def b2(self) -> str:
        return self.pair[1]

    def check(self) -> None:
        if self.pair[0] == self.pair[1]:
            raise OptionError(f"option '--pair': the two columns must differ, got {self.pair[0]!r} twice")


@dataclass(frozen=True)
class CouplingOptions(PairOptions):
    """The local-coupling rule (METHODS.md §2.1-2.2): gamma = dB2/dB1 and its phase thresholds."""

    units: str = option("percent", help="units of thresholds and fits", choices=UNITS)
    min_delta: float | None = option(None, help="|dB1| below which gamma is undefined, in --units "
                                                "(none: 0.5 percentage points)", minimum=0.0)
    tax_below: float = option(-0.1, help="gamma below this is tax")
    bonus_above: float = option(0.1, help="gamma above this is bonus")

    def check(self) -> None:
        super().check()
        if not self.tax_below <= self.bonus_above:
            raise OptionError(f"options '--tax-below' {self.tax_below:g} and '--bonus-above' "
                              f"{self.bonus_above:g}: tax-below must not exceed bonus-above")

    @property
    def min_delta_resolved(self) -> float:
        """min_delta in --units (the 0.5-point default converted)."""
        if self.min_delta is not None:
            return float(self.min_delta)
        return DEFAULT_MIN_DELTA_POINTS * (1.0 if self.units == "percent" else 0.01)
