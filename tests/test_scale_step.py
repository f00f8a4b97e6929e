"""`--scale step`: a table of one model's checkpoints (one family, constant params, a `step` column)
is ordered and fitted along log10 step (cape_hpc.analysis.scale; issue 23, item 2).

References: an independent float64 numpy computation of each statistic on log10(step), and the same
command on a table whose `params` column holds the steps (default `--scale params`, code that
predates the option).  Bad input by subprocess: exit 2, one line naming the file and the column or row.
"""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cape_hpc.cli import main

STEPS = [1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000]
FAMILY = "pythia-410m-ckpt"
# row order of the file: neither step order nor name order (names sort as 1000 < 143000 < 16000 < 2000 ...)
FILE_ORDER = [3, 0, 7, 5, 1, 6, 2, 4]


def _scores() -> tuple[np.ndarray, np.ndarray]:
    """HS rising along log10 step, TQA a parabola with its minimum at log10 step = 4.0 (+ fixed noise)."""
    x = np.log10(np.array(STEPS, float))
    rng = np.random.default_rng(7)
    hs = 30.0 + 8.0 * (x - 3.0) + rng.normal(0, 0.4, len(x))
    tqa = 40.0 + 4.0 * (x - 4.0) ** 2 + rng.normal(0, 0.3, len(x))
    return np.round(hs, 3), np.round(tqa, 3)


def _table(params: list[float], step: list | None) -> pd.DataFrame:
    hs, tqa = _scores()
    df = pd.DataFrame({"model": [f"ck-step{s}" for s in STEPS], "family": FAMILY, "params": params,
                       "d_model": 1024, "n_layers": 24, "n_heads": 16, "HS": hs, "TQA": tqa, "ARC": "", "WG": "",
                       "MMLU": "", "tqa_variant": "mc2", "source": "test"})
    if step is not None:
        df["step"] = step
    return df.iloc[FILE_ORDER]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    ck, as_n = d / "checkpoints.csv", d / "steps_as_params.csv"
    _table([4.05e8] * len(STEPS), STEPS).to_csv(ck, index=False)
    _table([float(s) for s in STEPS], None).to_csv(as_n, index=False)
    return d, ck, as_n


def _json(*argv) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*argv, "--json"]) == 0
    return json.loads(buf.getvalue())


def _cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cape_hpc.cli", *argv], capture_output=True, text=True, timeout=300)


def _without_provenance(tree):
    if isinstance(tree, dict):
        return {k: _without_provenance(v) for k, v in tree.items() if k != "provenance"}
    if isinstance(tree, list):
        return [_without_provenance(v) for v in tree]
    return tree


def test_coupling_along_step_equals_numpy(tables):
    _, ck, _ = tables
    r = _json("coupling", "--scores", str(ck), "--scale", "step")
    x = np.log10(np.array(STEPS, np.float64))
    hs, tqa = _scores()
    d1, d2 = np.diff(hs), np.diff(tqa)
    gamma = np.where(np.abs(d1) >= 0.5, d2 / np.where(d1 == 0, 1, d1), np.nan)
    ivs = r["intervals"]
    assert [iv["model"] for iv in ivs] == [f"ck-step{s}" for s in STEPS[1:]]
    np.testing.assert_allclose([iv["x_mid"] for iv in ivs], (x[1:] + x[:-1]) / 2, rtol=1e-15)
    np.testing.assert_allclose([iv["n"] for iv in ivs], STEPS[1:], rtol=0)
    np.testing.assert_allclose([iv["gamma"] for iv in ivs], gamma, rtol=1e-12, equal_nan=True)
    assert r["provenance"]["options"]["scale_axis"] == "step"


def test_coupling_along_params_of_checkpoints_is_undefined(tables):
    """The same table along N (the default): every interval joins two models of equal N."""
    _, ck, _ = tables
    r = _json("coupling", "--scores", str(ck))
    assert {iv["reason"] for iv in r["intervals"]} == {"equal N"}


def test_coupling_and_phases_along_step_equal_steps_as_params(tables):
    _, ck, as_n = tables
    for cmd in ("coupling", "phases"):
        a = _json(cmd, "--scores", str(ck), "--scale", "step")
        b = _json(cmd, "--scores", str(as_n))
        assert _without_provenance(a) == _without_provenance(b)


def test_nc_along_step_equals_numpy(tables):
    _, ck, _ = tables
    x = np.log10(np.array(STEPS, np.float64))
    hs, tqa = _scores()
    r = _json("nc", "--scores", str(ck), "--scale", "step", "--scope", "per-family", "--no-bootstrap")
    by = {k: v["estimates"][0] for k, v in r.items()}
    # quadratic: log10 step_c = -b / (2a) of the least-squares parabola TQA(x)
    a, b, _ = np.polyfit(x, tqa, 2)
    assert by["quadratic"]["log10_nc"] == pytest.approx(-b / (2 * a), rel=1e-10)
    assert 3.0 < by["quadratic"]["log10_nc"] < 5.2
    assert by["quadratic"]["nc"] == pytest.approx(10 ** (-b / (2 * a)), rel=1e-9)
    # gamma-fit: the zero of the least-squares line gamma(x_mid) over the defined intervals
    d1, d2 = np.diff(hs), np.diff(tqa)
    ok = np.abs(d1) >= 0.5
    xm = ((x[1:] + x[:-1]) / 2)[ok]
    g = d2[ok] / d1[ok]
    slope, icpt = np.polyfit(xm, g, 1)
    assert by["gamma-fit"]["log10_nc"] == pytest.approx(-icpt / slope, rel=1e-9)
    # sign-change: the first positive gamma after a negative one, at the larger model
    first = next(i for i in range(1, len(g)) if g[i] > 0 and g[i - 1] < 0)
    assert by["sign-change"]["log10_nc"] == pytest.approx(x[1:][ok][first], rel=1e-15)


def test_nc_with_bootstrap_equals_steps_as_params(tables):
    _, ck, as_n = tables
    common = ("--estimator", "quadratic", "gamma-fit", "--n-resamples", "300", "--seed", "3")
    a = _json("nc", "--scores", str(ck), "--scale", "step", *common)
    b = _json("nc", "--scores", str(as_n), *common)
    assert _without_provenance(a) == _without_provenance(b)
    assert a["quadratic"]["estimates"][0]["bootstrap"]["n_valid"] > 0


def test_printed_tables_name_the_step_axis(tables):
    _, ck, _ = tables
    out = _cli("nc", "--scores", str(ck), "--scale", "step", "--estimator", "quadratic", "--scope", "per-family",
               "--no-bootstrap")
    text = " ".join(out.stdout.split())   # tables wrap at the terminal's width
    assert out.returncode == 0, out.stderr
    assert "critical step in training steps" in text and "step_c" in text and "N_c (B)" not in text
    out = _cli("coupling", "--scores", str(ck), "--scale", "step")
    assert out.returncode == 0 and "along log10 step (training steps)" in " ".join(out.stdout.split())


def test_analyze_along_step_equals_the_commands(tables):
    _, ck, _ = tables
    r = _json("analyze", "--scores", str(ck), "--scale", "step", "--n-resamples", "200", "--n-permutations", "50")
    assert "coupling" in r["analysis"], r["skipped"]
    alone = _json("coupling", "--scores", str(ck), "--scale", "step")
    assert _without_provenance(r["analysis"]["coupling"]) == _without_provenance(alone)
    nc = _json("nc", "--scores", str(ck), "--scale", "step", "--n-resamples", "200")
    assert _without_provenance(r["analysis"]["nc"]) == _without_provenance(nc)


def _one_line_exit_2(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.parametrize("cmd", ["coupling", "nc", "analyze"])
def test_table_without_step_column_is_one_line_exit_2(tables, cmd):
    _, _, as_n = tables
    line = _one_line_exit_2(_cli(cmd, "--scores", str(as_n), "--scale", "step"))
    assert str(as_n) in line and "'step'" in line


@pytest.mark.parametrize("cell,shown", [("", "blank"), ("0", "'0'"), ("-5", "'-5'"), ("abc", "'abc'"),
                                        ("nan", "'nan'")])
def test_bad_step_names_the_row(tables, cell, shown):
    d, ck, _ = tables
    df = pd.read_csv(ck, dtype=str, keep_default_na=False)
    df.loc[df.index[2], "step"] = cell       # third data row: CSV line 4
    bad = d / f"bad_step_{abs(hash(cell))}.csv"
    df.to_csv(bad, index=False)
    for cmd in ("coupling", "nc"):
        line = _one_line_exit_2(_cli(cmd, "--scores", str(bad), "--scale", "step"))
        assert str(bad) in line and "row 4" in line and "'step'" in line and shown in line
        assert repr(df.loc[df.index[2], "model"]) in line


def test_default_scale_ignores_the_step_column(tables):
    """--scale params (the default) never reads `step`: a blank step changes nothing."""
    d, ck, _ = tables
    df = pd.read_csv(ck, dtype=str, keep_default_na=False)
    df["step"] = ""
    blank = d / "blank_steps.csv"
    df.to_csv(blank, index=False)
    a, b = _json("coupling", "--scores", str(blank)), _json("coupling", "--scores", str(ck))
    assert _without_provenance(a) == _without_provenance(b)


def test_dynamics_equations_name_the_step_axis(tables):
    """`cape dynamics --scale step` prints its equations along log10 step, never log10 N (two
    checkpoint ladders: one trains, one is held out)."""
    d, ck, _ = tables
    a = pd.read_csv(ck)
    b = a.assign(family="other-ckpt", model=a["model"] + "-b", HS=a["HS"] * 0.97, TQA=a["TQA"] * 1.02)
    two = d / "two_ladders.csv"
    pd.concat([a, b]).to_csv(two, index=False)
    out = _cli("dynamics", "--scores", str(two), "--scale", "step", "--model", "linear", "--n-resamples", "20",
               "--train", "pythia-410m-ckpt", "--holdout", "other-ckpt", "--benchmarks", "HS", "TQA")
    text = " ".join(out.stdout.split())
    assert out.returncode == 0, out.stderr
    assert "x = log10 step" in text and "log10 N" not in text and "dlog10N" not in text
