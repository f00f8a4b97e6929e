"""What a referee needs from the audit (issue 25): no degenerate or vacuous pass, the paper's real
choices reachable, multiplicity reported, Monte Carlo tolerances, and the bugs found by an
independent recomputation.  References: numpy / scipy and hand computations on the shipped table
or on synthetic tables whose answers are known by construction."""
import math

import numpy as np
import pytest

from cape_hpc.audit.computations import AuditContext, evaluate
from cape_hpc.audit.degeneracy import reasons
from cape_hpc.io.data import data_file
from cape_hpc.io.scores import load_scores


@pytest.fixture(scope="module")
def shipped():
    return load_scores(data_file("base_models.csv"))


# ------------------------------------------------------------------------------------------------
# item 1: an ODE without coupling, or compared with a baseline given less information, is no pass

ODE_TQA_ONLY = {"train": ["Pythia", "Llama-1"], "holdout": ["Llama-2"], "model": "sindy", "units": "percent",
                "include_start": True, "benchmarks": ["TQA"], "quantity": "poly_over_ode"}


def test_ode_without_coupling_term_is_degenerate(shipped):
    """The combination that 'reproduced' ode-twice-baseline: a one-score SINDy state (no term can
    link two scores), so the match is degenerate whatever its error."""
    ctx = AuditContext(shipped, n_resamples=10)
    evaluate(ctx, "dynamics", ODE_TQA_ONLY)
    why = reasons(ctx.facts)
    assert any("no coupling term" in r for r in why), why


def test_ode_ratio_uses_anchored_baselines(shipped):
    """The ODE starts from Llama-2-7B's true score, so its baselines are anchored there too: the
    ratio is best anchored baseline / ODE error (issue 25: 3.14% against 6.25%, ratio ~0.5)."""
    ctx = AuditContext(shipped, n_resamples=10)
    ratio = evaluate(ctx, "dynamics", ODE_TQA_ONLY)
    ode = evaluate(ctx, "dynamics", {**ODE_TQA_ONLY, "quantity": "holdout"})
    anchored = evaluate(ctx, "dynamics", {**ODE_TQA_ONLY, "quantity": "best_poly", "anchor": True})
    assert ode == pytest.approx(6.25, abs=0.01)
    assert anchored == pytest.approx(3.14, abs=0.01)
    assert ratio == pytest.approx(anchored / ode, rel=1e-12)
    assert ratio < 1.8
