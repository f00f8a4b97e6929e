"""`cape bench` and cape_kernels.bench: the roofline table, its baselines and its CSV rows."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from cape_hpc.cli import main
from cape_kernels import bench


def test_run_bench_rows_are_consistent():
    res = bench.run_bench("cpu", shapes=["layers"], ops=["steer", "set_mean_cosine"],
                          backends=["torch", "numba"], baselines=["eager"], repeats=1)
    assert res.copy_gbps > 0 and res.matmul_gflops > 0 and res.stat == "min"
    assert [(r.op, r.backend, r.kind) for r in res.rows] == [
        ("steer", "torch", "kernel"), ("steer", "eager", "baseline"), ("steer", "numba", "kernel"),
        ("set_mean_cosine", "torch", "kernel"), ("set_mean_cosine", "eager", "baseline"),
        ("set_mean_cosine", "numba", "kernel")]
    B, P, Q, D = (bench.SHAPES["layers"][k] for k in "BPQD")
    for r in res.rows:
        want = 2 * B * P * D * 4 + D * 4 + B * P * 4 if r.op == "steer" else B * (P + Q) * D * 4 + B * 4
        assert r.bytes == want
        assert abs(r.gbps - r.bytes / (r.time_ms / 1e3) / 1e9) < 1e-6 * r.gbps
        assert abs(r.frac_copy - r.gbps / r.copy_gbps) < 1e-9  # the copy timed in the op's rounds
        assert r.copy_gbps > 0 and math.isnan(r.matmul_gflops)
    for i in (0, 3):
        ref, base, nb = res.rows[i:i + 3]
        assert ref.vs_torch == 1.0 and base.vs_baseline == 1.0
        assert abs(nb.vs_torch - ref.time_ms / nb.time_ms) < 1e-9
        assert abs(nb.vs_baseline - base.time_ms / nb.time_ms) < 1e-9
    assert res.versions["torch"] == torch.__version__ and res.versions["numba"]
    text = bench.format_table(res)
    assert "% copy" in text and "x torch" in text and "x best" in text and "[eager]" in text
    gl = bench.goals(res)
    assert [(g.op, g.backend) for g in gl] == [("steer", "numba"), ("set_mean_cosine", "numba")]
    for g, r in zip(gl, (res.rows[2], res.rows[5])):
        assert g.met == (r.frac_copy >= bench.GOAL_COPY["cpu"] and r.vs_baseline >= bench.GOAL_VS_BASELINE)


def test_user_baselines_compute_the_ops():
    """The baselines time the same computation as the kernels (checked against the reference)."""
    import cape_kernels as ck

    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 7, 33, generator=g)
    m = torch.rand(5, 7, generator=g) > 0.3
    m[0] = False
    torch.testing.assert_close(bench.user_pooled_mean(h, m), ck.pooled_tap(h, m, "mean", backend="torch"))
    R, T = torch.randn(3, 6, 20, generator=g, dtype=torch.float64), torch.randn(3, 4, 20, generator=g, dtype=torch.float64)
    torch.testing.assert_close(bench.user_set_mean_cosine(R, T), ck.set_mean_cosine(R, T, backend="torch"))
    st = ck.pairwise_cosine_stats(R, T, threshold=-0.2, backend="torch")
    mean, frac = bench.user_pairwise(R, T, -0.2)
    torch.testing.assert_close(mean, st.mean)
    torch.testing.assert_close(frac.double(), st.frac_below)
    H = torch.randn(9, 20, generator=g, dtype=torch.float64)
    v = torch.randn(20, generator=g, dtype=torch.float64)
    H2 = H.clone()
    torch.testing.assert_close(bench.user_steer_relative_(H, v, 0.3),
                               ck.steer_inject_(H2, v, 0.3, scale="relative", backend="torch"))
    torch.testing.assert_close(H, H2)


def test_compile_baseline_runs():
    res = bench.run_bench("cpu", shapes=["heads"], ops=["set_mean_cosine"], backends=["numba"],
                          baselines=["compile"], repeats=1)
    assert [(r.backend, r.kind) for r in res.rows] == [("compile", "baseline"), ("numba", "kernel")]
    assert res.rows[0].time_ms > 0 and res.rows[1].vs_baseline > 0


def test_csv_appends_rows_keyed_by_run(tmp_path):
    res = bench.run_bench("cpu", shapes=["heads"], ops=["steer"], backends=["numba"], baselines=["eager"],
                          repeats=1)
    path = tmp_path / "r" / "bench.csv"
    assert bench.write_csv(res, path) == 2
    assert bench.write_csv(res, path) == 2  # appends, one header
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4 and list(rows[0]) == list(bench.CSV_FIELDS)
    assert {(r["op"], r["shape"], r["backend"], r["kind"]) for r in rows} == {
        ("steer", "heads", "eager", "baseline"), ("steer", "heads", "numba", "kernel")}
    r = rows[1]
    assert r["device"] == "cpu" and r["torch"] == torch.__version__ and r["numba"] and r["commit"]
    assert float(r["time_ms"]) == pytest.approx(res.rows[1].time_ms, rel=1e-5)
    assert float(r["vs_baseline"]) == pytest.approx(res.rows[1].vs_baseline, rel=1e-5)
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        bench.write_csv(res, bad)


def test_cape_bench_cli(capsys, tmp_path):
    threads_before = torch.get_num_threads()
    out_csv = tmp_path / "b.csv"
    assert main(["bench", "--device", "cpu", "--quick", "--ops", "steer", "--shapes", "layers",
                 "--backends", "torch,numba", "--baselines", "eager", "--repeats", "1", "--json",
                 "--csv", str(out_csv)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {(r["backend"], r["kind"]) for r in out["rows"]} == {("torch", "kernel"), ("numba", "kernel"),
                                                                ("eager", "baseline")}
    assert len(list(csv.DictReader(out_csv.open()))) == 3
    assert main(["bench", "--device", "cpu", "--ops", "steer", "--shapes", "heads", "--backends", "numba",
                 "--baselines", "none", "--repeats", "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "[eager]" not in text and "numba" in text and "CPU, 1 threads" in text
    assert torch.get_num_threads() == threads_before  # restored after the run
    assert main(["bench", "--shapes", "giant"]) == 2
    assert "unknown shape 'giant'" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--backends", "cupy", "--ops", "steer", "--shapes", "layers"]) == 2
    assert main(["bench", "--device", "cpu", "--baselines", "jax", "--ops", "steer", "--shapes", "layers"]) == 2
    assert "unknown baseline" in capsys.readouterr().err


def test_implementations_are_timed_in_interleaved_rounds():
    calls = []
    plans = [[lambda: calls.append("a0"), lambda: calls.append("a1")], [lambda: calls.append("b0")]]
    timed = bench._time_interleaved(plans, torch.device("cpu"), repeats=3, graphs=False, stat="min")
    assert len(timed) == 2 and all(t > 0 and how == "wall" for t, how in timed)
    # warm-up (each copy once, then the first again), then one call of each per round, in turn,
    # each plan cycling through its copies of the inputs
    assert calls == ["a0", "a1", "a0", "b0", "b0"] + ["a0", "b0", "a1", "b0", "a0", "b0"]
