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

#: (group path pattern, class, the pattern as the docs and skip notes write it: "" = the pattern);
#: the first full match decides
GROUP_LAYOUT: tuple[tuple[str, type, str], ...] = (
    ("/analysis/coupling", CouplingResult, ""),
    ("/analysis/phases", PhaseResult, ""),
    ("/analysis/population(_phase|_all)?", PopulationResult, "/analysis/population[_all|_phase]"),
    (f"/analysis/nc/{_SEG}", NcResult, "/analysis/nc/<estimator>"),
    ("/analysis/deff", DeffResult, ""),
    ("/analysis/width", WidthResult, ""),
    ("/analysis/(frontier_)?hfield", HFieldResult, "/analysis/hfield"),
    ("/analysis/isocline", IsoclineResult, ""),
    ("/analysis/loss", LossLawResult, ""),
    ("/analysis/fixedpoint", FixedPointResult, ""),
    ("/analysis/eigen", EigenResult, ""),
    ("/analysis/frontier", FrontierResult, ""),
    ("/analysis/diagnose_model", DiagnoseModel, ""),
    ("/analysis/diagnose", Diagnosis, ""),
    (f"/dynamics/predict/{_SEG}/{_SEG}", PredictResult, "/dynamics/predict/<family>/<size>"),
    (f"/dynamics/(?!predict/){_SEG}/{_SEG}", DynamicsResult, "/dynamics/<model>/<train>--<holdout>"),
    ("/reproduce", AuditResult, ""),
    (f"/internals/{_SEG}", InternalsResult, "/internals/<model>"),
    (f"/steering/{_SEG}/outcome(_{_SEG})?", SteeringOutcomeResult, "/steering/<model>/outcome_<items>"),
    (f"/steering/{_SEG}/{_SEG}", SteeringResult, "/steering/<model>/<run>"),
    (f"/scores/{_SEG}", InputTable, "/scores/<name>"),
    ("/crossmodel", CrossModelResult, ""),
)

#: (compiled pattern, class), for the readers
LAYOUT: tuple[tuple[re.Pattern, type], ...] = tuple((re.compile(p), c) for p, c, _ in GROUP_LAYOUT)

#: class -> its group as the docs write it (README table, skip notes)
GROUPS: dict[type, str] = {c: shown or p for p, c, shown in GROUP_LAYOUT}
