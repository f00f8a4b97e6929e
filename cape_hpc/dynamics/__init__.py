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
"""
from cape_hpc.dynamics.baselines import PolyBaseline
from cape_hpc.dynamics.discovery import (BaselineScore, DynamicsResult, PhaseFit, PhaseFitResult, PredictionRow,
                                         PredictResult, TermStability, discover, phase_fits, predict_size,
                                         term_stability)
from cape_hpc.dynamics.estimators import LinearODE, SindyODE, make_model
from cape_hpc.dynamics.metrics import ErrorSummary, trajectory_errors
from cape_hpc.dynamics.options import (DynamicsOptions, ODEOptions, PhaseFitOptions, PredictOptions,
                                       TermStabilityOptions, parse_size)
from cape_hpc.dynamics.trajectories import Trajectory, derivative_rows, family_trajectory, trajectories

__all__ = ["LinearODE", "SindyODE", "PolyBaseline", "Trajectory", "ErrorSummary", "discover", "phase_fits",
           "predict_size", "term_stability", "make_model", "trajectory_errors", "derivative_rows",
           "family_trajectory", "trajectories", "DynamicsResult", "PredictResult", "PhaseFitResult", "PhaseFit",
           "TermStability", "BaselineScore", "PredictionRow", "ODEOptions", "DynamicsOptions", "PredictOptions",
           "TermStabilityOptions", "PhaseFitOptions", "parse_size"]
