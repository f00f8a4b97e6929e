"""Options of ``run_steering`` and ``evaluate_steering`` (docs/METHODS.md §4), declared once (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.internals.results import POOLINGS
from cape_hpc.options import Options, option
from cape_hpc.steering.results import CHAT_TEMPLATE, METHODS, POSITIONS, SCALES, SCORE_POSITIONS
from cape_kernels.backends import BACKENDS

__all__ = ["SteerOptions", "OutcomeOptions", "DEFAULT_ALPHAS"]


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


#: the default alpha grid: nine points, 0 included (docs/METHODS.md §4.5)
DEFAULT_ALPHAS = (-0.2, -0.1, -0.05, 0.0, 0.025, 0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class OutcomeOptions(SteerOptions):
    """The held-out evaluation (docs/METHODS.md §4.3-§4.6) on top of the direction and injection
    options; the generation options are used by the qualitative view at the chosen point."""

    alphas: tuple[float, ...] = option(DEFAULT_ALPHAS, help="alpha grid evaluated in one pass (0 is always "
                                                            "added: the baseline)", metavar="A")
    layers: tuple[int, ...] | None = option(None, help="candidate probe layers of the layer scan (none: the "
                                                       "probe layer only)", minimum=0, metavar="L")
    folds: int = option(5, help="k of the k-fold held-out evaluation", minimum=2)
    fold_seed: int = option(0, help="seed of the assignment of items to folds", minimum=0)
    score_positions: str = option("answer", help="where the injection is applied when scoring: answer (the "
                                                 "positions that predict the answer tokens: the last question "
                                                 "token and the answer tokens) or all (every token)",
                                  choices=SCORE_POSITIONS)
    max_items: int | None = option(None, help="judge at most N items (a seeded stratified subset by domain)",
                                   minimum=2, metavar="N")
    max_neutral: int | None = option(None, help="use at most the first N neutral texts for the fluency cost "
                                                "(0: skip it)", minimum=0, metavar="N")
    max_damage: float = option(0.05, help="operating point: largest damage rate allowed", minimum=0.0,
                               maximum=1.0)
    max_kl: float = option(0.1, help="operating point: largest fluency KL allowed", unit="nats", minimum=0.0)
    level: float = option(0.95, help="level of the Wilson intervals", minimum=0.5, maximum=0.999)
    token_budget: int | None = option(None, help="padded tokens per scoring batch (none: no limit)", minimum=1)
    max_prompt_tokens: int | None = option(None, help="truncate scored texts to their last N tokens (none: the "
                                                      "model's context)", minimum=8, metavar="N")
    generate: bool = option(True, help="also run the qualitative generation view at the chosen point")
