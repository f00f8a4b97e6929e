"""Steering (docs/METHODS.md §4): the held-out multiple-choice outcome over an alpha grid and a layer
scan (``evaluate_steering``), direction calibration, and the qualitative view, batched steered greedy
generation (``run_steering``).  Imported lazily: ``cape_hpc.steering.results``, ``.options`` and
``.items`` need no torch."""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "SteeringResult": "results", "PromptOutcome": "results", "SteeringOutcomeResult": "results",
    "DosePoint": "results", "ItemOutcome": "results",
    "SteerOptions": "options", "OutcomeOptions": "options",
    "Item": "items", "ItemSet": "items", "load_items": "items", "load_neutral": "items", "NeutralSet": "items",
    "assign_folds": "folds",
    "Injection": "scoring", "score_rows": "scoring", "tokenize_rows": "scoring", "fluency_pass": "scoring",
    "evaluate_steering": "evaluate", "item_directions": "evaluate",
    "Steering": "generate", "greedy_generate": "generate",
    "InjectionHook": "hooks", "RowInjection": "hooks", "pooled_capture": "hooks",
    "unit_direction": "directions",
    "Direction": "steer", "calibrate_direction": "steer", "run_steering": "steer", "select_prompts": "steer",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
