"""Sweep with real models: `mpiexec -n 2 cape sweep jobs/smoke.yaml`, SIGKILL of a rank with real
tiny models (rerun == uninterrupted run), and an unloadable model id."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cape_hpc.internals.results import InternalsResult
from cape_hpc.io.store import read_results
from cape_hpc.sweep import shards

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
CAPE = [sys.executable, "-m", "cape_hpc.cli"]
CODE_VERSION = shards.shard_code_version()

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="the venv has no mpiexec (pip install mpich)")


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "CAPE_SWEEP_FAILPOINT"}
    e.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CAPE_SWEEP_CODE_VERSION=CODE_VERSION,
             OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    e.update(extra)
    return e


def numbers(res: InternalsResult) -> dict[str, np.ndarray]:
    """Every computed number of an internals result (provenance, e.g. the git commit, excluded)."""
    s, b = res.head_summary, res.bottleneck
    return {"layer_coupling": res.layer_coupling, "layer_pairwise_mean": res.layer_pairwise_mean,
            "layer_competing_fraction": res.layer_competing_fraction, "d_rep": res.d_rep,
            "head_coupling": res.head_coupling, "pca_coupling": b.pca_coupling,
            "bottleneck": np.array([b.hidden, b.logits]),
            "head_summary": np.array([s.cooperative_share, s.near_zero_share, s.net, s.median, s.early, s.mid,
                                      s.late])}


def internals_of(tree: dict, model: str) -> InternalsResult:
    return InternalsResult.from_tree(tree["internals"][model], where=f"/internals/{model}")


def test_mpiexec_two_ranks_smoke(tmp_path):
    out = tmp_path / "smoke"
    r = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(REPO / "jobs" / "smoke.yaml"), "--out-dir",
                       str(out), "--json", "--merge", str(tmp_path / "smoke.h5")],
                       capture_output=True, text=True, env=env(), timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["ranks"] == 2 and len(res["models"]) == 8
    assert all(m["status"] == "done" for m in res["models"]), res["models"]
    assert {m["rank"] for m in res["models"]} == {0, 1}, "both ranks must have computed models"
    # largest first: the two real models go out first, one to each rank
    real = {m["model"]: m["rank"] for m in res["models"] if m["model"] in ("gemma3-270m", "smollm2-135m")}
    assert sorted(real.values()) == [0, 1]
    tree = read_results(tmp_path / "smoke.h5")
    # layer counts from the models' configs: SmolLM2-135M 30, Gemma-3-270M 18, tiny 3
    for name, n_layers in (("smollm2-135m", 30), ("gemma3-270m", 18), ("tiny-llama", 3)):
        g = internals_of(tree, name)
        assert g.layer_coupling.shape == (n_layers,) and np.isfinite(g.layer_coupling).all()
        assert np.all(np.abs(g.layer_coupling) <= 1 + 1e-6)
    # a tiny model's numbers equal a direct, unsharded extraction
    from cape_hpc.internals import extract_internals, load_prompts
    from cape_hpc.models import load_model

    direct = extract_internals(load_model("tiny-opt"), load_prompts(), max_prompts=16, batch_size=8)
    stored = internals_of(tree, "tiny-opt")
    assert stored.provenance.options == direct.provenance.options
    got, ref = numbers(stored), numbers(direct)
    for k in ref:
        assert np.isfinite(ref[k]).any(), k
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_rank_sigkilled_mid_model_real_models(tmp_path):
    job = REPO / "jobs" / "smoke_tiny.yaml"
    ref = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(job), "--out-dir", str(tmp_path / "ref")],
                         capture_output=True, text=True, env=env(), timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "out"
    r = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(job), "--out-dir", str(out)],
                       capture_output=True, text=True, env=env(CAPE_SWEEP_FAILPOINT="after_work:tiny-opt"),
                       timeout=300)
    assert r.returncode != 0
    assert not shards.shard_path(out, "tiny-opt").exists()
    for p in (out / "shards").glob("[!.]*.h5"):
        assert shards.inspect_shard(p).status == "complete"
    r2 = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(job), "--out-dir", str(out), "--json"],
                        capture_output=True, text=True, env=env(), timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert {m["model"]: m["status"] for m in json.loads(r2.stdout)["models"]}["tiny-opt"] == "done"
    merged = {}
    for name in ("ref", "out"):
        m = subprocess.run(CAPE + ["merge", str(tmp_path / name), "-o", str(tmp_path / f"{name}.h5")],
                           capture_output=True, text=True, env=env())
        assert m.returncode == 0, m.stderr
        merged[name] = read_results(tmp_path / f"{name}.h5")
    assert sorted(merged["out"]["internals"]) == sorted(merged["ref"]["internals"]) == \
        ["tiny-gpt_neox", "tiny-llama", "tiny-opt", "tiny-qwen2"]
    for model in merged["ref"]["internals"]:
        a, b = numbers(internals_of(merged["ref"], model)), numbers(internals_of(merged["out"], model))
        for k in a:  # same code, same inputs, one thread per rank: bit-identical
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{model}{k}")
    with h5py.File(tmp_path / "ref.h5") as fa, h5py.File(tmp_path / "out.h5") as fb:
        assert list(fa["sweep/models/provenance_sha256"].asstr()) == list(fb["sweep/models/provenance_sha256"].asstr())


def test_unloadable_model_recorded_others_complete(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"""
name: bad
output_dir: {tmp_path / 'out'}
prompts: {{max_prompts: 4}}
models:
  - {{id: no-such-org/no-such-model-xyz, name: ghost, params: 7e9}}
  - {{id: tiny-llama, params: 1.3e5}}
  - {{id: tiny-gpt2, params: 1.3e5}}
""")
    r = subprocess.run(CAPE + ["sweep", str(job), "--json"], capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    runs = {m["model"]: m for m in json.loads(r.stdout)["models"]}
    assert runs["ghost"]["status"] == "failed" and "no-such-org/no-such-model-xyz" in runs["ghost"]["error"]
    assert runs["tiny-llama"]["status"] == runs["tiny-gpt2"]["status"] == "done"
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["models"]["ghost"]["status"] == "failed" and man["models"]["ghost"]["error"]
    assert not shards.shard_path(tmp_path / "out", "ghost").exists()


def test_two_ranks_thread_budget_with_numba_cache_cold_then_warm(tmp_path):
    """The ranks limit numba's threads through its API only.  Setting NUMBA_NUM_THREADS after numba had
    launched its pool made the next compile raise "Cannot set NUMBA_NUM_THREADS to a different value
    once the threads have been launched": with a cold numba cache every model failed, with a warm one
    (no compile) the sweep passed.  Both are run here; OMP_NUM_THREADS is unset so that the ranks
    compute their own budget (the node's cores split between the two ranks)."""
    budget = max(1, len(os.sched_getaffinity(0)) // 2)  # the runner's rule for two ranks on this node
    e = env(NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        e.pop(var, None)
    for run in ("cold", "warm"):
        out = tmp_path / run
        r = subprocess.run([str(MPIEXEC), "-n", "2"] + CAPE + ["sweep", str(REPO / "jobs" / "smoke_tiny.yaml"),
                           "--out-dir", str(out), "--json"], capture_output=True, text=True, env=e, timeout=600,
                           cwd=tmp_path)
        assert r.returncode == 0, f"{run}: {r.stderr[-3000:]}"
        assert "NUMBA_NUM_THREADS" not in r.stderr, f"{run}: {r.stderr[-3000:]}"
        res = json.loads(r.stdout)
        assert len(res["models"]) == 4 and all(m["status"] == "done" for m in res["models"]), (run, res["models"])
        shard_files = sorted((out / "shards").glob("*.h5"))
        assert len(shard_files) == 4, (run, shard_files)
        for shard in shard_files:
            with h5py.File(shard, "r") as f:
                threads = dict(kv.split("=") for kv in str(f.attrs["info_threads"]).split(","))
            assert int(threads["numba"]) == budget and int(threads["torch"]) == budget, (run, shard.name, threads)
        if run == "cold":
            assert any((tmp_path / "numba-cache").rglob("*.nbi")), "the cold run compiled nothing into the cache"
