"""The results of steering (docs/METHODS.md §4), torch-free.

Imports numpy and ``cape_hpc.schema`` only (the report reads them without torch).

- :class:`SteeringOutcomeResult` (``evaluate_steering``): the held-out multiple-choice outcome over
  an alpha grid and a layer scan, with the fluency cost and the chosen operating point; stored under
  ``/steering/<model>/outcome_<items>``.
- :class:`SteeringResult` (``run_steering``): the qualitative view, greedy generation with and
  without the injection; stored under ``/steering/<model>/<run>``; ``per_prompt`` is one
  :class:`PromptOutcome` row per prompt; the intervention rate's interval is the Wilson interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cape_hpc.internals.results import store_name
from cape_hpc.schema import ConfidenceInterval, Provenance, Result

__all__ = ["SteeringResult", "PromptOutcome", "run_name", "SteeringOutcomeResult", "DosePoint", "ItemOutcome",
           "outcome_name", "SCORE_POSITIONS", "RULE", "METHODS", "SCALES", "POSITIONS", "CHAT_TEMPLATE"]

METHODS = ("mean-diff", "pca")
SCALES = ("relative", "absolute")
POSITIONS = ("all", "last", "generated")
CHAT_TEMPLATE = ("auto", "on", "off")


def run_name(probe_layer: int, method: str, alpha: float, scale: str, positions: str, tau: float | None,
             max_new_tokens: int) -> str:
    """The group name of one steering run (its options that change the text)."""
    t = "none" if tau is None else f"{tau:g}"
    return f"L{probe_layer}_{method}_a{alpha:g}_{scale}_{positions}_tau{t}_n{max_new_tokens}"


@dataclass
class PromptOutcome:
    """Greedy generation from one prompt with and without the injection."""

    id: str
    prompt: str
    baseline: str
    steered: str
    changed: bool                 # the generated token ids differ
    cos: float                    # cos(h, v) at the probe layer, last prompt token, before injection
    n_baseline_tokens: int
    n_steered_tokens: int


@dataclass
class SteeringResult(Result):
    """Intervention statistics of one steering run (docs/METHODS.md §4)."""

    model: str
    source: str
    revision: str
    dtype: str
    backend: str                  # the kernel backend that ran (resolved)
    probe_layer: int
    method: str
    alpha: float
    scale: str
    positions: str
    tau: float | None             # None: no gate
    pooling: str
    max_new_tokens: int
    batch_size: int
    chat_template: bool           # whether the prompts were wrapped in the chat template (resolved)
    direction: np.ndarray         # [d_model], unit length
    calibration_sha256: str
    prompt_set_sha256: str
    n_prompts: int
    n_changed: int
    rate: float                   # n_changed / n_prompts (docs/METHODS.md §4.7)
    rate_ci: ConfidenceInterval   # Wilson interval of the rate (docs/METHODS.md §4.7)
    n_injected: int               # positions where the injection was applied
    per_prompt: list[PromptOutcome]
    provenance: Provenance
    complete: bool = True

    @property
    def run_name(self) -> str:
        return run_name(self.probe_layer, self.method, self.alpha, self.scale, self.positions, self.tau,
                        self.max_new_tokens)

    @property
    def group(self) -> str:
        return f"/steering/{store_name(self.model)}/{self.run_name}"


# ----------------------------------------------------------------------------------- the outcome
SCORE_POSITIONS = ("answer", "all")
CALIBRATION_SOURCES = ("items",)

#: the operating-point rule, in the words the output prints (docs/METHODS.md §4.6)
RULE = ("largest correction rate among (layer, alpha != 0) with damage rate <= {max_damage:g}, "
        "fluency KL <= {max_kl:g} nats and at least one correction; ties: the larger net gain "
        "(corrections - damages), then the smaller |alpha|")


def outcome_name(items_stem: str) -> str:
    """The group name of one outcome run under ``/steering/<model>``."""
    return f"outcome_{store_name(items_stem)}" if items_stem else "outcome"


@dataclass
class DosePoint:
    """The held-out evaluation at one (layer, alpha) (docs/METHODS.md §4.3-§4.6).  ``alpha = 0`` is
    the baseline (the same row at every layer)."""

    layer: int
    alpha: float
    n_items: int
    n_correct: int
    accuracy: float
    accuracy_ci: ConfidenceInterval           # Wilson
    mc2: float                                # mean MC2 score (normalised mass on the true answers)
    n_base_wrong: int
    n_corrected: int                          # baseline wrong -> steered right
    correction_rate: float                    # n_corrected / n_base_wrong (NaN when 0)
    correction_ci: ConfidenceInterval         # Wilson
    n_base_right: int
    n_damaged: int                            # baseline right -> steered wrong
    damage_rate: float                        # n_damaged / n_base_right (NaN when 0)
    damage_ci: ConfidenceInterval             # Wilson
    mcnemar_p: float                          # exact two-sided McNemar (binomial on b = corrected, c = damaged)
    kl: float                                 # mean next-token KL(steered || unsteered) on the neutral set, nats
    perplexity: float                         # of the neutral set under the steered model
    eligible: bool                            # meets the operating-point bounds (never for alpha = 0)


@dataclass
class ItemOutcome:
    """One held-out item: its fold, the baseline choice and the choice at the operating point."""

    id: str
    domain: str
    kind: str                    # 'mc' | 'tf'
    fold: int                    # the fold in which the item was judged (calibrated on the others)
    n_answers: int
    baseline_choice: int         # index of the answer with the largest normalised log-prob
    baseline_correct: bool
    baseline_mc2: float
    steered_choice: int          # at the operating point (-1 when none was chosen)
    steered_correct: bool
    steered_mc2: float           # NaN when none was chosen


@dataclass
class SteeringOutcomeResult(Result):
    """Held-out multiple-choice outcome of steering over an alpha grid and a layer scan, with the
    fluency cost and the chosen operating point (docs/METHODS.md §4.3-§4.6)."""

    model: str
    source: str
    revision: str
    dtype: str
    backend: str                  # kernel backend that ran (resolved)
    items_path: str
    items_sha256: str
    n_items: int
    domains: dict[str, int]       # items judged per domain
    neutral_path: str
    neutral_sha256: str
    n_neutral: int                # neutral texts (0: fluency not measured)
    n_neutral_tokens: int         # next-token positions the KL averages over
    layers: list[int]             # candidate probe layers (the scan)
    alphas: list[float]           # the grid (0 included)
    scale: str
    positions: str                # where the injection is applied when scoring: 'answer' | 'all'
    tau: float | None
    method: str
    pooling: str
    calibration: str              # what the direction is calibrated on (docs/METHODS.md §4.1)
    n_folds: int
    fold_seed: int
    level: float
    baseline_accuracy: float
    baseline_accuracy_ci: ConfidenceInterval
    baseline_mc2: float
    points: list[DosePoint]       # one per (layer, alpha), layers outer, alphas in grid order
    choices: np.ndarray           # [len(points), n_items] int64: the chosen answer at each point
    rule: str                     # the operating-point rule, in words
    max_damage: float
    max_kl: float
    chosen_layer: int             # -1 when no point meets the bounds
    chosen_alpha: float           # NaN when none
    directions: np.ndarray        # [len(layers), d_model] unit, calibrated on all items (generation view)
    fold_directions_cos: np.ndarray   # [len(layers), n_folds]: cos(fold direction, all-items direction)
    per_item: list[ItemOutcome]
    provenance: Provenance
    complete: bool = True

    @property
    def chosen(self) -> DosePoint | None:
        for p in self.points:
            if p.layer == self.chosen_layer and p.alpha == self.chosen_alpha:
                return p
        return None

    def point(self, layer: int, alpha: float) -> DosePoint:
        for p in self.points:
            if p.layer == layer and p.alpha == alpha:
                return p
        raise KeyError((layer, alpha))

    @property
    def run_name(self) -> str:
        import os

        return outcome_name(os.path.splitext(os.path.basename(self.items_path))[0])

    @property
    def group(self) -> str:
        return f"/steering/{store_name(self.model)}/{self.run_name}"
