"""cape_hpc.dynamics: ODE discovery in benchmark space (SPEC 2.13).

- ``trajectories``: family trajectories and finite differences dB/dlog10 N on the non-uniform grid;
- ``estimators``: ``SindyODE`` and ``LinearODE`` (fit / predict / score / simulate / equations);
- ``baselines``: ``PolyBaseline`` (numpy.polyfit in log10 N per benchmark);
- ``metrics``: the error measures;
- ``discovery``: holdout cross-prediction (``discover``), per-phase fits, term stability, ``predict_size``.
"""
from cape_hpc.dynamics.baselines import PolyBaseline
from cape_hpc.dynamics.discovery import discover, phase_fits, predict_size, term_stability
from cape_hpc.dynamics.estimators import LinearODE, SindyODE, make_model
from cape_hpc.dynamics.metrics import ErrorSummary, trajectory_errors
from cape_hpc.dynamics.trajectories import Trajectory, derivative_rows, family_trajectory, trajectories

__all__ = ["LinearODE", "SindyODE", "PolyBaseline", "Trajectory", "ErrorSummary", "discover", "phase_fits",
           "predict_size", "term_stability", "make_model", "trajectory_errors", "derivative_rows",
           "family_trajectory", "trajectories"]
