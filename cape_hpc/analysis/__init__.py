"""cape_hpc.analysis: benchmark-level CAPE (docs/METHODS.md §2.1-§2.12 and §2.14).

One module per method; every public function takes the score table(s) (``cape_hpc.io.scores``)
and one options object (``cape_hpc.analysis.options``, which needs no pandas, scipy or numba: the
``cape`` command parses its flags without them; ``None`` means the defaults) and returns a
``cape_hpc.schema.Result`` whose ``provenance.options`` is ``opts.to_dict()``.  Names are loaded lazily.  The functions named like
their module (``phases``, ``isocline``, ``diagnose``) are imported from the module (``from
cape_hpc.analysis.isocline import isocline``): a package attribute of that name is the submodule.

| module | function | options | docs/METHODS.md |
| --- | --- | --- | --- |
| coupling | local_coupling | CouplingOptions | §2.1 |
| phases | phases, classify_phase | PhasesOptions | §2.2 |
| population | population_coupling | PopulationOptions | §2.3 |
| nc | estimate_nc | NcOptions | §2.4 |
| deff | effective_dimension | DeffOptions | §2.5 |
| width | width_normalisation | WidthOptions | §2.6 |
| hfield | h_field | HFieldOptions | §2.7 |
| isocline | isocline | IsoclineOptions | §2.8 |
| losslaw | loss_law | LossOptions | §2.9 |
| fixedpoint | coupling_fixed_point, fixed_point_xy | FixedPointOptions | §2.10 |
| eigen | eigen_geometry | EigenOptions | §2.11 |
| frontier | frontier_fit | FrontierOptions | §2.12 |
| diagnose | fit_diagnose_model, diagnose_point, diagnose | DiagnoseOptions | §2.14 |
"""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    "local_coupling": "coupling", "CouplingResult": "coupling", "Interval": "coupling",
    "classify_phase": "phases", "PhaseResult": "phases",
    "population_coupling": "population", "PopulationResult": "population",
    "estimate_nc": "nc", "NcResult": "nc", "NcEstimate": "nc", "ESTIMATORS": "options",
    "effective_dimension": "deff", "DeffResult": "deff",
    "width_normalisation": "width", "WidthResult": "width",
    "h_field": "hfield", "HFieldResult": "hfield",
    "IsoclineResult": "isocline",
    "loss_law": "losslaw", "LossLawResult": "losslaw",
    "coupling_fixed_point": "fixedpoint", "fixed_point_xy": "fixedpoint", "FixedPointResult": "fixedpoint",
    "eigen_geometry": "eigen", "EigenResult": "eigen",
    "frontier_fit": "frontier", "FrontierResult": "frontier",
    "fit_diagnose_model": "diagnose", "diagnose_point": "diagnose",
    "DiagnoseModel": "diagnose", "Diagnosis": "diagnose",
    "ols_line": "_common", "ols_rows": "_common", "table_sha256": "_common", "check_columns": "_common",
    **{name: "options" for name in ("CouplingOptions", "PhasesOptions", "PopulationOptions", "WidthOptions",
                                    "HFieldOptions", "IsoclineOptions", "LossOptions", "FixedPointOptions",
                                    "EigenOptions", "FrontierOptions", "DiagnoseOptions",
                                    "NcOptions", "DeffOptions")},
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
