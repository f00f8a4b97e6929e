"""cape_hpc.audit: the reproduction audit of the paper's quantitative claims (docs/METHODS.md §2.15).

- ``registry``: ``data/claims.yaml`` -- loading, validation, :class:`Claim`;
- ``targets``: the paper's printed values, their tolerance, matching, the verdicts;
- ``computations``: one function per claim kind, calling the analyses and dynamics (one module per
  subject: correlation, nc, gamma, table, geometry, dynamics, phases, external);
- ``search``: the method axes of a claim and their bounded product; ``degeneracy``: when a match
  is not a reproduction; ``informative``: when a match holds but says little; ``speccurve``: the
  multiplicity of each claim and its grade; ``sources``: the provenance status of each curated row;
- ``audit``: :func:`run_audit` (``cape reproduce``) -> :class:`AuditResult` (stored as ``/reproduce``).

Names are loaded lazily (``cape_hpc.audit.options`` needs no numpy or pandas).

Layering: the audit imports ``analysis``, ``dynamics``, ``stats``, ``io`` and the core; nothing of
the analyses imports it.
"""
from __future__ import annotations

from cape_hpc.lazy import lazy_exports

_EXPORTS = {
    **{name: "audit" for name in ("AlternativeResult", "AuditResult", "ClaimResult", "audit_claim", "run_audit")},
    "AuditOptions": "options",
    "COMPUTE": "computations", "AuditContext": "computations", "Unavailable": "computations",
    "Alternative": "registry", "Claim": "registry", "default_registry": "registry", "load_claims": "registry",
    "Choice": "search", "Combination": "search", "combinations": "search",
    **{name: "targets" for name in ("VERDICT_ALT", "VERDICT_DATA", "VERDICT_DEGENERATE", "VERDICT_INTERNALS",
                                    "VERDICT_METHOD", "VERDICT_NO", "VERDICT_OK", "VERDICT_UNINFORMATIVE", "VERDICTS",
                                    "Partial", "Target", "distance", "fmt_value", "half_unit", "match",
                                    "parse_target", "verdict_key")},
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
