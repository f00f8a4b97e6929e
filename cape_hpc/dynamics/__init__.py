"""cape_hpc.dynamics: ODE discovery in benchmark space (docs/METHODS.md §2.13).

- ``options``: the declared options (``ODEOptions``, ``DynamicsOptions``, ``PredictOptions``,
  ``TermStabilityOptions``, ``PhaseFitOptions``);
- ``trajectories``: family trajectories and finite differences dB/dlog10 N on the non-uniform grid;
- ``estimators``: ``SindyODE`` and ``LinearODE`` (fit / predict / score / simulate / equations);
- ``baselines``: ``PolyBaseline`` (numpy.polyfit in log10 N per benchmark);
- ``metrics``: the error measures;
- ``internals``: internal coupling as a state variable (``internal:<quantity>``, joined by model name);
- ``discovery``: holdout cross-prediction (``discover`` -> ``DynamicsResult``), per-phase fits
  (``PhaseFitResult``), term stability (``TermStability``), ``predict_size`` (``PredictResult``).

Layering: dynamics imports ``analysis`` (one direction only), ``stats``, ``io`` and the core.
Names are loaded lazily: ``cape_hpc.dynamics.options`` needs no pandas, scipy or numba.
"""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "PolyBaseline": "baselines",
    **{name: "discovery" for name in ("BaselineScore", "DynamicsResult", "PhaseFit", "PhaseFitResult", "PredictionRow",
                                      "PredictResult", "TermStability", "discover", "phase_fits", "predict_size",
                                      "term_stability")},
    "LinearODE": "estimators", "SindyODE": "estimators", "make_model": "estimators",
    "ErrorSummary": "metrics", "trajectory_errors": "metrics",
    **{name: "options" for name in ("DynamicsOptions", "ODEOptions", "PhaseFitOptions", "PredictOptions",
                                    "TermStabilityOptions", "parse_size")},
    "Trajectory": "trajectories", "derivative_rows": "trajectories", "family_trajectory": "trajectories",
    "trajectories": "trajectories",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
