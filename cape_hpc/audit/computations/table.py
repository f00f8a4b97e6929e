"""Claims read off the scores table itself: counts of models and families, a score, a score
difference, the TruthfulQA variant, layer counts."""
from __future__ import annotations

import numpy as np

from cape_hpc.audit.computations.context import AuditContext, Unavailable, need_models


def claim_count_models(ctx: AuditContext, families=None, complete_columns=None):
    """Number of models (rows) of the named families (all when None), as a list when several."""
    df = ctx.scores
    if complete_columns:
        df = df.dropna(subset=list(complete_columns))
    if families is None:
        return int(len(df))
    if isinstance(families, str):
        return int((df["family"] == families).sum())
    return [int((df["family"] == f).sum()) for f in families]


def claim_count_families(ctx: AuditContext):
    return int(ctx.scores["family"].nunique())


def claim_score(ctx: AuditContext, model, column="TQA"):
    need_models(ctx.scores, [model])
    return float(ctx.scores.loc[ctx.scores["model"] == model, column].iloc[0])


def claim_score_delta(ctx: AuditContext, a, b, column="HS"):
    return claim_score(ctx, b, column) - claim_score(ctx, a, column)


def claim_tqa_variant(ctx: AuditContext, variant="mc1"):
    """True when the scores table's TruthfulQA variant is ``variant``."""
    if "tqa_variant" not in ctx.scores.columns:
        raise Unavailable("data", "the scores table has no tqa_variant column")
    return bool((ctx.scores["tqa_variant"] == variant).all())


def claim_n_layers(ctx: AuditContext, models=()):
    """The n_layers of each named model (a list); Unavailable when the table leaves any blank."""
    need_models(ctx.scores, models)
    by = ctx.scores.set_index("model")["n_layers"]
    blank = [m for m in models if not np.isfinite(float(by[m]))]
    if blank:
        raise Unavailable("data", f"n_layers is blank in the scores table for {', '.join(blank)}")
    return [int(by[m]) for m in models]
