"""The report's steering dose-response figure and chart draw the stored held-out rates and their
Wilson intervals (recomputed here from the stored counts), and mark the chosen operating point."""
import math

import numpy as np
import pytest

from cape_hpc.io.store import read_results
from cape_hpc.report import figures as F
from cape_hpc.report import html as H
from cape_hpc.report.data import Results
from report_fixture import STEER_ALPHAS, cached_sample


def _wilson(k, n, z=1.959963984540054):
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (0.0 if k == 0 else c - h), (1.0 if k == n else c + h)


@pytest.fixture(scope="module")
def sample():
    return Results.load(cached_sample())


def test_dose_response_figure_draws_stored_rates_and_wilson_intervals(sample):
    fig = F.draw("steering_dose", sample)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "alpha" and "held-out" in ax.get_ylabel()
    for model in STEER_ALPHAS:
        g = read_results(sample.path, f"/steering/{model}/outcome_mc_items")
        assert g["_schema"] == "SteeringOutcomeResult"
        pts = sorted(g["points"], key=lambda p: p["alpha"])
        for what, k, n in (("correction", "n_corrected", "n_base_wrong"), ("damage", "n_damaged", "n_base_right")):
            cont = next(c for c in ax.containers if c.get_label() == f"{model} L{pts[0]['layer']}: {what}")
            y = cont.lines[0].get_ydata()
            ref = [p[k] / p[n] if p[n] else math.nan for p in pts]
            np.testing.assert_allclose(y, ref, equal_nan=True)
            (bars,) = cont.lines[2]
            segs = np.sort(np.array([s[:, 1] for s in bars.get_segments()]), axis=1)
            want = np.array([_wilson(p[k], p[n]) for p in pts if p[n]])
            np.testing.assert_allclose(segs[np.isfinite(segs).all(1)], want, atol=1e-9)


def test_dose_response_chart_in_the_html_report(sample):
    charts, skipped = H.build_charts(sample)
    (c,) = [c for c in charts if c["title"].startswith("Steering dose-response")]
    names = [t["name"] for t in c["spec"]["data"]]
    assert {f"{m} L0: correction" for m in STEER_ALPHAS} <= set(names)
    assert "alpha" in c["table"]["columns"] and "correction" in c["table"]["columns"]
    assert not [s for s in skipped if "dose-response" in s["chart"]]
