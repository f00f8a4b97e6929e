"""Issue 16: users' own tables through `cape analyze` (item 4), degenerate data (item 5), one line
instead of a traceback (item 7) and the smaller surprises (item 11)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPE = [sys.executable, "-m", "cape_hpc.cli"]
HEADER = "model,family,params,d_model,n_layers,n_heads,HS,TQA,ARC,WG,MMLU,tqa_variant,source"


def cape(*argv, cwd=None, env=None):
    return subprocess.run([*CAPE, *map(str, argv)], capture_output=True, text=True, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def table(path: Path, n_fam=4, per=6, seed=0, family="F", same=False) -> Path:
    rng = np.random.default_rng(seed)
    rows = [HEADER]
    for f in range(n_fam):
        base = np.array([41.3, 37.7, 30.0, 50.0, 25.0]) if same else rng.uniform(25, 55, 5)
        for i in range(per):
            s = base if same else np.clip(base + i * rng.uniform(0, 3, 5) + rng.normal(0, 1, 5), 0, 100)
            rows.append(f"{family}{f}-{i},{family}{f},{1e8 * 2 ** i * (1 + f / 20):.0f},{256 * (i + 1)},,,"
                        + ",".join(f"{v:.2f}" for v in s) + ",mc2,test")
    path.write_text("\n".join(rows) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# item 4

def test_analyze_on_a_table_without_the_default_families_skips_with_reasons_and_stores_the_rest(tmp_path):
    t = table(tmp_path / "t.csv")
    out = tmp_path / "a.h5"
    r = cape("analyze", "--scores", t, "-n", 50, "--n-permutations", 50, "--out", out, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert "OLMo" in skipped["isocline"] and "'--calibration'" in skipped["isocline"]
    assert "family 'Pythia' is not in the table" in skipped["eigen"]
    assert "family 'OPT'" in skipped["fixedpoint"]
    with h5py.File(out, "r") as f:
        stored = set(f["analysis"])
        assert {"coupling", "phases", "nc", "deff", "width", "loss", "frontier"} <= stored
        assert not stored & set(skipped)
    from cape_hpc.io.runs import AnalyzeRun
    from cape_hpc.io.store import read_results
    from roundtrip import assert_roundtrip

    run = AnalyzeRun.from_tree(read_results(out, "/analyze"), where="/analyze")
    assert {s.name for s in run.skipped} == set(skipped) and "coupling" in run.ran
    assert_roundtrip(run, tmp_path)


def test_every_option_of_every_analysis_is_reachable_from_analyze():
    import argparse
    import dataclasses

    from cape_hpc.commands.analysis import analyses, analysis_options, parse_sets, settable
    from cape_hpc.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["analyze"])
    flags = set(vars(args))
    for a in analyses():
        for f in dataclasses.fields(a.options):
            if f.name in a.own or f.name in a.fixed:
                continue
            assert f.name in flags or f.name in a.from_flags or f.name in settable(a), (a.name, f.name)
        # --set NAME.FIELD=<default> is accepted for every settable field and gives the same options
        items = []
        here = analysis_options(a, args)
        for name in sorted(settable(a)):
            v = getattr(here, name)
            text = ("none" if v is None else ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
            items.append(f"{a.name}.{name}={text}")
        assert analysis_options(a, args, parse_sets(items)) == analysis_options(a, args)


def test_set_changes_the_option_of_one_analysis_only(tmp_path):
    t = table(tmp_path / "t.csv", family="G")
    r = cape("analyze", "--scores", t, "-n", 50, "--n-permutations", 50, "--json",
             "--set", "isocline.calibration=G1", "--set", "eigen.mode=sliding",
             "--eigen-family", "G0")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["analysis"]["isocline"]["calibration"] == "G1"
    assert doc["analysis"]["eigen"]["mode"] == "sliding"
    assert "diagnose_model" in {s["name"] for s in doc["skipped"]}   # its own calibration is still OLMo
    one_line_error(cape("analyze", "--set", "nc.estimator=quadratic"), "--set", "cannot be set")
    one_line_error(cape("analyze", "--set", "nope.x=1"), "unknown analysis 'nope'")
    one_line_error(cape("analyze", "--set", "eigen.width=one"), "eigen", "width")


# ----------------------------------------------------------------------------------------------
# item 5

def test_identical_scores_give_no_quadratic_nc(tmp_path):
    """Every model scores the same: the parabola's curvature is rounding noise, never a minimum."""
    from cape_hpc.analysis.nc import NcOptions, estimate_nc
    from cape_hpc.io.scores import load_scores
    from cape_kernels import quadratic_nc_batch
    from cape_kernels.reference_resample import quadratic_nc_batch_ref

    df = load_scores(table(tmp_path / "same.csv", n_fam=3, per=8, same=True))
    for pooled in (False, True):
        res = estimate_nc(df, NcOptions(estimator="quadratic", pooled=pooled, n_resamples=200))
        for e in res.estimates:
            assert np.isnan(e.log10_nc) and e.bootstrap.n_valid == 0, (e.scope, e.log10_nc, e.reason)
            assert "no minimum" in e.reason
    x = np.log10(df["params"].to_numpy(float))
    y = df["TQA"].to_numpy(float)
    idx = np.random.default_rng(0).integers(0, len(x), (64, len(x)))
    assert np.isnan(quadratic_nc_batch(x, y, idx)).all() and np.isnan(quadratic_nc_batch_ref(x, y, idx)).all()
    # a genuine (small) curvature still counts: y = 1e-3 (x - 9)^2 + 40, independent of rounding
    y2 = 1e-3 * (x - 9.0) ** 2 + 40.0
    v, = quadratic_nc_batch(x, y2, np.arange(len(x))[None])
    assert abs(v - 9.0) < 1e-6 and abs(quadratic_nc_batch_ref(x, y2, np.arange(len(x))[None])[0] - 9.0) < 1e-6


# ----------------------------------------------------------------------------------------------
# item 7: one line, exit 2

def test_scores_pointing_at_a_folder_or_unreadable(tmp_path):
    one_line_error(cape("nc", "--scores", tmp_path), str(tmp_path), "folder")
    bad = tmp_path / "t.csv"
    bad.write_text("x")
    bad.chmod(0o000)
    if os.geteuid() != 0:   # root reads anything: the unreadable case needs a normal user
        one_line_error(cape("coupling", "--scores", bad), str(bad), "cannot read")


def _readonly_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:    # root writes anywhere a normal folder allows: sysfs refuses it
        return Path("/sys")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return d


def test_out_in_a_read_only_folder_fails_before_computing(tmp_path):
    ro = _readonly_dir(tmp_path)
    r = cape("analyze", "--out", ro / "a.h5", "-n", 10000)   # would take minutes if it computed first
    one_line_error(r, str(ro / "a.h5"), "cannot write")
    assert r.stdout == ""                                     # nothing printed: nothing was computed


@pytest.mark.parametrize("case", ["parent_is_file", "folder_with_force", "empty", "nul_in_model_name"])
def test_out_problems_are_one_line(tmp_path, case):
    if case == "parent_is_file":
        (tmp_path / "f").write_text("x")
        one_line_error(cape("coupling", "--out", tmp_path / "f" / "r.h5"), "is a file, not a folder")
    elif case == "folder_with_force":
        one_line_error(cape("coupling", "--out", tmp_path, "--force"), "is a folder")
    elif case == "empty":
        one_line_error(cape("coupling", "--out", ""), "'--out'", "empty path")
    else:
        t = table(tmp_path / "t.csv", n_fam=1)
        t.write_text(t.read_text().replace("F0-1,", "F0\x00x,", 1))
        one_line_error(cape("coupling", "--scores", t, "--out", tmp_path / "r.h5"), "NUL")


def test_prompt_file_with_a_lone_surrogate_is_one_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a", "text": "ok \\ud800 here", "set": "reasoning"}\n'
                 '{"id": "b", "text": "fine", "set": "truthfulness"}\n')
    line = one_line_error(cape("internals", "--model", "tiny-llama", "--prompts", p), "line 1", "surrogate")
    assert str(p) in line


def test_pickled_weights_are_refused_unless_opted_in(tmp_path):
    from cape_hpc.errors import DataError
    from cape_hpc.models.loading import load_model

    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(DataError, match="pickled .*pytorch_model.bin.*allow_pickle"):
        load_model(str(d))
    r = cape("internals", "--model", d)
    one_line_error(r, "pickled", "CAPE_ALLOW_PICKLE")
    with pytest.raises(Exception) as exc:   # opted in: the loader tries (and fails on this junk)
        load_model(str(d), allow_pickle=True)
    assert "allow_pickle" not in str(exc.value) and "cannot unpickle" in str(exc.value)
    r = cape("internals", "--model", d, "--allow-pickle")     # the CLI opt-in reaches the loader,
    one_line_error(r, "cannot unpickle")                        # which names the junk in one line


def test_huge_parameter_counts_do_not_overflow(tmp_path):
    t = table(tmp_path / "t.csv", n_fam=3)
    lines = t.read_text().splitlines()
    out = [lines[0]]
    for ln in lines[1:]:
        c = ln.split(",")
        c[2] = f"{float(c[2]) * 1e298:.6e}"
        out.append(",".join(c))
    t.write_text("\n".join(out) + "\n")
    for est in ("gamma-fit", "quadratic", "sign-change"):
        r = cape("nc", "--scores", t, "--estimator", est, "-n", 100)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-1500:]
    r = cape("analyze", "--scores", t, "-n", 100, "--n-permutations", 50)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-1500:]


# ----------------------------------------------------------------------------------------------
# item 11

def test_duplicate_header_column_is_named(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text(HEADER + ",HS\n" + "a,F,1e9,,,,1,2,3,4,5,mc2,s,6\n")
    one_line_error(cape("coupling", "--scores", t), "'HS' appears twice in the header (columns 7 and 14)")


def test_model_names_differing_only_in_case_are_one_model(tmp_path):
    t = table(tmp_path / "t.csv", n_fam=1)
    t.write_text(t.read_text().replace("F0-2,", "f0-1,", 1))
    one_line_error(cape("coupling", "--scores", t), "duplicate model 'f0-1'", "only in case")


def test_bom_is_accepted_in_jsonl_as_in_csv(tmp_path):
    from cape_hpc.internals.prompts import load_prompts

    src = (ROOT / "data" / "prompts" / "contrastive.jsonl").read_bytes()
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + src)
    assert [q.id for q in load_prompts(p).prompts] == [q.id for q in load_prompts().prompts]
    t = table(tmp_path / "t.csv")
    t.write_bytes(b"\xef\xbb\xbf" + t.read_bytes())
    assert cape("coupling", "--scores", t).returncode == 0


def test_prompt_ids_and_sets_differing_only_in_case(tmp_path):
    from cape_hpc.errors import DataError
    from cape_hpc.internals.prompts import load_prompts

    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "A", "text": "x", "set": "reasoning"}\n{"id": "a", "text": "y", "set": "reasoning"}\n')
    with pytest.raises(DataError, match="line 2: duplicate id 'a' .*up to case"):
        load_prompts(p)
    p.write_text('{"id": "1", "text": "x", "set": "reasoning"}\n{"id": "2", "text": "y", "set": "Reasoning"}\n')
    with pytest.raises(DataError, match="line 2: set 'Reasoning' differs only in case"):
        load_prompts(p)


def test_report_on_a_foreign_hdf5_file_is_one_line(tmp_path):
    f = tmp_path / "foreign.h5"
    with h5py.File(f, "w") as h:
        h["x"] = np.arange(3)
    one_line_error(cape("report", f, "-o", tmp_path / "r.html"), "cape_hpc did not write")
    assert not (tmp_path / "r.html").exists()


def test_no_runtime_warning_reaches_the_terminal(tmp_path):
    t = table(tmp_path / "same.csv", n_fam=2, same=True)
    r = cape("eigen", "--scores", t, "--family", "F0")
    assert r.returncode == 0 and "RuntimeWarning" not in r.stderr, r.stderr


def test_taps_comma_is_an_error():
    one_line_error(cape("internals", "--model", "tiny-llama", "--taps", ","), "--taps")
