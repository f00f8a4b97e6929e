"""The GPU memory plan of a sweep (cape_hpc.sweep.gpus): bytes of the weights from the parameter
count (hand computed), GPUs needed for a GPU size, the job's own ``gpus:`` kept or refused, a model
that cannot fit a rank refused by name; the paper's second-compression models (jobs/paper_large.yaml)
need the GPU counts its header states."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from cape_hpc.errors import OptionError
from cape_hpc.models.options import parse_max_memory, parse_size
from cape_hpc.sweep.gpus import (GIB, USABLE, gpus_needed, gpus_per_rank, max_memory_map, plan_gpus, rank_placement,
                                 weight_bytes)

ROOT = Path(__file__).resolve().parents[1]


def test_weight_bytes_and_gpus_needed_by_hand():
    assert weight_bytes(68.98e9) == 137_960_000_000                     # Llama-2-70B, bf16: 2 bytes each
    assert weight_bytes(1e9, "float32") == 4_000_000_000 and weight_bytes(3, "float16") == 6
    with pytest.raises(OptionError, match="int8"):
        weight_bytes(1e9, "int8")
    # 128.5 GiB over GPUs of 80 GiB filled to 90 % (72 GiB): 2; of 40 GiB (36 GiB): 4
    assert gpus_needed(137.96e9, 80 * GIB) == 2 and gpus_needed(137.96e9, 40 * GIB) == 4
    assert gpus_needed(72 * GIB, 80 * GIB) == 1 and gpus_needed(72 * GIB + 1, 80 * GIB) == 2
    assert gpus_needed(0, 80 * GIB) == 1 and USABLE == 0.9


def test_plan_keeps_or_refuses_the_jobs_gpus():
    rows = [("small", 1e9, "bfloat16", None, None), ("big", 70e9, "bfloat16", None, None),
            ("given", 70e9, "bfloat16", 3, None), ("unknown", None, "float32", None, None),
            ("measured", None, "bfloat16", None, 100 * GIB)]
    plan = plan_gpus(rows, 80 * GIB)
    assert [(g.model, g.gpus, g.source) for g in plan] == [
        ("small", 1, "plan"), ("big", 2, "plan"), ("given", 3, "job"), ("unknown", 1, "unknown size"),
        ("measured", 2, "plan")]
    assert plan[1].weight_bytes == 140e9 and math.isnan(plan[3].weight_bytes) and math.isnan(plan[3].params)
    assert gpus_per_rank(plan) == 3 and gpus_per_rank([]) == 1
    with pytest.raises(OptionError, match=r"jobs/x.yaml: big: gpus: 1, but its 130.4 GiB \(bfloat16\) need 2 GPUs"):
        plan_gpus([("big", 70e9, "bfloat16", 1, None)], 80 * GIB, where="jobs/x.yaml")
    with pytest.raises(OptionError, match=r"big: needs 4 GPUs of 40 GiB .* more than the 2 a rank may have"):
        plan_gpus([("big", 70e9, "bfloat16", None, None)], 40 * GIB, max_gpus=2)


def test_max_memory_and_sizes():
    assert max_memory_map(2, 80 * GIB) == {0: int(72 * GIB), 1: int(72 * GIB)}
    assert parse_size("80GiB", "x") == 80 * 2 ** 30 and parse_size("40 GB", "x") == 40 * 10 ** 9
    assert parse_size("1.5MiB", "x") == 1572864 and parse_size(1000, "x") == 1000
    for bad in ("", "0", "-1GiB", "80 GiBs", "lots"):
        with pytest.raises(OptionError, match="--gpu-memory"):
            parse_size(bad, "--gpu-memory")
    assert parse_max_memory("0=70GiB, cpu=1000") == {0: 70 * GIB, "cpu": 1000}
    for bad in ("gpu0=1", "0:1GiB", "0=fast"):
        with pytest.raises(OptionError, match="--max-memory"):
            parse_max_memory(bad)


def test_paper_large_job_needs_what_its_header_says():
    from cape_hpc.sweep.spec import estimate_memory_bytes, load_job

    from cape_hpc.sweep.gpus import GpuPlanOptions, plan_job

    job = load_job(ROOT / "jobs" / "paper_large.yaml")
    assert [g.gpus for g in plan_job(job)] == [2, 2, 2, 2, 2, 1]                          # 80 GiB, largest first
    assert [g.gpus for g in plan_job(job, opts=GpuPlanOptions(gpu_memory="40GiB"))] == [4, 4, 4, 4, 3, 2]
    with pytest.raises(OptionError, match=r"paper_large.yaml: Qwen-72B: needs 4 GPUs .* more than the 3"):
        plan_job(job, opts=GpuPlanOptions(gpu_memory="40GiB", max_gpus=3))
    with pytest.raises(OptionError, match="--gpu-memory"):
        GpuPlanOptions(gpu_memory="big")
    from cape_hpc.sweep.gpus import model_placement

    qwen, opt30 = job.model("Qwen-72B"), job.model("OPT-30B")
    assert model_placement(opt30, job, 1, 80 * GIB) is None
    assert model_placement(qwen, job, 2, 80 * GIB)["max_memory"] == {0: int(72 * GIB), 1: int(72 * GIB)}
    assert model_placement(qwen, job, 8, 40 * GIB, rank=1)["max_memory"].keys() == {4, 5, 6, 7}
    want = {"OPT-30B": (1, 2), "OPT-66B": (2, 4), "Llama-2-70B": (2, 4), "Qwen-72B": (2, 4),
            "Llama-3.1-70B": (2, 4), "Mixtral-8x7B": (2, 3)}
    assert {m.name for m in job.models} == set(want) and {m.load.dtype for m in job.models} == {"bfloat16"}
    header = (ROOT / "jobs" / "paper_large.yaml").read_text()
    for gb, k in ((80, 0), (40, 1)):
        plan = plan_gpus([(m.name, m.params, m.load.dtype, None, estimate_memory_bytes(m, job)) for m in job.models],
                         gb * GIB)
        assert {g.model: g.gpus for g in plan} == {n: v[k] for n, v in want.items()}
        for g in plan:
            line = next(s for s in header.splitlines() if s.startswith(f"#   {g.model} "))
            assert f"{g.weight_bytes / GIB:.1f} GiB" in line and line.split()[-2 + k] == str(g.gpus)


def test_rank_placement():
    """One GPU: the rank's own device (None); more: balanced over the first GPUs it needs, each filled
    to 90 %; more than the rank sees: refused with the sbatch option to use."""
    assert rank_placement("small", 10 * GIB, None, 1, 80 * GIB) is None
    assert rank_placement("unknown", None, None, 1, 80 * GIB) is None
    p = rank_placement("big", 130 * GIB, None, 4, 80 * GIB)
    assert p == {"device_map": "balanced", "max_memory": {0: int(72 * GIB), 1: int(72 * GIB)}}
    assert rank_placement("given", 10 * GIB, 3, 4, 80 * GIB)["max_memory"].keys() == {0, 1, 2}
    with pytest.raises(OptionError, match=r"big: needs 2 GPUs of 80 GiB, this rank sees 1 .*--gpus-per-task=2"):
        rank_placement("big", 130 * GIB, None, 1, 80 * GIB)
    # ranks sharing a node's 8 GPUs: rank 1 takes GPUs 2-3, rank 5 wraps to GPUs 2-3 of 4 groups
    assert rank_placement("big", 130 * GIB, None, 8, 80 * GIB, rank=1)["max_memory"].keys() == {2, 3}
    assert rank_placement("big", 130 * GIB, None, 8, 80 * GIB, rank=5)["max_memory"].keys() == {2, 3}
    assert rank_placement("big", 130 * GIB, None, 3, 80 * GIB, rank=1)["max_memory"].keys() == {0, 1}


def test_sweep_dry_run_prints_gpus_per_model_and_refuses_what_cannot_fit(capsys, tmp_path):
    import json

    from cape_hpc.cli import main

    job = str(ROOT / "jobs" / "paper_large.yaml")
    out = ["--out-dir", str(tmp_path / "res")]
    assert main(["sweep", job, "--dry-run", "--json", *out]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["gpus"] == {"Qwen-72B": 2, "Llama-3.1-70B": 2, "Llama-2-70B": 2, "OPT-66B": 2, "Mixtral-8x7B": 2,
                            "OPT-30B": 1} and plan["gpus_per_rank"] == 2
    assert main(["sweep", job, "--dry-run", "--gpu-memory", "40GiB", *out]) == 0
    text = capsys.readouterr().out
    row = next(s for s in text.splitlines() if "Mixtral-8x7B" in s)
    assert row.split()[-3] == "3" and "sbatch --gpus-per-task=4" in text
    for argv, want in ((["--gpus-per-task"], "2"), (["--gpus-per-task", "--gpu-memory", "40GiB"], "4"),
                       (["--gpus-per-task", "--gpu-memory", "40GiB", "--only", "OPT-30B"], "2")):
        assert main(["sweep", job, *argv]) == 0
        assert capsys.readouterr().out.strip() == want
    assert main(["sweep", job, "--dry-run", "--gpu-memory", "40GiB", "--max-gpus", "3", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Qwen-72B: needs 4 GPUs" in err[0] and "--max-gpus" in err[0]


@pytest.mark.parametrize("template, env, want", [
    ("sweep.sbatch", {"SLURM_GPUS_PER_TASK": "1"}, "needs 2 GPUs per rank (its largest model); this job has "
                                                   "--gpus-per-task=1"),
    ("sweep.sbatch", {"SLURM_GPUS_PER_TASK": "h100:1"}, "--gpus-per-task=1"),
    ("sweep_array.sbatch", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_GPUS_ON_NODE": "1"},
     "array task 0: its model needs 2 GPUs; this task has 1 (sbatch --gpus=2)"),
])
def test_slurm_templates_stop_a_rank_with_too_few_gpus(template, env, want):
    """Both templates compare the GPUs Slurm gave against `cape sweep JOB --gpus-per-task` and stop
    with exit 2 before any model loads (the CPU runs of scripts/ci_slurm.sh set no GPUs: no check)."""
    import os
    import subprocess
    import sys

    e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    e.update(env, CAPE_VENV=str(Path(sys.executable).parent.parent), CAPE_REPO=str(ROOT))
    r = subprocess.run(["bash", str(ROOT / "slurm" / template), str(ROOT / "jobs" / "paper_large.yaml")],
                       capture_output=True, text=True, env=e, timeout=300)
    assert r.returncode == 2 and want in r.stderr, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])


def test_job_gpus_key(tmp_path, capsys):
    """A model entry's gpus: is read (a positive integer, refused otherwise naming file, entry and key),
    kept when it is at least the plan's count and refused by --dry-run when below it."""
    from cape_hpc.cli import main
    from cape_hpc.errors import DataError
    from cape_hpc.sweep.gpus import plan_job
    from cape_hpc.sweep.spec import load_job

    def job(gpus) -> Path:
        p = tmp_path / "j.yaml"
        p.write_text("name: j\ndefaults: {dtype: bfloat16}\nmodels:\n"
                     f"  - {{id: x/big, name: big, params: 70e9, gpus: {gpus}}}\n"
                     "  - {id: x/small, name: small, params: 1e9}\n")
        return p

    assert [g.gpus for g in plan_job(load_job(job(3)))] == [3, 1]
    for bad in (0, "two"):
        with pytest.raises(DataError, match=r"j.yaml: models\[0\]\.gpus"):
            load_job(job(bad))
    assert main(["sweep", str(job(1)), "--dry-run", "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "j.yaml: big: gpus: 1, but its" in err and "GiB (bfloat16) need 2 GPUs of 80 GiB" in err
