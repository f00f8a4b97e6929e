"""The audit run: every claim of the registry recomputed, a verdict per claim (docs/METHODS.md §2.15).

For each claim the stated method is computed first; if it does not give the paper's value, each
named alternative is computed in order and the first that does is reported.  Verdicts
(``cape_hpc.audit.targets``): ``reproduced``, ``reproduced only with <alternative>``, ``not
reproduced``, ``needs model internals``, ``needs data not available``, ``not computable (method not
stated)``.  The last three come from the claim's computation itself, which checks its inputs.  A
counting claim over partly missing families gives a range: outside it the claim is not reproduced,
inside it the missing data decide (``needs data not available``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cape_hpc.audit.computations import AuditContext, Unavailable, evaluate
from cape_hpc.audit.registry import Claim, default_registry, load_claims
from cape_hpc.audit.targets import (UNAVAILABLE_VERDICT, VERDICT_ALT, VERDICT_DATA, VERDICT_NO, VERDICT_OK,
                                    fmt_value, match, verdict_key)
from cape_hpc.errors import DataError, OptionError
from cape_hpc.io.provenance import sha256_file
from cape_hpc.options import Options, option
from cape_hpc.schema import Provenance, Result

__all__ = ["AuditOptions", "AlternativeResult", "ClaimResult", "AuditResult", "audit_claim", "run_audit"]


@dataclass(frozen=True)
class AuditOptions(Options):
    """What ``cape reproduce`` audits and how (docs/METHODS.md §2.15)."""

    claims: str | None = option(None, help="claims registry (none: the shipped data/claims.yaml)", metavar="YAML")
    only: tuple[str, ...] | None = option(None, help="audit only these claim ids (space- or comma-separated)",
                                          flag="--claim", metavar="ID")
    internals: str | None = option(None, help="results file with /internals groups", metavar="FILE.h5")
    n_resamples: int = option(1000, help="bootstrap resamples for the N_c intervals (the paper used 1000)",
                              minimum=1, aliases=("-n",))
    seed: int = option(0, help="seed of the resampling streams", minimum=0)

    def check(self) -> None:
        if self.only is not None:
            ids = tuple(s for item in self.only for s in (p.strip() for p in str(item).split(",")) if s)
            object.__setattr__(self, "only", ids or None)


@dataclass
class AlternativeResult:
    """One alternative tried: its value, whether it matches the paper (``undecided``: the missing
    inputs decide, or it could not be computed -- then ``reason`` says why)."""

    name: str
    value: str
    matches: bool
    undecided: bool
    reason: str


@dataclass
class ClaimResult:
    """One claim of the audit table."""

    id: str
    section: str
    gist: str
    paper: str                # as printed (several values comma-separated)
    method: str
    value: str                # computed with the stated method ('-' when unavailable)
    verdict: str
    alternative: str          # the alternative that reproduces it, '' if none
    reason: str               # why unavailable / error text, '' if none
    alternatives_tried: list[AlternativeResult]


@dataclass
class AuditResult(Result):
    """The reproduction audit: one row per claim, the count of each verdict."""

    claims: list[ClaimResult]
    counts: dict[str, int]
    registry: str
    provenance: Provenance

    def by_id(self) -> dict[str, ClaimResult]:
        return {c.id: c for c in self.claims}


def _evaluate(ctx, fn, args):
    try:
        return evaluate(ctx, fn, args), ""
    except Unavailable:
        raise
    except (DataError, OptionError) as exc:
        return None, f"error: {exc}"


def audit_claim(ctx: AuditContext, claim: Claim) -> ClaimResult:
    """The verdict of one claim (see the module doc)."""
    targets = claim.targets()
    paper_text = claim.paper_text
    try:
        value, err = _evaluate(ctx, claim.fn, claim.args)
    except Unavailable as u:
        return ClaimResult(claim.id, claim.section, claim.gist, paper_text, claim.method, "-",
                           UNAVAILABLE_VERDICT[u.kind], "", u.reason, [])
    ok = match(targets, value) if not err else False
    tried: list[AlternativeResult] = []
    if ok is True:
        return ClaimResult(claim.id, claim.section, claim.gist, paper_text, claim.method, fmt_value(value),
                           VERDICT_OK, "", err, tried)
    pending_data = ok is None
    found = ""
    for alt in claim.alternatives:
        args = {**claim.args, **alt.args}
        try:
            v, aerr = _evaluate(ctx, alt.fn or claim.fn, args)
        except Unavailable as u:
            tried.append(AlternativeResult(alt.name, "-", False, True, u.reason))
            continue
        m = match(targets, v) if not aerr else False
        tried.append(AlternativeResult(alt.name, fmt_value(v), m is True, m is None, aerr))
        if m is True:
            found = alt.name
            break
    if found:
        verdict = f"{VERDICT_ALT} {found}"
    elif pending_data:
        verdict = VERDICT_DATA
        err = err or f"computed range {fmt_value(value)} contains the paper's value; the missing inputs decide"
    else:
        verdict = VERDICT_NO
    return ClaimResult(claim.id, claim.section, claim.gist, paper_text, claim.method, fmt_value(value), verdict,
                       found, err, tried)


def run_audit(scores: pd.DataFrame, opts: AuditOptions | None = None, *, frontier: pd.DataFrame | None = None,
              loss: pd.DataFrame | None = None) -> AuditResult:
    """Audit every claim of the registry (``opts.claims``) against the given tables (see the module doc)."""
    opts = opts or AuditOptions()
    claims = load_claims(opts.claims)
    if opts.only:
        unknown = sorted(set(opts.only) - {c.id for c in claims})
        if unknown:
            raise OptionError(f"option '--claim': unknown claim id(s) {', '.join(unknown)}")
        claims = [c for c in claims if c.id in set(opts.only)]
    ctx = AuditContext(scores, frontier, loss, opts.internals, opts.n_resamples, opts.seed)
    outcomes = [audit_claim(ctx, c) for c in claims]
    counts: dict[str, int] = {}
    for o in outcomes:
        key = verdict_key(o.verdict)
        counts[key] = counts.get(key, 0) + 1
    reg = Path(opts.claims) if opts.claims else default_registry()
    inputs = {"scores": str(scores.attrs.get("sha256", "")), "claims": sha256_file(reg)}
    if frontier is not None:
        inputs["frontier"] = str(frontier.attrs.get("sha256", ""))
    if loss is not None:
        inputs["loss"] = str(loss.attrs.get("sha256", ""))
    prov = Provenance("reproduce", opts.to_dict(), seed=opts.seed, n_resamples=opts.n_resamples, inputs=inputs)
    return AuditResult(outcomes, counts, str(reg), prov)
