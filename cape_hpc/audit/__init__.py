"""cape_hpc.audit: the reproduction audit of the paper's quantitative claims (docs/METHODS.md §2.15).

- ``registry``: ``data/claims.yaml`` -- loading, validation, :class:`Claim`;
- ``targets``: the paper's printed values, their tolerance, matching, the verdicts;
- ``computations``: one function per claim kind, calling the analyses and dynamics (one module per
  subject: correlation, nc, gamma, table, geometry, dynamics, phases, external);
- ``search``: the method axes of a claim and their bounded product; ``degeneracy``: when a match
  is not a reproduction; ``informative``: when a match holds but says little; ``speccurve``: the
  multiplicity of each claim and its grade; ``sources``: the provenance status of each curated row;
- ``audit``: :func:`run_audit` (``cape reproduce``) -> :class:`AuditResult` (stored as ``/reproduce``).

Layering: the audit imports ``analysis``, ``dynamics``, ``stats``, ``io`` and the core; nothing of
the analyses imports it.
"""
from cape_hpc.audit.audit import AlternativeResult, AuditOptions, AuditResult, ClaimResult, audit_claim, run_audit
from cape_hpc.audit.computations import COMPUTE, AuditContext, Unavailable
from cape_hpc.audit.registry import Alternative, Claim, default_registry, load_claims
from cape_hpc.audit.search import Choice, Combination, combinations
from cape_hpc.audit.targets import (VERDICT_ALT, VERDICT_DATA, VERDICT_DEGENERATE, VERDICT_INTERNALS, VERDICT_METHOD,
                                    VERDICT_NO, VERDICT_OK, VERDICT_UNINFORMATIVE, VERDICTS, Partial, Target, distance, fmt_value, half_unit,
                                    match, parse_target, verdict_key)

__all__ = ["run_audit", "audit_claim", "AuditOptions", "AuditResult", "ClaimResult", "AlternativeResult",
           "load_claims", "default_registry", "Claim", "Alternative", "COMPUTE", "AuditContext", "Unavailable",
           "VERDICTS", "VERDICT_OK", "VERDICT_ALT", "VERDICT_NO", "VERDICT_INTERNALS", "VERDICT_DATA",
           "VERDICT_METHOD", "VERDICT_DEGENERATE", "VERDICT_UNINFORMATIVE", "Partial", "Target", "parse_target", "match", "distance",
           "fmt_value", "half_unit", "verdict_key", "Choice", "Combination", "combinations"]
