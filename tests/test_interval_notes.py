"""Interval notes (docs/METHODS.md §2.4, "Interval notes"): each is triggered by a constructed case,
checked against an independent count or a hand computation, carried by --json and printed."""
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from cape_kernels import resample_indices

from cape_hpc.analysis.nc import GammaNcStatistic, NcOptions, estimate_nc
from cape_hpc.cli import main
from cape_hpc.schema import BootstrapSummary
from cape_hpc.stats import BootstrapOptions, bootstrap, min_valid, summarize

X = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 3.0, 5.0, 7.0])


def test_valid_share_counts_the_valid_resamples():
    """Invalid (NaN) whenever unit 0 is drawn at least twice: the share is counted independently
    from the same index streams."""
    R = 2000

    def f(idx):
        return math.nan if np.count_nonzero(idx == 0) >= 2 else float(X[idx].mean())

    s = summarize(bootstrap(f, BootstrapOptions(n_resamples=R, seed=3), n=len(X)))
    idx = resample_indices(None, R, 3, n=len(X))
    expect = np.count_nonzero((idx == 0).sum(axis=1) < 2)
    assert s.n_valid == expect and s.valid_share == pytest.approx(expect / R)
    assert 0 < s.valid_share < 1 and not s.few_valid
    assert any(t.startswith(f"{expect}/{R} valid") for t in s.tags())


def test_few_valid_resamples():
    R = 1000

    def f(idx):  # valid only when unit 0 is drawn 3+ times: rare
        return float(X[idx].mean()) if np.count_nonzero(idx == 0) >= 3 else math.nan

    s = summarize(bootstrap(f, BootstrapOptions(n_resamples=R, seed=1), n=len(X)))
    idx = resample_indices(None, R, 1, n=len(X))
    assert s.n_valid == np.count_nonzero((idx == 0).sum(axis=1) >= 3) < min_valid(R)
    assert s.few_valid and s.degenerate and any("too few" in t for t in s.tags())


def test_zero_width():
    s = summarize(bootstrap(lambda i: 2.5, BootstrapOptions(n_resamples=300), n=10))
    assert s.zero_width and s.degenerate and "zero width" in s.tags()
    ok = summarize(bootstrap(lambda i: float(X[i].mean()), BootstrapOptions(n_resamples=300), n=len(X)))
    assert not ok.zero_width and ok.tags() == []


def test_zero_width_within_rounding_is_the_audits_rule():
    """Bounds that differ only by rounding (1e-15 relative) are zero width in the summary, by the
    same rule the audit applies (``ConfidenceInterval.zero_width``); 1e-6 apart they are not."""
    from cape_hpc.audit.degeneracy import reasons

    def near(eps):
        return lambda i: 2.5 * (1 + eps * float(np.sum(i) % 7))

    s = summarize(bootstrap(near(1e-15), BootstrapOptions(n_resamples=300), n=10))
    assert s.intervals[0].high != s.intervals[0].low            # not equal as floats
    assert s.zero_width and s.degenerate
    assert any("degenerate" in r for r in reasons([("interval", ("x", s))]))
    wide = summarize(bootstrap(near(1e-6), BootstrapOptions(n_resamples=300), n=10))
    assert not wide.zero_width and not wide.degenerate


def test_point_estimate_missing():
    """NaN on the full sample (every unit once) but finite on resamples with a repeat."""
    def f(idx):
        return math.nan if len(np.unique(idx)) == len(idx) else float(X[idx].mean())

    s = summarize(bootstrap(f, BootstrapOptions(n_resamples=400, seed=2), n=len(X)))
    assert math.isnan(s.estimate) and s.n_valid > 0 and s.estimate_missing
    assert "no point estimate" in s.tags() and "point estimate undefined" in s.note


def test_discrete_estimator_returns_observed_sizes_only():
    """The sign-change N_c of a family whose gamma changes sign: every valid resample is the log10 N
    of an observed model (attach='larger'); summarize notes it."""
    logn = np.log10([1e8, 2e8, 5e8, 1e9, 3e9, 1e10])
    b1 = np.array([30.0, 34, 39, 45, 52, 60])
    b2 = np.array([45.0, 43, 42, 44, 47, 51])
    stat = GammaNcStatistic("sign-change", np.zeros(6, np.int64), logn, b1, b2, 0.5)
    res = bootstrap(stat, BootstrapOptions(n_resamples=500, seed=0))
    s = summarize(res)
    valid = res.samples[np.isfinite(res.samples)]
    assert valid.size and np.all(np.isin(valid, logn))
    assert s.discrete and "discrete: observed sizes only" in s.tags()
    # a continuous statistic is not discrete unless the caller says so
    plain = bootstrap(lambda i: float(X[i].mean()), BootstrapOptions(n_resamples=100), n=len(X))
    assert not summarize(plain).discrete and summarize(plain, discrete=True).discrete


def _family(xs, gam):
    """A family with log10 N = xs whose local gammas are ``gam`` exactly (B1 rises 10 per step)."""
    b1 = 30 + 10 * np.arange(len(xs))
    b2 = 40 + np.concatenate([[0.0], np.cumsum(10 * np.asarray(gam))])
    return pd.DataFrame({"model": [f"F-{i}" for i in range(len(xs))], "family": "F", "params": 10.0 ** np.asarray(xs),
                         "HS": b1, "TQA": b2, "ARC": 30.0, "WG": 50.0, "MMLU": 30.0})


def test_extrapolated_against_the_gamma_midpoint_range():
    """Gammas 0.5 (x_mid - 8.2) at midpoints 8.5, 9.5, 10.5: the gamma-fit zero is 8.2 exactly,
    inside the models' log N range [8, 11] but outside the midpoints' [8.5, 10.5]."""
    xs = [8.0, 9.0, 10.0, 11.0]
    mids = [8.5, 9.5, 10.5]
    df = _family(xs, [0.5 * (m - 8.2) for m in mids])
    e = estimate_nc(df, NcOptions(estimator="gamma-fit", n_resamples=300)).estimates[0]
    assert e.log10_nc == pytest.approx(8.2, abs=1e-9)
    assert e.fit_range == pytest.approx([8.5, 10.5]) and min(xs) <= e.log10_nc <= max(xs)
    assert e.extrapolated and e.bootstrap.extrapolated and "extrapolated" in e.bootstrap.tags()
    inside = estimate_nc(_family(xs, [0.5 * (m - 9.7) for m in mids]),
                         NcOptions(estimator="gamma-fit", bootstrap=False)).estimates[0]
    assert inside.log10_nc == pytest.approx(9.7) and not inside.extrapolated


def test_json_carries_the_notes_and_the_table_prints_them(capsys):
    assert main(["nc", "--estimator", "gamma-fit", "-n", "300", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    res = out[0] if isinstance(out, list) else next(iter(out.values())) if "estimates" not in out else out
    est = {e["scope"]: e for e in res["estimates"]}
    py = est["Pythia"]
    assert py["extrapolated"] is True and py["bootstrap"]["extrapolated"] is True
    for k in ("valid_share", "zero_width", "estimate_missing", "discrete", "few_valid"):
        assert k in py["bootstrap"]
    # the human table: Pythia's 3e15 B point is not printed as a number
    assert main(["nc", "--estimator", "gamma-fit", "-n", "300"]) == 0
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if l.startswith("Pythia"))
    assert "(extrapolated)" in line and "e+06" not in line and "e+15" not in line
    assert main(["nc", "--estimator", "sign-change", "-n", "300"]) == 0
    assert "discrete: observed sizes only" in capsys.readouterr().out


def test_empty_summary_has_no_tags():
    assert BootstrapSummary.empty().tags() == []


def test_note_extrapolation_flags_a_point_or_bound_outside_the_range_once():
    """The one extrapolation note (stats.note_extrapolation): set when the point or a bound of the 95%
    interval lies outside [lo, hi], with the caller's words for the range; N_c's words by note_fit_range."""
    from cape_hpc.analysis.nc import note_fit_range
    from cape_hpc.stats import note_extrapolation

    s = summarize(bootstrap(lambda i: float(X[i].mean()), BootstrapOptions(n_resamples=300, seed=1), n=len(X)))
    ci = s.interval(0.95)
    inside = note_extrapolation(s, ci.low, ci.high, "the data")
    assert inside is s and not inside.extrapolated
    out = note_extrapolation(s, ci.low + 1e-9 * abs(ci.low), ci.high, "the data")   # the lower bound is outside
    assert out.extrapolated and out.note.endswith("extrapolated: point or 95% bound outside the data")
    assert dataclasses.replace(out, extrapolated=False, note=s.note) == s
    assert note_extrapolation(s, math.nan, 1.0, "x") is s                           # no range: nothing to say
    assert note_extrapolation(BootstrapSummary.empty(), 0.0, 1.0, "x") == BootstrapSummary.empty()
    nc = note_fit_range(s, 9.0, 9.5, "gamma-fit")
    assert nc.extrapolated and ("outside log10 N [9.000, 9.500] of the gamma midpoints (N 1B to 3.16B)" in nc.note)
