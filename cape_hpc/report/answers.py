"""The study's answers, the report's first section: N_c per family with its interval (benchmark-level
``/analysis/nc/<estimator>`` and internal ``/crossmodel``), and the reproduction audit's verdict
counts.  The ladders and phase tables are the records marked ``answer`` in ``report/families``.
"""
from __future__ import annotations

import math
from typing import Any

from cape_hpc.report.data import Results, boot_interval
from cape_hpc.report.layout import AuditResult, CrossModelResult, NcResult


def _nc_row(source: str, family: str, est: Any) -> dict[str, Any]:
    """One N_c estimate (an NcEstimate or an InternalNc): log10 N_c and its 95% bootstrap interval."""
    lo, hi = boot_interval(est.bootstrap)
    ok = math.isfinite(est.log10_nc)
    return {"source": source, "family": family, "estimator": est.estimator, "models": est.n_models,
            "log10 N_c": est.log10_nc if ok else None, "95% low": lo if math.isfinite(lo) else None,
            "95% high": hi if math.isfinite(hi) else None,
            "note": est.reason or ("extrapolated" if est.extrapolated else "")}


def nc_rows(res: Results) -> list[dict[str, Any]]:
    """Every stored N_c estimate, benchmark-level then internal, one row per (group, family)."""
    rows = [_nc_row(path, e.scope, e) for path, r in res.find(NcResult, "/analysis/nc") for e in r.estimates]
    for path, r in res.find(CrossModelResult):
        rows += [_nc_row(path, e.family, e) for e in r.nc]
    return rows


def verdict_counts(res: Results) -> dict[str, Any] | None:
    """{verdict: number of claims} of the stored reproduction audit (None without ``/reproduce``)."""
    a = res.optional("/reproduce", AuditResult)
    return None if a is None else {str(k): v for k, v in a.counts.items()}


def answers(res: Results) -> dict[str, Any]:
    """{nc: {columns, rows}, verdicts: {verdict: count} | None} for the report's answers section."""
    from cape_hpc.report.style import table

    return {"nc": table(nc_rows(res)), "verdicts": verdict_counts(res)}
