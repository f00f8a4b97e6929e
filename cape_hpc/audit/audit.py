"""The audit run: every claim of the registry recomputed, a verdict per claim (docs/METHODS.md §2.15).

For each claim the stated combination of method choices is computed first, then the product of its
axes' alternatives (``cape_hpc.audit.search``: one change, then two, ...) up to ``budget``
combinations; a stated method that cannot run (missing data or internals) does not stop the search.
Each combination's match, its distance from the paper's value and its degeneracy
(``cape_hpc.audit.degeneracy``) are kept.  Verdicts (``cape_hpc.audit.targets``):

- ``reproduced``: the stated combination matches and is not degenerate;
- ``reproduced only with <combination>``: a non-degenerate other combination matches (the one with
  the fewest changes, then the closest);
- ``holds but not informative: <why>``: the deciding match is explained by a null, a base rate or
  the size of the fit (``cape_hpc.audit.informative``);
- ``degenerate``: the only matches are degenerate fits or intervals;
- ``not reproduced by any of K combinations tried``: K combinations were computed, none matches;
- ``needs model internals`` / ``needs data not available`` / ``not computable (method not stated)``:
  the stated method cannot run (or a count over partly missing families still allows the paper's
  value) and no combination matched.

Each claim reports the combination that decided its verdict, the closest combination and every
combination within the tolerance; the uncertain data rows (``data/SOURCES.md``) among the rows the
deciding combination names; its specification curve and grade (``cape_hpc.audit.speccurve``); and,
for a Monte Carlo target (a stated value that changes with the seed), its spread over ``mc_seeds``
seeds: each printed number then matches within max(half a unit of its last digit, 2 sd), capped at
25% of the value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cape_hpc.audit.computations import AuditContext, Unavailable, evaluate
from cape_hpc.audit.degeneracy import reasons as degeneracy_reasons
from cape_hpc.audit.informative import reasons as informative_reasons
from cape_hpc.audit.options import AuditOptions
from cape_hpc.audit.registry import Claim, default_registry, load_claims
from cape_hpc.audit.search import STATED, combinations, n_product
from cape_hpc.audit.speccurve import spec_curve
from cape_hpc.audit.targets import (UNAVAILABLE_VERDICT, VERDICT_ALT, VERDICT_DATA, VERDICT_DEGENERATE, VERDICT_OK,
                                    VERDICT_UNINFORMATIVE, Partial, Target, distance, fmt_value, match, verdict_key,
                                    verdict_not_reproduced)
from cape_hpc.errors import DataError, OptionError
from cape_hpc.io.provenance import sha256_file
from cape_hpc.schema import Provenance, Result

__all__ = ["AuditOptions", "AlternativeResult", "ClaimResult", "AuditResult", "audit_claim", "run_audit"]


@dataclass
class AlternativeResult:
    """One combination computed: its name (``stated method`` or the choices joined by ' + '), its
    value, whether it matches the paper (``undecided``: the missing inputs decide, or it could not
    be computed -- then ``reason`` says why), how far it is (``distance``, 0 = within tolerance), why
    it is degenerate ('' when it is not), why a match would not be informative
    (``cape_hpc.audit.informative``, '' when it would) and the caveats its computation noted."""

    name: str
    value: str
    matches: bool
    undecided: bool
    reason: str
    distance: float = math.inf
    degenerate: str = ""
    n_changes: int = 0
    uninformative: str = ""
    notes: list[str] = field(default_factory=list)
    number: float | None = None   # the value as one number (None for lists, pairs, yes/no)


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
    alternative: str          # the combination that reproduces it, '' if none
    reason: str               # why unavailable / degenerate / error text, '' if none
    alternatives_tried: list[AlternativeResult]
    quote: str = ""           # the paper's sentence
    decided_by: str = ""      # the combination that decided the verdict ('' when none was computed)
    closest: str = ""         # the computed combination closest to the paper's value
    closest_value: str = ""
    within_tolerance: list[str] = field(default_factory=list)  # every combination that matches
    n_tried: int = 0          # combinations computed (a value, not unavailable)
    n_combinations: int = 0   # the size of the full product of the axes
    needs: str = ""           # 'internals' for the claims issue 12 evaluates
    uncertain_rows: list[str] = field(default_factory=list)    # rows the deciding combination names, uncertain
    n_matches: int = 0        # combinations within tolerance (degenerate ones included)
    n_degenerate: int = 0     # of which degenerate
    spec_curve: str = ""      # the specification curve in one line (``cape_hpc.audit.speccurve``)
    coverage: float = math.nan  # look-elsewhere coverage
    grade: str = ""           # 'robust' | 'fragile' | '' (nothing matched)
    mc_tolerance: str = ""    # a Monte Carlo target: its spread over seeds and the tolerance used
    caveats: list[str] = field(default_factory=list)  # notes of the deciding combination


@dataclass
class AuditResult(Result):
    """The reproduction audit: one row per claim, the count of each verdict."""

    claims: list[ClaimResult]
    counts: dict[str, int]
    registry: str
    provenance: Provenance
    budget: int = 64

    def by_id(self) -> dict[str, ClaimResult]:
        return {c.id: c for c in self.claims}


def _evaluate(ctx, fn, args):
    try:
        return evaluate(ctx, fn, args), ""
    except Unavailable:
        raise
    except (DataError, OptionError) as exc:
        return None, f"error: {exc}"


def _named_rows(fn: str, args: dict, scores: pd.DataFrame) -> set[str]:
    """The models a computation (``fn``, ``args``) names (families expand to their models; none: all rows)."""
    names: set[str] = set()
    fams: set[str] = set()
    any_named = False

    def walk(v, key=""):
        nonlocal any_named
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, k)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, key)
        elif isinstance(v, str):
            if key in ("families", "family", "train", "holdout", "calibration"):
                fams.add(v)
                any_named = True
            elif key in ("model", "models", "a", "b"):
                names.add(v)
                any_named = True

    walk(args)
    if fn == "loss":
        return {f"pythia_loss.csv/{m}" for m in scores.loc[scores["family"] == "Pythia", "model"]}
    if fn in ("frontier", "wilson", "internals", "external", "not_stated"):
        return set()
    if not any_named or (args.get("family") == "all"):
        return set(scores["model"])
    return names | set(scores.loc[scores["family"].isin(fams), "model"])


def _number(v) -> float | None:
    if isinstance(v, (bool, np.bool_)) or isinstance(v, (list, tuple, Partial)) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _run_one(ctx: AuditContext, claim: Claim, combo, targets) -> AlternativeResult:
    """One combination computed, matched and checked (Unavailable propagates)."""
    ctx.facts = []
    v, err = _evaluate(ctx, combo.fn, combo.args)
    m = match(targets, v) if not err else False
    d = distance(targets, v) if not err else math.inf
    deg = "; ".join(degeneracy_reasons(ctx.facts, claim.checks)) if not err else ""
    vac = "; ".join(informative_reasons(ctx.facts)) if not err else ""
    notes = list(dict.fromkeys(x for k, x in ctx.facts if k == "note"))
    text = fmt_value(v) + (" (extrapolated)" if any("extrapolated" in x for x in notes) else "")
    return AlternativeResult(combo.name, text if not err else "-", m is True, m is None and not err, err, d, deg,
                             combo.n_changes, vac, notes, None if err else _number(v))


def _verdict(tried, stated_err, stated_unavail):
    """(verdict, reproducing combination, deciding combination, reason) of the combinations computed."""
    computed = [t for t in tried if t.value != "-" or t.matches]
    matches = [t for t in tried if t.matches]
    clean = [t for t in matches if not t.degenerate]
    stated = tried[0] if tried and tried[0].name == STATED else None
    ranked = sorted([t for t in tried if math.isfinite(t.distance)], key=lambda t: (t.distance, t.n_changes))
    closest = ranked[0].name if ranked else ""
    if stated is not None and stated.matches and not stated.degenerate:
        best = stated
        verdict, found = VERDICT_OK, ""
    elif clean:
        best = min(clean, key=lambda t: (t.n_changes, t.distance))
        verdict, found = f"{VERDICT_ALT} {best.name}", best.name
    else:
        best = None
    if best is not None:
        if best.uninformative:
            return f"{VERDICT_UNINFORMATIVE}: {best.uninformative}", "", best.name, stated_err
        return verdict, found, best.name, stated_err
    if matches:
        best = min(matches, key=lambda t: (t.n_changes, t.distance))
        return VERDICT_DEGENERATE, "", best.name, f"{best.name} matches only on a degenerate fit: {best.degenerate}"
    if any(t.undecided and t.value != "-" for t in tried):
        t = next(t for t in tried if t.undecided and t.value != "-")
        return VERDICT_DATA, "", t.name, stated_err or (f"computed range {t.value} contains the paper's value; "
                                                         f"the missing inputs decide")
    if stated_unavail is not None:
        return (UNAVAILABLE_VERDICT[stated_unavail.kind], "", closest, stated_unavail.reason
                + (f"; {len(computed)} other combination(s) computed, none matches" if computed else ""))
    return verdict_not_reproduced(len(computed)), "", closest, stated_err


#: a Monte Carlo tolerance never exceeds this share of the printed value (a spread that large is reported)
MC_CAP = 0.25


def seed_spread(xs: np.ndarray) -> float:
    """Sample standard deviation (ddof 1) of finite values ``xs`` [n >= 2], computed on ``xs / max|xs|``
    so that values near the float64 range (an extrapolated N_c of 1e218 under one seed) do not
    overflow in the squares; inf only when the spread itself exceeds the float64 range."""
    scale = float(np.max(np.abs(xs)))
    if scale == 0.0:
        return 0.0
    return float(np.std(xs / scale, ddof=1)) * scale     # a Python float product: inf, no warning


def _mc_targets(ctx: AuditContext, claim: Claim, targets, seeds: int):
    """(targets with Monte Carlo tolerances, note): when the stated value changes with the seed,
    each number's tolerance becomes at least 2 standard deviations over ``seeds`` seeds (at most
    :data:`MC_CAP` of the value)."""
    if seeds < 2 or not any(t.kind == "num" for t in targets):
        return targets, ""
    base = ctx.seed
    vals = []
    try:
        for k in range(seeds):
            ctx.seed = base + k
            ctx.facts = []
            v = evaluate(ctx, claim.fn, claim.args)
            vals.append(v if len(targets) > 1 else [v])
            if k == 1 and fmt_value(vals[0]) == fmt_value(vals[1]):
                return targets, ""    # the same value under another seed: not a Monte Carlo target
    except (Unavailable, DataError, OptionError):
        return targets, ""
    finally:
        ctx.seed = base
    out, notes = [], []
    for j, t in enumerate(targets):
        xs = np.array([_number(v[j]) if j < len(v) and _number(v[j]) is not None else np.nan for v in vals], float)
        if t.kind != "num" or not np.all(np.isfinite(xs)) or np.ptp(xs) == 0:
            out.append(t)
            continue
        sd = seed_spread(xs)
        cap = max(t.tol, MC_CAP * abs(t.value))
        tol = min(max(t.tol, 2 * sd), cap)
        out.append(Target(t.kind, t.value, tol, t.op))
        notes.append(f"{t.text()}: {seeds} seeds give {xs.min():.4g}..{xs.max():.4g} (sd {sd:.3g}); "
                     f"tolerance {tol:.3g}" + (" (capped: the Monte Carlo spread exceeds "
                                               f"{100 * MC_CAP:.0f}% of the value)" if 2 * sd > cap else ""))
    return out, "; ".join(notes)


def audit_claim(ctx: AuditContext, claim: Claim, budget: int = 64, uncertain: set[str] | None = None,
                mc_seeds: int = 5) -> ClaimResult:
    """The verdict of one claim (see the module doc)."""
    combos, _ = combinations(claim.fn, claim.args, claim.axes, budget)
    ctx.checks = dict(claim.checks)
    targets, mc_note = _mc_targets(ctx, claim, claim.targets(), mc_seeds)
    tried: list[AlternativeResult] = []
    stated_value, stated_err, stated_unavail = "-", "", None
    for combo in combos:
        try:
            t = _run_one(ctx, claim, combo, targets)
        except Unavailable as u:
            if not combo.choices:
                stated_unavail = u
            tried.append(AlternativeResult(combo.name, "-", False, True, u.reason, math.inf, "", combo.n_changes))
            continue
        if not combo.choices:
            stated_value, stated_err = t.value, t.reason
        tried.append(t)
    ctx.facts = []
    verdict, found, decided, reason = _verdict(tried, stated_err, stated_unavail)
    by_name = {c.name: c for c in combos}
    deciding = by_name.get(decided, combos[0] if combos else None)
    rows = _named_rows(deciding.fn, deciding.args, ctx.scores) if deciding else set()
    single = targets[0] if len(targets) == 1 and targets[0].kind == "num" else None
    curve = spec_curve(tried, single)
    ranked = sorted([t for t in tried if math.isfinite(t.distance)], key=lambda t: (t.distance, t.n_changes))
    closest = ranked[0] if ranked else None
    caveats = next((t.notes for t in tried if t.name == decided), [])
    return ClaimResult(claim.id, claim.section, claim.gist, claim.paper_text, claim.method, stated_value, verdict,
                       found, reason, tried, claim.quote, decided, closest.name if closest else "",
                       closest.value if closest else "", [t.name for t in tried if t.matches], curve.n_computed,
                       n_product(claim.axes), claim.needs, sorted(rows & (uncertain or set())), curve.n_matches,
                       curve.n_degenerate, curve.text(), curve.coverage, curve.grade, mc_note,
                       [c for c in caveats if "extrapolated" not in c])


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
    from cape_hpc.audit.sources import uncertain_models

    uncertain = uncertain_models(scores)
    outcomes = [audit_claim(ctx, c, opts.budget, uncertain, opts.mc_seeds) for c in claims]
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
    return AuditResult(outcomes, counts, str(reg), prov, opts.budget)
