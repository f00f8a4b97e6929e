"""Options of ``extract_internals`` (docs/METHODS.md §3), declared once (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.internals.results import POOLINGS, TAPS
from cape_hpc.options import Options, option
from cape_kernels.backends import BACKENDS

__all__ = ["ExtractOptions", "split_commas"]


def split_commas(value):
    """('residual,heads', 'final') -> ('residual', 'heads', 'final'); order kept, duplicates dropped."""
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    out = [p.strip() for v in items for p in (v.split(",") if isinstance(v, str) else (v,))]
    return tuple(dict.fromkeys(p for p in out if p != ""))


@dataclass(frozen=True)
class ExtractOptions(Options):
    """How the prompts are streamed and pooled, and which taps are kept."""

    batch_size: int = option(16, help="prompts per forward pass (left-padded)", minimum=1)
    pooling: str = option("last", help="pooling of each tap over the prompt's tokens", choices=POOLINGS)
    taps: tuple[str, ...] = option(TAPS, help="taps to extract", choices=TAPS,
                                   metavar="TAP")
    backend: str | None = option(None, help="cape_kernels backend (none: automatic)", choices=BACKENDS)
    max_prompts: int | None = option(None, help="use at most N prompts (the first N/2 of each set)", minimum=2,
                                     metavar="N")
    sets: tuple[str, str] | None = option(None, help="the two prompt sets R and T (none: reasoning and "
                                                     "truthfulness when present, else the first two)",
                                          metavar=("R", "T"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "taps", split_commas(self.taps))
        super().__post_init__()
