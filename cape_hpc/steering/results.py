"""The result of ``run_steering`` (docs/METHODS.md §4), torch-free.

Imports numpy and ``cape_hpc.schema`` only (the report reads it without torch).  Stored under
``/steering/<model>/<run>`` (``SteeringResult.group``); ``per_prompt`` is one
:class:`PromptOutcome` row per prompt; the intervention rate's interval is the Wilson interval
(``cape_hpc.stats.wilson_interval``) as a :class:`~cape_hpc.schema.ConfidenceInterval`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cape_hpc.internals.results import store_name
from cape_hpc.schema import ConfidenceInterval, Provenance, Result

__all__ = ["SteeringResult", "PromptOutcome", "run_name", "METHODS", "SCALES", "POSITIONS", "CHAT_TEMPLATE"]

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
    rate: float                   # n_changed / n_prompts (docs/METHODS.md §4.3)
    rate_ci: ConfidenceInterval   # Wilson interval of the rate (docs/METHODS.md §4.3)
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
