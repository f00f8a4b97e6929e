"""Which result class the report expects at which group of a results file.

One row per stored group the commands write (``cape analyze --out``, ``cape <analysis> --out``,
``cape dynamics/predict/reproduce --out``, ``cape internals/steer --out``).  The readers decode each
group into the class named here and fail (SchemaError naming the group and the field) when the
stored group does not match it.  Only torch-free modules are imported (``cape_hpc.internals.results``
and ``cape_hpc.steering.results``, never ``cape_hpc.internals`` / ``cape_hpc.steering`` themselves).
"""
from __future__ import annotations

import re

from cape_hpc.analysis.coupling import CouplingResult
from cape_hpc.analysis.deff import DeffResult
from cape_hpc.analysis.diagnose import DiagnoseModel, Diagnosis
from cape_hpc.analysis.eigen import EigenResult
from cape_hpc.analysis.fixedpoint import FixedPointResult
from cape_hpc.analysis.frontier import FrontierResult
from cape_hpc.analysis.hfield import HFieldResult
from cape_hpc.analysis.isocline import IsoclineResult
from cape_hpc.analysis.losslaw import LossLawResult
from cape_hpc.analysis.nc import NcResult
from cape_hpc.analysis.phases import PhaseResult
from cape_hpc.analysis.population import PopulationResult
from cape_hpc.analysis.width import WidthResult
from cape_hpc.audit import AuditResult
from cape_hpc.crossmodel.results import CrossModelResult
from cape_hpc.dynamics.discovery import DynamicsResult, PredictResult
from cape_hpc.internals.results import InternalsResult
from cape_hpc.io.scores import InputTable
from cape_hpc.steering.results import SteeringOutcomeResult, SteeringResult

_SEG = r"[^/]+"

#: (group path pattern, class); the first full match decides
LAYOUT: tuple[tuple[re.Pattern, type], ...] = tuple((re.compile(p), c) for p, c in (
    ("/analysis/coupling", CouplingResult),
    ("/analysis/phases", PhaseResult),
    ("/analysis/population(_phase|_all)?", PopulationResult),
    (f"/analysis/nc/{_SEG}", NcResult),
    ("/analysis/deff", DeffResult),
    ("/analysis/width", WidthResult),
    ("/analysis/(frontier_)?hfield", HFieldResult),
    ("/analysis/isocline", IsoclineResult),
    ("/analysis/loss", LossLawResult),
    ("/analysis/fixedpoint", FixedPointResult),
    ("/analysis/eigen", EigenResult),
    ("/analysis/frontier", FrontierResult),
    ("/analysis/diagnose_model", DiagnoseModel),
    ("/analysis/diagnose", Diagnosis),
    (f"/dynamics/predict/{_SEG}/{_SEG}", PredictResult),
    (f"/dynamics/(?!predict/){_SEG}/{_SEG}", DynamicsResult),
    ("/reproduce", AuditResult),
    (f"/internals/{_SEG}", InternalsResult),
    (f"/steering/{_SEG}/outcome(_{_SEG})?", SteeringOutcomeResult),
    (f"/steering/{_SEG}/{_SEG}", SteeringResult),
    (f"/scores/{_SEG}", InputTable),
    ("/crossmodel", CrossModelResult),
))

#: group patterns as written in the docs (README table, skip notes)
GROUPS = {
    CouplingResult: "/analysis/coupling", PhaseResult: "/analysis/phases", NcResult: "/analysis/nc/<estimator>",
    DeffResult: "/analysis/deff", WidthResult: "/analysis/width", HFieldResult: "/analysis/hfield",
    IsoclineResult: "/analysis/isocline", LossLawResult: "/analysis/loss", EigenResult: "/analysis/eigen",
    FrontierResult: "/analysis/frontier", DiagnoseModel: "/analysis/diagnose_model",
    DynamicsResult: "/dynamics/<model>/<train>--<holdout>", PredictResult: "/dynamics/predict/<family>/<size>",
    AuditResult: "/reproduce", InternalsResult: "/internals/<model>", SteeringResult: "/steering/<model>/<run>",
    SteeringOutcomeResult: "/steering/<model>/outcome_<items>",
    CrossModelResult: "/crossmodel",
}
