"""One function per claim kind, named ``claim_<kind>`` (``compute.fn`` of ``data/claims.yaml``), calling the analyses (docs/METHODS.md §2.15).

Each function takes the :class:`AuditContext` (the tables, the bootstrap settings, a cache of
expensive results) and the claim's ``args``, and returns the value in the unit of the paper's number
(billions of parameters, percent, a count pair ...).  When its inputs are missing it raises
:class:`Unavailable` ('internals', 'data' or 'method'), which becomes the claim's verdict.  Counting
claims over a list of families of which some are missing return a ``Partial`` range.

The computations only call the public functions of ``cape_hpc.analysis``, ``cape_hpc.dynamics`` and
``cape_hpc.stats``, each with its declared options object.  One module per subject:

| module | claims about |
| --- | --- |
| ``context`` | (shared) the context, ``Unavailable``, the cached local coupling |
| ``correlation`` | Pearson / Spearman over models, gamma against log N (§2.3) |
| ``nc`` | N_c and its interval (§2.4) |
| ``gamma`` | the sign of gamma, gamma at a model, the share / exchange rate above N_c (§2.1-2.2) |
| ``table`` | counts and values read off the scores table |
| ``geometry`` | d_eff, width normalisation, isocline, fixed point, eigen-geometry (§2.5-2.11) |
| ``dynamics`` | ODE fits and their baselines, SINDy terms (§2.13) |
| ``phases`` | the per-phase coupling coefficient (§2.13) |
| ``external`` | the loss law, the frontier, Wilson counts, internals, data not shipped |
"""
from __future__ import annotations

from typing import Any, Callable

from cape_hpc.audit.computations import correlation, dynamics, external, gamma, geometry, nc, phases, table
from cape_hpc.audit.computations.context import AuditContext, Unavailable

__all__ = ["AuditContext", "Unavailable", "COMPUTE", "evaluate"]

COMPUTE: dict[str, Callable] = {
    "pearson": correlation.claim_pearson, "gamma_logn_r": correlation.claim_gamma_logn_r,
    "nc": nc.claim_nc, "nc_ratio": nc.claim_nc_ratio,
    "count_models": table.claim_count_models, "count_families": table.claim_count_families, "score": table.claim_score,
    "score_delta": table.claim_score_delta, "tqa_variant": table.claim_tqa_variant, "n_layers": table.claim_n_layers,
    "sign_flip_count": gamma.claim_sign_flip_count, "all_positive": gamma.claim_all_positive,
    "fraction_positive": gamma.claim_fraction_positive, "gamma_at": gamma.claim_gamma_at,
    "max_gamma_at": gamma.claim_max_gamma_at, "above_nc_positive": gamma.claim_above_nc_positive,
    "exchange_rate": gamma.claim_exchange_rate,
    "deff": geometry.claim_deff, "width": geometry.claim_width, "width_flip_count": geometry.claim_width_flip_count,
    "isocline": geometry.claim_isocline, "isocline_above": geometry.claim_isocline_above, "eigen": geometry.claim_eigen,
    "fixed_point": geometry.claim_fixed_point,
    "dynamics": dynamics.claim_dynamics, "sindy_terms": dynamics.claim_sindy_terms, "holdout_max": dynamics.claim_holdout_max,
    "phase_coef": phases.claim_phase_coef,
    "loss": external.claim_loss, "frontier": external.claim_frontier, "wilson": external.claim_wilson,
    "internals": external.claim_internals, "external": external.claim_external, "not_stated": external.claim_not_stated,
}


def evaluate(ctx: AuditContext, fn: str, args: dict) -> Any:
    """One computation; ``_each: {arg: [v1, v2]}`` and a list-valued ``quantity`` give a list."""
    args = dict(args)
    each = args.pop("_each", None)
    if each:
        (name, values), = each.items()
        return [evaluate(ctx, fn, {**args, name: v}) for v in values]
    q = args.get("quantity")
    if isinstance(q, (list, tuple)) and fn != "nc":
        return [evaluate(ctx, fn, {**args, "quantity": v}) for v in q]
    return COMPUTE[fn](ctx, **args)
