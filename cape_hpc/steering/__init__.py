"""Steering (docs/METHODS.md §4): direction calibration, batched steered greedy generation, intervention
statistics.  Imported lazily: ``cape_hpc.steering.results`` and ``.options`` need no torch."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SteeringResult": "results", "PromptOutcome": "results",
    "SteerOptions": "options",
    "Direction": "steer", "Injector": "steer", "calibrate_direction": "steer", "greedy_generate": "steer",
    "run_steering": "steer", "steering_hook": "steer", "select_prompts": "steer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'cape_hpc.steering' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cape_hpc.steering.{mod}"), name)
    globals()[name] = value
    return value
