"""Options of ``run_steering`` (docs/METHODS.md §4), declared once (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.internals.results import POOLINGS
from cape_hpc.options import Options, option
from cape_hpc.steering.results import CHAT_TEMPLATE, METHODS, POSITIONS, SCALES
from cape_kernels.backends import BACKENDS

__all__ = ["SteerOptions"]


@dataclass(frozen=True)
class SteerOptions(Options):
    """The direction, the injection h <- h + alpha * s * v at the probe layer, and greedy decoding."""

    alpha: float = option(0.5, help="injection strength")
    scale: str = option("relative", help="relative: s = |h|; absolute: s = 1", choices=SCALES)
    positions: str = option("all", help="all: prompt and generated positions; last: the last prompt token "
                                        "only; generated: generated tokens only", choices=POSITIONS)
    tau: float | None = option(None, help="gate: inject only where cos(h, v) < tau (none: no gate)")
    probe_layer: int | None = option(None, help="decoder block of the direction and the injection "
                                                "(none: n_layers // 4)", minimum=0)
    method: str = option("mean-diff", help="direction: mean(true) - mean(false), or the first principal "
                                           "component of the paired differences", choices=METHODS,
                         flag="--direction")
    pooling: str = option("last", help="pooling of the calibration states", choices=POOLINGS)
    max_new_tokens: int = option(24, help="greedy tokens generated per prompt", minimum=1)
    batch_size: int = option(16, help="prompts per generation batch (left-padded)", minimum=1)
    backend: str | None = option(None, help="cape_kernels backend (none: automatic)", choices=BACKENDS)
    chat_template: str = option("auto", help="wrap prompts in the tokenizer's chat template (auto: when it "
                                             "has one)", choices=CHAT_TEMPLATE)
    prompt_set: str = option("auto", help="generate from the prompts of this set (auto: 'truthfulness' when "
                                          "present, else all; all: every prompt)", flag="--set", metavar="SET")
    max_prompts: int | None = option(None, help="use at most the first N selected prompts", minimum=1,
                                     metavar="N")
