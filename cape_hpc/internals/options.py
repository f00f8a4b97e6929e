"""Options of ``extract_internals`` (docs/METHODS.md §3), declared once (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.errors import OptionError
from cape_hpc.internals.results import D_REP_MODES, POOLINGS, TAPS
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
    taps: tuple[str, ...] = option(TAPS, help="taps to extract, space- or comma-separated: "
                                              + ", ".join(TAPS), metavar="TAP")
    backend: str | None = option(None, help="cape_kernels backend (none: automatic)", choices=BACKENDS)
    max_prompts: int | None = option(None, help="use at most N prompts (the first N/2 of each set)", minimum=2,
                                     metavar="N")
    sets: tuple[str, str] | None = option(None, help="the two prompt sets R and T (none: reasoning and "
                                                     "truthfulness when present, else the first two)",
                                          metavar=("R", "T"))
    token_budget: int | None = option(8192, help="at most this many padded tokens per forward pass, so one "
                                                 "long prompt does not pad its whole batch (none: no limit; a "
                                                 "longer prompt runs alone)", minimum=1,
                                      unit="tokens", metavar="TOKENS")
    max_prompt_tokens: int | None = option(None, help="truncate prompts (from the left) to this many tokens "
                                                      "(none: the model's context)", minimum=1, unit="tokens",
                                           metavar="TOKENS")
    n_blocks: int = option(32, help="prompt blocks of the block bootstrap (docs/METHODS.md §3.8)", minimum=1,
                           maximum=4096, flag="--blocks", metavar="G")
    block_seed: int = option(0, help="seed of the prompt -> block hash and of the block resampling streams",
                             minimum=0, maximum=2**64 - 1)
    block_resamples: int = option(1000, help="block-bootstrap resamples (0: no intervals)", minimum=0,
                                  metavar="B")
    ci_level: float = option(0.95, help="level of the block-bootstrap intervals", minimum=0.0,
                             exclusive_minimum=True, maximum=0.999999)
    pair_budget_mb: float = option(256.0, help="device memory for the resident unit vectors of the exact "
                                               "pair count; beyond it a seeded reservoir per set",
                                   minimum=0.0, exclusive_minimum=True, unit="MiB")
    d_rep_mode: str = option("exact", help="d_rep from exact [L, D, D] second moments, or from a seeded "
                                           "Gaussian sketch of size --d-rep-sketch (very wide models)",
                             choices=D_REP_MODES)
    d_rep_sketch: int = option(256, help="sketch size k of --d-rep-mode sketch", minimum=8, metavar="K")
    keep_pooled: str | None = option(None, help="also write every pooled vector to this HDF5 file, chunk by "
                                                "chunk ([L, N, D] float32)", metavar="FILE.h5")

    def __post_init__(self) -> None:
        object.__setattr__(self, "taps", split_commas(self.taps))
        super().__post_init__()

    def check(self) -> None:
        if not self.taps:
            raise OptionError("option '--taps': no tap selected (choose from " + ", ".join(TAPS) + ")")
        if self.sets is not None and len(set(self.sets)) < len(self.sets):
            raise OptionError(f"option '--sets': the two prompt sets must differ, got {self.sets[0]!r} twice")
        for t in self.taps:
            if t not in TAPS:
                raise OptionError(f"option '--taps': {t!r} is not one of {', '.join(TAPS)}")
