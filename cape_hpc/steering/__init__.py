"""Steering (docs/METHODS.md §4): direction calibration, batched steered greedy generation, intervention
statistics.  Imported lazily: ``cape_hpc.steering.results`` and ``.options`` need no torch."""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "SteeringResult": "results", "PromptOutcome": "results",
    "SteerOptions": "options",
    "Direction": "steer", "Injector": "steer", "calibrate_direction": "steer", "greedy_generate": "steer",
    "run_steering": "steer", "steering_hook": "steer", "select_prompts": "steer",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
