"""`cape bench` and cape_kernels.bench: the roofline table is produced and self-consistent."""
from __future__ import annotations

import json

from cape_hpc.cli import main
from cape_kernels import bench


def test_run_bench_rows_are_consistent():
    res = bench.run_bench("cpu", shapes=["layers"], ops=["steer", "set_mean_cosine"],
                          backends=["torch", "numba"], repeats=1)
    assert res.copy_gbps > 0 and res.matmul_gflops > 0
    assert [(r.op, r.backend) for r in res.rows] == [("steer", "torch"), ("steer", "numba"),
                                                     ("set_mean_cosine", "torch"), ("set_mean_cosine", "numba")]
    for r in res.rows:
        B, P, Q, D = (bench.SHAPES["layers"][k] for k in "BPQD")
        want = 2 * B * P * D * 4 + D * 4 + B * P * 4 if r.op == "steer" else B * (P + Q) * D * 4 + B * 4
        assert r.bytes == want
        assert abs(r.gbps - r.bytes / (r.time_ms / 1e3) / 1e9) < 1e-6 * r.gbps
        assert abs(r.frac_copy - r.gbps / res.copy_gbps) < 1e-9
    assert res.rows[0].vs_torch == 1.0
    assert abs(res.rows[1].vs_torch - res.rows[0].time_ms / res.rows[1].time_ms) < 1e-9
    text = bench.format_table(res)
    assert "% copy" in text and "x torch" in text and text.count("\n") == 2 + 2 + len(res.rows) - 1


def test_cape_bench_cli(capsys):
    assert main(["bench", "--device", "cpu", "--quick", "--ops", "steer", "--shapes", "layers",
                 "--backends", "torch,numba", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["backend"] for r in out["rows"]} == {"torch", "numba"}
    assert main(["bench", "--shapes", "giant"]) == 2
    assert "unknown shape 'giant'" in capsys.readouterr().err
    assert main(["bench", "--device", "cpu", "--backends", "cupy", "--ops", "steer", "--shapes", "layers"]) == 2
