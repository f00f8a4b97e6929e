"""The cross-model chain end to end on real (tiny) models: cape sweep jobs/family_tiny.yaml, cape merge,
cape crossmodel --out, cape reproduce --internals, cape figures and cape report."""
from __future__ import annotations

import json
import math
from pathlib import Path

from cape_hpc.cli import main
from cape_hpc.crossmodel.results import GROUP, CrossModelResult
from cape_hpc.io.store import read_results

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "family_tiny.yaml"


def test_sweep_merge_crossmodel_reproduce_report(tmp_path, capsys):
    out_dir, merged = tmp_path / "run", tmp_path / "merged.h5"
    assert main(["sweep", str(JOB), "--out-dir", str(out_dir)]) == 0
    assert main(["merge", str(out_dir), "-o", str(merged)]) == 0
    capsys.readouterr()
    assert main(["crossmodel", str(merged), "-n", "200", "--out", str(merged)]) == 0
    text = capsys.readouterr().out
    assert "tinyfam-s, tinyfam-m, tinyfam-l" in text and "Generations at matched size" in text
    cm = CrossModelResult.from_tree(read_results(merged, GROUP), where=GROUP)
    rows = {r.model: r for r in cm.rows}
    assert set(rows) == {"tinyfam-s", "tinyfam-m", "tinyfam-l", "tinygen2-m", "tinygen3-m"}
    # family and parameters travelled with the shards from the job spec
    assert (rows["tinyfam-l"].family, rows["tinyfam-l"].params, rows["tinyfam-l"].params_source) == \
        ("tinyfam", 166848.0, "spec")
    for r in cm.rows:
        assert r.final_coupling_ci.defined and r.final_coupling_ci.low <= r.final_coupling <= r.final_coupling_ci.high + 1e-12
        assert r.n_heads_total == r.n_layers * r.n_heads
    (tiny,) = [l for l in cm.ladders if l.family == "tinyfam"]
    assert tiny.models == ["tinyfam-s", "tinyfam-m", "tinyfam-l"] and not tiny.reason
    assert math.isfinite(tiny.slope) and tiny.slope_boot.n_resamples == 200
    assert all(l.reason for l in cm.ladders if l.family != "tinyfam")          # one-model families: no estimate
    assert [(g.family_a, g.family_b) for g in cm.generations] == [("tinygen2", "tinygen3")]
    # the audit reads the same file: the paper's models are missing and are named
    assert main(["reproduce", "--internals", str(merged), "--claim", "opt-fixed-point,qwen25-dip", "-n", "50",
                 "--json"]) == 0
    claims = {c["id"]: c for c in json.loads(capsys.readouterr().out)["claims"]}
    assert claims["qwen25-dip"]["verdict"] == "needs model internals"
    assert "Qwen2.5-1.5B" in claims["qwen25-dip"]["reason"]
    # figures and the report draw the cross-model charts
    figs = tmp_path / "figs"
    assert main(["figures", str(merged), "-o", str(figs)]) == 0
    for name in ("crossmodel_ladders", "crossmodel_depth", "crossmodel_drep", "crossmodel_bottleneck"):
        assert (figs / f"{name}.png").stat().st_size > 1000
    html = tmp_path / "report.html"
    assert main(["report", str(merged), "-o", str(html)]) == 0
    page = html.read_text()
    for title in ("internal coupling ladder per family", "per-layer coupling on a relative depth axis",
                  "d_rep profiles", "projection bottleneck curves"):
        assert f"Cross-model: {title}" in page
