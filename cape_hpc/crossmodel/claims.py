"""The audit's internal claims (``needs: internals`` in data/claims.yaml) computed from a cross-model
table (docs/METHODS.md §2.15, §3.10).

``evaluate_internal_claim(table, models, quantity)`` returns the claim's value in the paper's units
together with the models the claim names, those found and those still missing.  A claim is computed
only from every model it names: with one missing its value is None (the audit then reports the
claim as needing internals and lists the missing models), so a claim is never reproduced from fewer
models than it names.  A named group ("40 models of Pythia, OPT, ...") needs that many measured
models of those families; "every model measured" takes the table as it is; models the paper does not
name ("(not named)") can never be found.  Quantities the internals do not measure (attention
patterns, steering rates, a wider output projection) raise :class:`NotComputable`.

Quantities (per named model, in the claim's model order, flattened):
``layer_coupling`` (mean over layers), ``layer_coupling_last``, ``layer_coupling_first_last``
(first and last layer), ``head_net``, ``head_median`` (the median of the pooled per-head couplings of
all named models), ``cooperative_heads_percent``, ``cooperative_heads_percent_and_last_layer``,
``coupling_drep`` (last-layer coupling and mean d_rep), ``bottleneck`` (hidden and logits coupling of
each model), ``projection_gain`` (mean over the models of logits - hidden), ``head_coupling_range``
([min, max] of the models' mean head coupling), ``drep_range`` ([min, max] of the models' mean
d_rep), ``competing_heads`` ((models with zero competing heads, models measured)),
``competing_heads_wilson`` (its Wilson interval in percent), ``coupling_fixed_point`` (the fixed
point of §2.10 on the named models' last-layer coupling against log10 N).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from cape_hpc.crossmodel.results import CrossModelResult, ModelRow

__all__ = ["evaluate_internal_claim", "InternalClaimValue", "NotComputable", "QUANTITIES_OF_CLAIMS", "resolve_models",
           "table_from_file"]


class NotComputable(Exception):
    """The quantity is not measured by the internals (attention patterns, steering, an intervention)."""


@dataclass
class InternalClaimValue:
    quantity: str
    named: list[str]                     # what the claim names (model names or a group description)
    found: list[str]                     # models of the table used
    missing: list[str]                   # what is still missing ('' list when complete)
    value: Any = None                    # None while something is missing
    note: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing


_GROUP = re.compile(r"^(?P<n>\d+)\s+(?:open-weight\s+)?models?(?:\s+of\s+(?P<fams>.+))?$", re.I)
_NOT_COMPUTABLE = {
    "attention": "attention-pattern cosines are non-negative by construction and are not extracted "
                 "(docs/METHODS.md §3.4)",
    "steering_rate": "steering rates come from `cape steer` results, not from internals",
    "layer_profile_weakening": "the paper does not name the six 30-72B models",
}


def resolve_models(table: CrossModelResult, named: list[str]) -> tuple[list[ModelRow], list[str]]:
    """(rows found in the claim's order, what is missing).  Names match case-insensitively."""
    by = {r.model.lower(): r for r in table.rows}
    found: list[ModelRow] = []
    missing: list[str] = []
    # YAML splits "[40 models of Pythia, OPT, ...]" into items: the families after a group belong to it
    merged: list[str] = []
    for item in (str(v).strip() for v in named):
        if merged and _GROUP.match(merged[-1]) and " of " in merged[-1] and item.lower() not in by \
                and not _GROUP.match(item):
            merged[-1] = f"{merged[-1]}, {item}"
        else:
            merged.append(item)
    for item in merged:
        item = str(item).strip()
        if "not named" in item.lower():
            missing.append(f"{item} (the paper does not name it)")
            continue
        if item.lower() in ("every model measured", "all models"):
            found += [r for r in table.rows if r not in found]
            if not table.rows:
                missing.append(item)
            continue
        m = _GROUP.match(item)
        if m and item.lower() not in by:
            want = int(m.group("n"))
            fams = [f.strip() for f in (m.group("fams") or "").split(",") if f.strip()]
            pool = [r for r in table.rows if (not fams or r.family in fams) and r not in found]
            found += pool[:want]
            if len(pool) < want:
                missing.append(f"{want - len(pool)} more of {item} ({len(pool)} found)")
            continue
        r = by.get(item.lower())
        if r is None:
            missing.append(item)
        else:
            found.append(r)
    return found, missing


def _fixed_point(rows: list[ModelRow]) -> float:
    from cape_hpc.analysis.fixedpoint import fixed_point_xy
    from cape_hpc.analysis.options import FixedPointOptions

    p = np.array([r.params for r in rows], dtype=float)
    if not np.isfinite(p).all():
        raise NotComputable("a named model has no parameter count")
    return float(fixed_point_xy(np.log10(p), [r.final_coupling for r in rows], FixedPointOptions(family="internal")).gamma_star)


def evaluate_internal_claim(table: CrossModelResult, models, quantity: str, *,
                            head_couplings: dict[str, np.ndarray] | None = None) -> InternalClaimValue:
    """The value of one internal claim from ``table`` (see the module doc).  ``head_couplings``:
    model -> its per-head couplings (for ``head_median``; from the InternalsResults)."""
    named = [str(m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    if quantity in _NOT_COMPUTABLE:
        raise NotComputable(_NOT_COMPUTABLE[quantity])
    rows, missing = resolve_models(table, named)
    out = InternalClaimValue(quantity, named, [r.model for r in rows], missing)
    if missing:
        return out
    q = quantity
    if q == "layer_coupling":
        out.value = [r.mean_coupling for r in rows]
    elif q == "layer_coupling_last":
        out.value = [r.final_coupling for r in rows]
    elif q == "layer_coupling_first_last":
        out.value = [v for r in rows for v in (r.first_coupling, r.final_coupling)]
    elif q == "head_net":
        out.value = [r.head_net for r in rows]
    elif q == "head_median":
        if head_couplings is None or any(r.model not in head_couplings for r in rows):
            raise NotComputable("needs the per-head couplings of the named models")
        pooled = np.concatenate([np.ravel(head_couplings[r.model]) for r in rows])
        out.value = float(np.median(pooled[np.isfinite(pooled)]))
    elif q == "cooperative_heads_percent":
        out.value = [100 * r.head_cooperative_share for r in rows]
    elif q == "cooperative_heads_percent_and_last_layer":
        out.value = [v for r in rows for v in (100 * r.head_cooperative_share, r.final_coupling)]
    elif q == "coupling_drep":
        out.value = [v for r in rows for v in (r.final_coupling, r.d_rep_mean)]
    elif q == "bottleneck":
        if any(not math.isfinite(r.bottleneck_hidden) for r in rows):
            raise NotComputable("the final tap was not extracted for every named model")
        out.value = [v for r in rows for v in (r.bottleneck_hidden, r.bottleneck_logits)]
    elif q == "projection_gain":
        g = [r.projection_gain for r in rows]
        if not all(math.isfinite(v) for v in g):
            raise NotComputable("the logits tap was not extracted for every named model")
        out.value = float(np.mean(g))
        out.note = "mean over the models of logits - hidden coupling"
    elif q == "head_coupling_range":
        v = [r.head_net for r in rows]
        out.value = [float(np.min(v)), float(np.max(v))]
    elif q == "drep_range":
        v = [r.d_rep_mean for r in rows if math.isfinite(r.d_rep_mean)]
        out.value = [float(np.min(v)), float(np.max(v))] if v else None
    elif q in ("competing_heads", "competing_heads_wilson"):
        measured = [r for r in rows if r.n_heads_total > 0]
        k, n = sum(r.head_competing_count == 0 for r in measured), len(measured)
        if n < len(rows):
            out.missing = [f"heads of {r.model} (not tapped)" for r in rows if r.n_heads_total == 0]
            return out
        if q == "competing_heads":
            out.value = (k, n)
        else:
            from cape_hpc.stats.intervals import wilson_interval

            ci = wilson_interval(k, n, 0.95)
            out.value = [100 * ci.low, 100 * ci.high]
            out.note = f"{k} of {n} models with zero competing heads"
    elif q == "coupling_fixed_point":
        out.value = _fixed_point(rows)
    else:
        raise NotComputable(f"unknown internal quantity {quantity!r}")
    if isinstance(out.value, list) and len(out.value) == 1:  # one number, as the paper prints it
        out.value = out.value[0]
    return out


QUANTITIES_OF_CLAIMS = ("layer_coupling", "layer_coupling_last", "layer_coupling_first_last", "head_net",
                        "head_median", "cooperative_heads_percent", "cooperative_heads_percent_and_last_layer",
                        "coupling_drep", "bottleneck", "projection_gain", "head_coupling_range", "drep_range",
                        "competing_heads", "competing_heads_wilson", "coupling_fixed_point", *_NOT_COMPUTABLE)


def table_from_file(path: str, scores=None, n_resamples: int = 1000, seed: int = 0
                    ) -> tuple[CrossModelResult, dict[str, np.ndarray]]:
    """The cross-model table of every ``/internals`` group of ``path`` and each model's per-head
    couplings: what the audit evaluates the internal claims on (``cape reproduce --internals``)."""
    from cape_hpc.crossmodel.families import cross_model_analysis
    from cape_hpc.crossmodel.options import CrossModelOptions
    from cape_hpc.crossmodel.table import read_inputs

    inputs = read_inputs([path], scores)
    heads = {mi.name: mi.result.head_coupling for mi in inputs}
    return cross_model_analysis(inputs, CrossModelOptions(n_resamples=n_resamples, seed=seed), scores), heads
