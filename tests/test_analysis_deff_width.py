"""d_eff against numpy eigvalsh and scipy.stats.bootstrap; width normalisation and its control."""
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cape_hpc.analysis.deff import DeffOptions, DeffResult, effective_dimension
from cape_hpc.analysis.options import WidthOptions
from cape_hpc.analysis.phases import phases
from cape_hpc.analysis.width import width_normalisation
from cape_hpc.errors import OptionError
from cape_hpc.io.scores import SCORE_COLUMNS, load_scores

sys.path.insert(0, str(Path(__file__).parent))
from roundtrip import assert_roundtrip  # noqa: E402


def pr_eig(X, corr=False):
    C = np.corrcoef(X, rowvar=False) if corr else np.cov(X, rowvar=False)
    lam = np.linalg.eigvalsh(C)
    return lam.sum() ** 2 / (lam ** 2).sum()


def deff(df, **kw):
    """effective_dimension with DeffOptions from keywords."""
    return effective_dimension(df, DeffOptions(**kw))


@pytest.mark.parametrize("matrix", ["covariance", "correlation"])
def test_deff_per_phase_against_eigvalsh(matrix):
    df = load_scores()
    r = deff(df, matrix=matrix, bootstrap=False)
    ph = phases(df).phase_of()
    full = df.dropna(subset=list(SCORE_COLUMNS))
    assert sorted(r.dropped) == sorted(set(df.model) - set(full.model))
    for g in r.groups:
        rows = full if g.group == "all" else full[full.model.map(ph) == g.group]
        X = rows[list(SCORE_COLUMNS)].to_numpy(float)
        assert g.n_models == len(rows)
        assert g.d_eff == pytest.approx(pr_eig(X, matrix == "correlation"), rel=1e-10)
        C = np.corrcoef(X, rowvar=False) if matrix == "correlation" else np.cov(X, rowvar=False)
        np.testing.assert_allclose(g.eigenvalues, np.sort(np.linalg.eigvalsh(C))[::-1], rtol=1e-9, atol=1e-12)


def test_deff_scale_invariant_and_kernel_matches_eigvalsh():
    from cape_hpc.stats import ParticipationRatioStatistic

    df = load_scores().dropna(subset=list(SCORE_COLUMNS))
    X = df[list(SCORE_COLUMNS)].to_numpy(float)
    assert pr_eig(X / 100) == pytest.approx(pr_eig(X), rel=1e-12)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(X), size=(50, len(X)))
    for corr in (False, True):
        st = ParticipationRatioStatistic(X, corr)      # the statistic effective_dimension bootstraps
        np.testing.assert_allclose(st.batch(idx), [pr_eig(X[i], corr) for i in idx], rtol=1e-9)
        assert st.full() == pytest.approx(pr_eig(X, corr), rel=1e-12)
    units = deff(df, units="fraction", bootstrap=False, groups=("all",)).groups[0].d_eff
    assert units == deff(df, bootstrap=False, groups=("all",)).groups[0].d_eff


def test_deff_unstratified_percentile_matches_scipy():
    df = load_scores()
    r = deff(df, groups=("all",), stratify=False, n_resamples=4000, seed=4, levels=(0.9,))
    g = r.groups[0]
    X = df.dropna(subset=list(SCORE_COLUMNS))[list(SCORE_COLUMNS)].to_numpy(float)
    ref = stats.bootstrap((np.arange(len(X)),), lambda i: pr_eig(X[i.astype(int)]), vectorized=False,
                          method="percentile",
                          n_resamples=4000, confidence_level=0.9, random_state=np.random.default_rng(9))
    lo, hi = g.bootstrap.interval(0.9).low, g.bootstrap.interval(0.9).high
    w = hi - lo
    assert abs(lo - ref.confidence_interval.low) < 0.1 * w
    assert abs(hi - ref.confidence_interval.high) < 0.1 * w
    assert g.bootstrap.n_valid == 4000 and not g.bootstrap.stratified


def test_deff_stratified_bootstrap_keeps_single_model_families_fixed():
    # a phase whose families each contribute one model resamples to itself: a zero-width interval
    df = load_scores()
    r = deff(df, n_resamples=300, seed=1)
    tr = r.by_group()["transition"]
    assert tr.n_models == tr.n_families
    ci = tr.bootstrap.interval(0.95)
    assert (ci.low, ci.high) == pytest.approx((tr.d_eff, tr.d_eff))
    assert tr.bootstrap.degenerate and "zero-width" in tr.bootstrap.note   # summarize() flags it
    tax = r.by_group()["tax"]
    ci = tax.bootstrap.interval(0.95)
    assert ci.low < tax.d_eff < ci.high and tax.bootstrap.stratified and not tax.bootstrap.degenerate
    assert r.provenance.options["stratify"] is True and r.provenance.n_resamples == 300
    with pytest.raises(OptionError, match="--matrix"):
        deff(df, matrix="gram")
    with pytest.raises(OptionError, match="--groups"):
        deff(df, groups=("tax", "other"))
    with pytest.raises(OptionError, match="--columns"):
        deff(df, columns=("HS", "NOPE"))


def test_deff_runs_the_fused_path_and_round_trips(tmp_path):
    """effective_dimension's bootstrap is the fused participation_ratio_boot; the same resamples on a
    materialised index matrix give the same summary bit for bit."""
    import cape_kernels

    from cape_hpc.stats import BootstrapOptions, ParticipationRatioStatistic, bootstrap, summarize

    df = load_scores()
    opts = DeffOptions(groups=("all",), matrix="correlation", n_resamples=700, seed=3)
    r = effective_dimension(df, opts)
    assert isinstance(r, DeffResult) and r.provenance.options == opts.to_dict()
    g = r.groups[0]
    full = df.dropna(subset=list(SCORE_COLUMNS))
    X = full[list(SCORE_COLUMNS)].to_numpy(float)
    strata = pd.factorize(full["family"])[0]
    samples = cape_kernels.participation_ratio_batch(X, cape_kernels.resample_indices(strata, 700, 3), corr=True)
    assert g.bootstrap.median == np.median(samples) and g.bootstrap.n_valid == 700
    lo, hi = np.quantile(samples, [0.025, 0.975])
    assert (g.bootstrap.interval(0.95).low, g.bootstrap.interval(0.95).high) == (lo, hi)
    assert g.bootstrap == summarize(bootstrap(ParticipationRatioStatistic(X, True),
                                              BootstrapOptions(n_resamples=700, seed=3), strata=strata, chunk=50))
    assert_roundtrip(r, tmp_path, "/analysis/deff")
    small = effective_dimension(df, DeffOptions(families=("OLMo", "Pythia"), bootstrap=False))
    assert small.provenance.seed is None and any(x.reason for x in small.groups)
    assert_roundtrip(small, tmp_path, "/analysis/deff_small")


def width_table(fam, d_model, hs, tqa):
    n = len(hs)
    return pd.DataFrame(dict(model=[f"{fam}-{i}" for i in range(n)], family=fam, params=np.arange(1, n + 1) * 1e9,
                             d_model=d_model, HS=hs, TQA=tqa))


def test_width_r_before_after_against_scipy(tmp_path):
    df = load_scores()
    r = width_normalisation(df, WidthOptions(n_permutations=500))
    for f in r.families:
        if f.reason:
            continue
        sub = df[df.family == f.family].dropna(subset=["d_model"])
        s = sub.d_model / 512.0
        assert f.r_before == pytest.approx(stats.pearsonr(sub.HS, sub.TQA).statistic, abs=1e-12)
        assert f.r_after == pytest.approx(stats.pearsonr(sub.HS / s, sub.TQA / s).statistic, abs=1e-12)
    py = next(f for f in r.families if f.family == "Pythia")
    assert py.r_before == pytest.approx(-0.989, abs=1e-3) and py.r_after == pytest.approx(0.963, abs=1e-3)
    assert r.provenance.options == WidthOptions(n_permutations=500).to_dict() and r.provenance.seed == 0
    assert_roundtrip(r, tmp_path)


def test_width_control_exact_enumeration():
    d = width_table("A", [512, 1024, 2048, 4096], [30.0, 40.0, 45.0, 60.0], [45.0, 42.0, 41.0, 38.0])
    r = width_normalisation(d, WidthOptions(n_permutations=100)).families[0]
    assert r.exact and r.n_null == 24
    ref = []
    for perm in itertools.permutations(range(4)):
        f = np.array([512, 1024, 2048, 4096], float)[list(perm)] / 512
        ref.append(stats.pearsonr(d.HS / f, d.TQA / f).statistic)
    np.testing.assert_allclose(np.sort(r.r_null), np.sort(ref), rtol=1e-10)
    assert r.p_null == pytest.approx(np.mean(np.array(ref) >= r.r_after - 1e-12))
    assert r.null_mean == pytest.approx(np.mean(ref))


def test_width_control_random_draws_are_permutations():
    df = load_scores()
    r = width_normalisation(df, WidthOptions(families=("Pythia",), n_permutations=300, seed=2)).families[0]
    assert not r.exact and r.n_null == 300
    sub = df[df.family == "Pythia"]
    w = sub.d_model.to_numpy(float) / 512
    f = w[np.array(list(itertools.permutations(range(8))))]          # every ordering of the 8 widths
    x, y = sub.HS.to_numpy() / f, sub.TQA.to_numpy() / f
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    allr = (xc * yc).sum(1) / np.sqrt((xc ** 2).sum(1) * (yc ** 2).sum(1))
    allr = np.unique(np.round(allr, 12))
    pos = np.searchsorted(allr, np.round(r.r_null, 12))
    assert np.all(allr[np.clip(pos, 0, len(allr) - 1)] == np.round(r.r_null, 12))
    assert r.p_null == pytest.approx((1 + np.sum(r.r_null >= r.r_after - 1e-12)) / 301)
    again = width_normalisation(df, WidthOptions(families=("Pythia",), n_permutations=300, seed=2)).families[0]
    np.testing.assert_array_equal(again.r_null, r.r_null)


def test_width_constant_widths_change_nothing():
    d = width_table("C", [2048] * 5, [30.0, 35.0, 41.0, 44.0, 50.0], [40.0, 39.0, 41.0, 37.0, 36.0])
    f = width_normalisation(d, WidthOptions(n_permutations=50)).families[0]
    assert f.r_after == pytest.approx(f.r_before, abs=1e-12)
    np.testing.assert_allclose(f.r_null, f.r_before, atol=1e-12)
    with pytest.raises(OptionError, match="--d-ref"):
        WidthOptions(d_ref=0)
    small = width_normalisation(d.iloc[:2], WidthOptions(n_permutations=10)).families[0]
    assert math.isnan(small.r_after) and "< 3" in small.reason
