"""N_c estimators and their bootstrap: hand sequences, numpy.polyfit, an independent pure-Python
re-implementation of the resampled estimators, and scipy.stats.bootstrap (unstratified percentile)."""
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cape_hpc.analysis.coupling import local_coupling
from cape_hpc.analysis.nc import NcOptions, NcResult, _scope_arrays, _statistic, estimate_nc
from cape_hpc.analysis.options import CouplingOptions
from cape_hpc.errors import OptionError
from cape_hpc.io.scores import load_scores
from cape_hpc.schema import BootstrapSummary
from cape_hpc.stats import BootstrapOptions, bootstrap, summarize
from roundtrip import assert_roundtrip


def nc(df, estimator, **kw):
    """estimate_nc with NcOptions built from keywords (families as a tuple)."""
    if "families" in kw:
        kw["families"] = tuple(kw["families"])
    return estimate_nc(df, NcOptions(estimator=estimator, **kw))


def coupling(df, **kw):
    if "families" in kw:
        kw["families"] = tuple(kw["families"])
    return local_coupling(df, CouplingOptions(**kw))


def fam_table(name, ns, hs, tqa):
    return pd.DataFrame(dict(model=[f"{name}-{i}" for i in range(len(ns))], family=name, params=ns, HS=hs, TQA=tqa,
                             ARC=np.nan, WG=np.nan, MMLU=np.nan, d_model=np.nan))


# gammas: (39-40)/(32-30) = -0.5, (38.5-39)/(35-32) = -0.1667, (38.5-38.5)/(38-35) = 0, (40-38.5)/(42-38) = 0.375
U = fam_table("U", [1e8, 3e8, 1e9, 3e9, 1e10], [30, 32, 35, 38, 42], [40, 39, 38.5, 38.5, 40])
# all positive
P = fam_table("P", [1e8, 1e9, 1e10], [30, 40, 50], [30, 35, 45])


def test_sign_change_by_hand():
    r = nc(pd.concat([U, P]), "sign-change", bootstrap=False)
    u = r.by_scope()["U"]
    # first positive gamma after a negative one (the zero is skipped): the interval ending at U-4, N = 1e10
    assert u.log10_nc == pytest.approx(10.0) and u.nc == pytest.approx(1e10)
    assert u.n_intervals == 4
    p = r.by_scope()["P"]
    assert math.isnan(p.log10_nc) and "positive at every interval" in p.reason


def test_gamma_fit_against_polyfit():
    df = load_scores()
    r = nc(df, "gamma-fit", families=["OPT", "BLOOM"], bootstrap=False)
    for fam in ("OPT", "BLOOM"):
        ivs = [iv for iv in coupling(df, families=[fam]).intervals if not iv.reason]
        s, c = np.polyfit([iv.x_mid for iv in ivs], [iv.gamma for iv in ivs], 1)
        e = r.by_scope()[fam]
        assert e.g0 == pytest.approx(s, rel=1e-10)
        assert e.log10_nc == pytest.approx(-c / s, rel=1e-10)
    pooled = nc(df, "gamma-fit", families=["OPT", "BLOOM"], pooled=True, bootstrap=False).estimates[0]
    ivs = [iv for iv in coupling(df, families=["OPT", "BLOOM"]).intervals if not iv.reason]
    s, c = np.polyfit([iv.x_mid for iv in ivs], [iv.gamma for iv in ivs], 1)
    assert pooled.log10_nc == pytest.approx(-c / s, rel=1e-10)
    # a falling gamma (Llama-1) is invalid by the g0 > 0 rule
    llama = nc(df, "gamma-fit", families=["Llama-1"], bootstrap=False).estimates[0]
    assert math.isnan(llama.log10_nc) and "g0" in llama.reason


def test_quadratic_against_polyfit_and_window():
    x = np.log10([1e8, 3e8, 1e9, 3e9, 1e10, 3e10])
    y = 2.0 * (x - 9.4) ** 2 + 35 + np.array([0.1, -0.2, 0.05, 0.1, -0.1, 0.05])
    df = fam_table("Q", 10 ** x, np.linspace(30, 70, 6), y)
    e = nc(df, "quadratic", bootstrap=False).estimates[0]
    a, b, c = np.polyfit(x, y, 2)
    assert (e.a, e.b, e.c) == pytest.approx((a, b, c))
    assert e.log10_nc == pytest.approx(-b / (2 * a)) and abs(e.log10_nc - 9.4) < 0.05
    assert e.window == pytest.approx([x.min(), x.max()])
    out = nc(df, "quadratic", bootstrap=False, window=(9.6, 10.0)).estimates[0]
    assert math.isnan(out.log10_nc) and "outside window" in out.reason
    neg = nc(fam_table("Q", 10 ** x, np.linspace(30, 70, 6), -y), "quadratic", bootstrap=False).estimates[0]
    assert math.isnan(neg.log10_nc) and "a =" in neg.reason


def _python_estimator(df, estimator, idx, fams, min_delta=0.5, window=None):
    """Independent reference: rebuild the resampled table (duplicates renamed), recompute with pandas."""
    g, *_ = _scope_arrays(df, fams, "HS", "TQA", 1.0)
    rows = g.iloc[np.sort(idx)].copy()
    rows["model"] = [f"{m}#{i}" for i, m in enumerate(rows["model"])]
    if estimator == "quadratic":
        x = np.log10(rows["params"].to_numpy())
        if len(np.unique(x)) < 3:
            return math.nan
        a, b, _ = np.polyfit(x, rows["TQA"].to_numpy(), 2)
        v = -b / (2 * a)
        lo, hi = window
        return v if a > 0 and lo <= v <= hi else math.nan
    ivs = [iv for iv in coupling(rows, min_delta=min_delta).intervals if not iv.reason]
    if estimator == "gamma-fit":
        xs = np.array([iv.x_mid for iv in ivs])
        if len(xs) < 2 or np.ptp(xs) == 0:
            return math.nan
        s, c = np.polyfit(xs, [iv.gamma for iv in ivs], 1)
        return -c / s if s > 0 else math.nan
    ivs.sort(key=lambda iv: iv.x_mid)  # stable: family order within equal x
    prev = 0
    for iv in ivs:
        if iv.gamma == 0:
            continue
        sgn = 1 if iv.gamma > 0 else -1
        if prev == -1 and sgn == 1:
            return math.log10(iv.n)
        prev = sgn
    return math.nan


@pytest.mark.parametrize("estimator", ["sign-change", "gamma-fit", "quadratic"])
def test_batch_matches_python_reference(estimator):
    import cape_kernels

    df = load_scores()
    fams = ["OPT", "Pythia", "BLOOM", "Cerebras-GPT"]
    g, fam, logn, b1, b2 = _scope_arrays(df, fams, "HS", "TQA", 1.0)
    # the statistic estimate_nc bootstraps (pooled, stratified), on the fused stream of resamples
    stat = _statistic(NcOptions(estimator=estimator), fam, logn, b1, b2, 0.5, logn.min(), logn.max())
    idx = cape_kernels.resample_indices(fam, 60, seed=11)
    got = stat.stream(fam, 60, 11, 0)
    want = np.array([_python_estimator(df, estimator, row, fams, window=(logn.min(), logn.max())) for row in idx])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert np.isfinite(got).sum() >= 10  # the comparison covers valid fits
    assert got.tobytes() == stat.batch(idx).tobytes()   # fused == batched, bit for bit


def test_bootstrap_reproducible_and_counts():
    df = load_scores()
    kw = dict(families=["OPT", "BLOOM", "Pythia"], pooled=True, n_resamples=500)
    a = nc(df, "quadratic", seed=7, **kw).estimates[0]
    b = nc(df, "quadratic", seed=7, **kw).estimates[0]
    c = nc(df, "quadratic", seed=8, **kw).estimates[0]
    assert a.bootstrap == b.bootstrap
    assert a.bootstrap.intervals != c.bootstrap.intervals
    assert a.bootstrap.n_resamples == 500 and 0 < a.bootstrap.n_valid <= 500
    assert a.bootstrap.seed == 7 and a.bootstrap.stratified
    lo, hi = a.bootstrap.interval(0.95).low, a.bootstrap.interval(0.95).high
    lo68, hi68 = a.bootstrap.interval(0.68).low, a.bootstrap.interval(0.68).high
    assert lo <= lo68 <= a.bootstrap.median <= hi68 <= hi


def test_per_family_equals_single_family_pooled_stratified():
    # one stratum is the unstratified case: a per-family bootstrap == pooled over that family alone
    df = load_scores()
    a = nc(df, "gamma-fit", families=["OPT"], n_resamples=300, seed=3).estimates[0]
    b = nc(df, "gamma-fit", families=["OPT"], pooled=True, n_resamples=300, seed=3).estimates[0]
    assert a.bootstrap.intervals == b.bootstrap.intervals and a.log10_nc == b.log10_nc


def test_unstratified_percentile_matches_scipy_bootstrap():
    df = load_scores()
    fams = list(dict.fromkeys(df["family"]))
    r = nc(df, "gamma-fit", pooled=True, stratify=False, n_resamples=4000, seed=1,
                    levels=(0.9,)).estimates[0]
    assert r.bootstrap.n_valid == 4000  # every resample valid, so scipy's semantics match
    g, fam, logn, b1, b2 = _scope_arrays(df, fams, "HS", "TQA", 1.0)
    stat = _statistic(NcOptions(estimator="gamma-fit"), fam, logn, b1, b2, 0.5, logn.min(), logn.max())
    ref = stats.bootstrap((np.arange(len(logn)),), lambda i: stat.batch(i.astype(np.int64)[None])[0],
                          vectorized=False,
                          method="percentile", n_resamples=4000, confidence_level=0.9,
                          random_state=np.random.default_rng(2))
    lo, hi = r.bootstrap.interval(0.9).low, r.bootstrap.interval(0.9).high
    width = hi - lo
    assert abs(lo - ref.confidence_interval.low) < 0.1 * width
    assert abs(hi - ref.confidence_interval.high) < 0.1 * width


def test_bca_and_bad_options():
    df = load_scores()
    r = nc(df, "quadratic", pooled=True, ci_method="bca", n_resamples=400, seed=0).estimates[0]
    lo, hi = r.bootstrap.interval(0.95).low, r.bootstrap.interval(0.95).high
    assert lo < r.log10_nc < hi and r.bootstrap.method == "bca"
    for kw, opt in [(dict(estimator="median"), "--estimator"), (dict(ci_method="normal"), "--ci-method"),
                    (dict(n_resamples=0), "--n-resamples"), (dict(window=(10, 9)), "--window"),
                    (dict(levels=(1.5,)), "--levels"), (dict(attach="middle"), "--attach"),
                    (dict(pair=("HS", "HS")), "--pair")]:
        est = kw.pop("estimator", "quadratic")
        with pytest.raises(OptionError, match=opt):
            nc(df, est, **kw)


def test_small_family_has_reason_and_no_bootstrap():
    df = load_scores()
    r = nc(df, "quadratic", families=["OLMo"], n_resamples=50)
    e = r.estimates[0]
    assert e.n_models == 2 and "< 3" in e.reason and e.bootstrap.n_resamples == 0
    assert r.provenance.n_resamples == 50 and r.provenance.seed == 0


def test_same_result_at_1_and_2_threads():
    import numba

    df = load_scores()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    old = numba.get_num_threads()
    try:
        out = {}
        for t in (1, 2):
            numba.set_num_threads(t)
            out[t] = [nc(df, est, pooled=True, n_resamples=700, seed=9).estimates[0].bootstrap
                      for est in ("sign-change", "gamma-fit", "quadratic")]
        assert out[1] == out[2]
    finally:
        numba.set_num_threads(old)


def test_gamma_fit_extrapolation_flag_and_explicit_window():
    df = load_scores()
    free = nc(df, "gamma-fit", families=["Pythia", "OPT"], bootstrap=False).by_scope()
    assert free["Pythia"].extrapolated and free["Pythia"].log10_nc > 12   # a shallow line crosses zero far out
    assert not free["OPT"].extrapolated
    win = nc(df, "gamma-fit", families=["Pythia", "OPT"], bootstrap=False, window=(7.5, 11.5)).by_scope()
    assert math.isnan(win["Pythia"].log10_nc) and "outside window" in win["Pythia"].reason
    assert win["OPT"].log10_nc == free["OPT"].log10_nc


def test_sign_change_attach_options_by_hand():
    """The crossing interval of family U runs from U-3 (N = 3e9) to U-4 (N = 1e10)."""
    df = pd.concat([U, P])
    got = {a: nc(df, "sign-change", bootstrap=False, attach=a).by_scope()["U"].log10_nc
           for a in ("larger", "smaller", "midpoint")}
    assert got["larger"] == pytest.approx(10.0)
    assert got["smaller"] == pytest.approx(math.log10(3e9))
    assert got["midpoint"] == pytest.approx((math.log10(3e9) + 10.0) / 2)
    r = nc(df, "sign-change", n_resamples=200, seed=1, attach="smaller")
    assert r.provenance.options["attach"] == "smaller"
    with pytest.raises(OptionError, match="--attach"):
        nc(df, "sign-change", bootstrap=False, attach="middle")


@pytest.mark.parametrize("estimator", ["sign-change", "gamma-fit", "quadratic"])
def test_estimate_nc_runs_the_fused_path_equal_to_the_batched_one(estimator):
    """What `cape nc` reports is the summary of the fused stream; the same resamples evaluated on a
    materialised index matrix (``batch``) give the same summary bit for bit."""
    import cape_kernels

    df = load_scores()
    fams = [f for f in dict.fromkeys(df["family"]) if f in {"OPT", "Pythia", "BLOOM", "Cerebras-GPT"}]
    opts = NcOptions(estimator=estimator, pooled=True, families=tuple(fams), n_resamples=1500, seed=4)
    got = estimate_nc(df, opts).estimates[0].bootstrap
    _, fam, logn, b1, b2 = _scope_arrays(df, fams, "HS", "TQA", 1.0)
    stat = _statistic(opts, fam, logn, b1, b2, 0.5, logn.min(), logn.max())
    assert stat.fused
    samples = stat.batch(cape_kernels.resample_indices(fam, 1500, 4))
    valid = samples[np.isfinite(samples)]
    assert got.n_valid == valid.size > 100 and got.median == np.median(valid)
    lo, hi = np.quantile(valid, [0.025, 0.975])
    assert (got.interval(0.95).low, got.interval(0.95).high) == (lo, hi)
    plain = summarize(bootstrap(stat, BootstrapOptions(n_resamples=1500, seed=4), strata=fam, chunk=97))
    # estimate_nc adds only the extrapolation note (it knows the data's range), nothing else
    assert got.note.startswith(plain.note)
    assert dataclasses.replace(got, extrapolated=False, note=plain.note) == plain


def test_result_round_trips_and_stores_its_options(tmp_path):
    df = load_scores()
    opts = NcOptions(estimator="sign-change", families=("OPT", "OLMo", "Pythia"), n_resamples=300, seed=2,
                     attach="midpoint")
    r = estimate_nc(df, opts)
    assert isinstance(r, NcResult) and r.provenance.options == opts.to_dict()
    assert r.provenance.seed == 2 and r.provenance.n_resamples == 300
    small = r.by_scope()["OLMo"]
    assert small.bootstrap == BootstrapSummary.empty(opts.levels) and small.bootstrap.degenerate
    assert all(isinstance(e.bootstrap, BootstrapSummary) for e in r.estimates)
    assert_roundtrip(r, tmp_path, "/analysis/nc")
    q = estimate_nc(df, NcOptions(estimator="quadratic", pooled=True, bootstrap=False, window=(8.0, 11.5)))
    assert q.provenance.seed is None and q.provenance.options["window"] == [8.0, 11.5]
    assert_roundtrip(q, tmp_path, "/analysis/nc_q")


def test_min_delta_is_in_the_chosen_units():
    df = load_scores()
    pct = nc(df, "gamma-fit", pooled=True, bootstrap=False, min_delta=1.0).estimates[0]
    frac = nc(df, "gamma-fit", pooled=True, bootstrap=False, units="fraction", min_delta=0.01).estimates[0]
    assert frac.n_intervals == pct.n_intervals and frac.log10_nc == pytest.approx(pct.log10_nc, rel=1e-12)
    default = nc(df, "gamma-fit", pooled=True, bootstrap=False, units="fraction").estimates[0]
    half = nc(df, "gamma-fit", pooled=True, bootstrap=False, min_delta=0.5).estimates[0]
    assert default.n_intervals == half.n_intervals   # the 0.5-point default, converted
    assert nc(df, "gamma-fit", pooled=True, bootstrap=False, units="fraction").min_delta == 0.005


@pytest.mark.parametrize("ci_method", ["percentile", "bca"])
def test_quadratic_estimate_is_the_same_on_the_numpy_and_numba_backends(monkeypatch, ci_method):
    """The quadratic's kernels (fit, intervals, bootstrap stream, jackknife) on either backend give one
    result, every number equal (cape_kernels.numpy_resample.resample_kernels picks by the work)."""
    import cape_hpc.analysis.nc as nc_module
    from cape_kernels import numpy_resample, resample

    df = load_scores()
    results = []
    for module in (numpy_resample, resample):
        monkeypatch.setattr(nc_module, "resample_kernels", lambda draws, module=module: module)
        results.append([estimate_nc(df, NcOptions(estimator="quadratic", pooled=pooled, n_resamples=3001, seed=7,
                                                  ci_method=ci_method)).to_json() for pooled in (False, True)])
    assert results[0] == results[1]
    assert json.loads(results[0][1])["estimates"][0]["bootstrap"]["n_valid"] > 0
