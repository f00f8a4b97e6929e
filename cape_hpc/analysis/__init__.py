"""cape_hpc.analysis: benchmark-level CAPE (SPEC section 2, items 1-12 and 14).

One module per method; every public function takes score tables (``cape_hpc.io.scores``) and
options and returns a dataclass with a ``provenance`` field.  Names are loaded lazily.  The
functions named like their module (``phases``, ``isocline``, ``diagnose``) are imported from the
module (``from cape_hpc.analysis.isocline import isocline``): a package attribute of that name is
the submodule.

| module | function | SPEC 2 |
| --- | --- | --- |
| coupling | local_coupling | 1 |
| phases | phases, classify_phase | 2 |
| population | population_coupling | 3 |
| nc | estimate_nc | 4 |
| deff | effective_dimension | 5 |
| width | width_normalisation | 6 |
| hfield | h_field | 7 |
| isocline | isocline | 8 |
| losslaw | loss_law | 9 |
| fixedpoint | coupling_fixed_point | 10 |
| eigen | eigen_geometry | 11 |
| frontier | frontier_fit | 12 |
| diagnose | fit_diagnose_model, diagnose_point, diagnose | 14 |
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "local_coupling": "coupling", "CouplingResult": "coupling", "Interval": "coupling",
    "classify_phase": "phases", "PhaseResult": "phases",
    "population_coupling": "population", "PopulationResult": "population",
    "estimate_nc": "nc", "NcResult": "nc", "NcEstimate": "nc", "ESTIMATORS": "nc",
    "effective_dimension": "deff", "participation_ratio": "deff", "DeffResult": "deff",
    "width_normalisation": "width", "WidthResult": "width",
    "h_field": "hfield", "HFieldResult": "hfield",
    "IsoclineResult": "isocline",
    "loss_law": "losslaw", "LossLawResult": "losslaw",
    "coupling_fixed_point": "fixedpoint", "fixed_point_xy": "fixedpoint", "FixedPointResult": "fixedpoint",
    "eigen_geometry": "eigen", "EigenResult": "eigen",
    "frontier_fit": "frontier", "FrontierResult": "frontier",
    "fit_diagnose_model": "diagnose", "diagnose_point": "diagnose",
    "DiagnoseModel": "diagnose", "Diagnosis": "diagnose",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'cape_hpc.analysis' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"cape_hpc.analysis.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
