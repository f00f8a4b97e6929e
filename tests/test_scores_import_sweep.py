"""Issue 23 item 2: benchmark scores computed in the sweep (lm_eval.simple_evaluate on an HFLM that
wraps the model already loaded), offline, on tasks defined here on local files (the shipped
multiple-choice items as two custom tasks)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is the optional extra 'scores' (pip install 'cape_hpc[scores]')")

from cape_hpc.io.data import data_file  # noqa: E402
from cape_hpc.sweep.scores import ScoresOptions, run_scores, score_table  # noqa: E402

MAP = ("HS=cape_mc_norm:acc_norm", "TQA=cape_mc:acc")


def write_tasks(folder: Path, n_items: int = 10) -> Path:
    """Two lm-eval tasks on a local JSONL copy of the first items of data/mc_items.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    items = [json.loads(line) for line in data_file("mc_items.jsonl").read_text().splitlines()[:n_items]]
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps({"question": r["question"], "choices": r["answers"], "label": r["correct"][0]})
                            + "\n" for r in items))
    for task, metric in (("cape_mc", "acc"), ("cape_mc_norm", "acc_norm")):
        (folder / f"{task}.yaml").write_text(
            f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\noutput_type: multiple_choice\n"
            'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
            f"metric_list:\n  - metric: {metric}\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 2.0\n")
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_scores_of_loaded_models_make_the_score_table(tasks):
    from cape_hpc.models import load_model

    opts = ScoresOptions(tasks=("cape_mc:0", "cape_mc_norm:0"), include_path=str(tasks), limit=6, metric=MAP)
    runs = []
    for alias, params in (("tiny-llama", 1.3e5), ("tiny-gpt2", 1.4e5)):
        loaded = load_model(alias)
        runs.append(run_scores(loaded, opts, name=alias, params=params, family="Tiny"))
        doc = json.loads(runs[-1].results_json)
        assert doc["n-samples"]["cape_mc"]["effective"] == 6 and doc["n-shot"]["cape_mc"] == 0
        assert doc["config"]["model_args"] == f"pretrained={loaded.source}"
    imp = score_table(runs, MAP)
    df = imp.frame()
    assert list(df["model"]) == ["tiny-llama", "tiny-gpt2"] and set(df["family"]) == {"Tiny"}
    for run, (_, row) in zip(runs, df.iterrows()):
        res = json.loads(run.results_json)["results"]
        assert row["TQA"] == pytest.approx(100 * res["cape_mc"]["acc,none"], rel=1e-12)
        assert row["HS"] == pytest.approx(100 * res["cape_mc_norm"]["acc_norm,none"], rel=1e-12)
        assert math.isnan(row["ARC"]) and row["tqa_variant"] == "mc1"
        for col in ("HS", "TQA"):   # a six-item task: the value is a multiple of 100/6
            assert abs(row[col] * 6 / 100 - round(row[col] * 6 / 100)) < 1e-9
    prov = json.loads(df["provenance"].iloc[0])
    assert prov["TQA"]["task_version"] == "2.0" and prov["TQA"]["harness"].startswith("lm-eval 0.4")


def test_mpiexec_sweep_with_scores_merges_a_table_that_analysis_reads(tasks, tmp_path):
    """`mpiexec -n 2 cape sweep` of a job with a scores: section: each rank scores the model it has
    loaded, the merge builds the table, `cape analyze --scores merged.h5` reads it."""
    import subprocess
    import sys

    import h5py

    from cape_hpc.io.scores import load_scores

    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("the venv has no mpiexec (pip install mpich)")
    job = tmp_path / "job.yaml"
    metric = ", ".join(f'"{m}"' for m in MAP)
    job.write_text(f"""
name: scored
output_dir: {tmp_path / 'out'}
defaults: {{dtype: float32, batch_size: 8}}
prompts: {{max_prompts: 4}}
scores: {{tasks: ["cape_mc:0", "cape_mc_norm:0"], include_path: {tasks}, limit: 6, metric: [{metric}]}}
models:
  - {{id: tiny-llama, params: 1.3e5, family: Tiny, n_layers: 3}}
  - {{id: tiny-gpt2, params: 2.6e5, family: Tiny, n_layers: 3}}
""")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    merged = tmp_path / "merged.h5"
    r = subprocess.run([str(mpiexec), "-n", "2", sys.executable, "-m", "cape_hpc.cli", "sweep", str(job), "--json",
                        "--merge", str(merged)], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert all(m["status"] == "done" for m in res["models"]) and {m["rank"] for m in res["models"]} == {0, 1}
    df = load_scores(merged)
    assert sorted(df["model"]) == ["tiny-gpt2", "tiny-llama"] and list(df["params"]) == [1.3e5, 2.6e5]
    with h5py.File(merged, "r") as f:
        assert {"internals", "scores_runs", "score_table"} <= set(f)
    for name in ("tiny-llama", "tiny-gpt2"):
        with h5py.File(tmp_path / "out" / "shards" / f"{name}.h5", "r") as f:
            assert f.attrs["info_scores_seconds"] > 0 and f.attrs["info_internals_seconds"] > 0
    r = subprocess.run([sys.executable, "-m", "cape_hpc.cli", "analyze", "--scores", str(merged), "--json", "-n", "100"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["inputs"]["base"]["n_rows"] == 2 and "coupling" in out["analysis"]


def test_lm_eval_request_bars_follow_progress_and_stdout_stays_clean(tasks, capfd):
    """Without a progress display (--progress off, or not a terminal) lm-eval's request bars are off;
    with one they show; lm-eval never writes to stdout (a --json output stays parseable)."""
    import io

    from cape_hpc import progress
    from cape_hpc.models import load_model

    opts = ScoresOptions(tasks=("cape_mc:0",), include_path=str(tasks), limit=3, metric=MAP)
    loaded = load_model("tiny-llama")
    capfd.readouterr()
    quiet = run_scores(loaded, opts, name="tiny-llama", params=1.3e5)
    out, err = capfd.readouterr()
    assert out == "" and "Running loglikelihood requests" not in err
    with progress.shown(progress.tqdm_display(io.StringIO())):
        shown = run_scores(loaded, opts, name="tiny-llama", params=1.3e5)
    out, err = capfd.readouterr()
    assert out == "" and "Running loglikelihood requests" in err
    assert json.loads(quiet.results_json)["results"] == json.loads(shown.results_json)["results"]
