"""Issue 26 item 11, second round: a job file's ``work: module:function`` is found beside the job
file; the sweep's prompt budget is the extraction's (a third set does not use it up); thread counts
are recorded in ``cape internals`` outputs and merged files, not only in shards; a steering item too
long for the model is one line naming its file and line.

Error cases run the real CLI in a subprocess and assert exit 2 and one line on stderr.
"""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from test_reliability_cli import cape, one_line_error

WORK_MODULE = """
from cape_hpc.sweep.work import synthetic_model


def beside(entry, job):
    out = synthetic_model(entry, job)
    out["info"]["from"] = "beside"
    return out
"""


def _job_beside_its_module(folder: Path, module: str) -> Path:
    """A job file in ``folder`` whose work function lives in ``folder/<module>.py``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(WORK_MODULE)
    job = folder / "job.yaml"
    job.write_text(textwrap.dedent(f"""
        name: beside
        work: {module}:beside
        output_dir: {folder / 'out'}
        models:
          - {{id: org/one, name: one, params: 1e8}}
    """))
    return job


# ------------------------------------------------------------------ work: module:function


def test_work_module_beside_the_job_file_is_found_by_dry_run_and_run(tmp_path):
    job = _job_beside_its_module(tmp_path / "jobs", "cape_test_work_beside_cli")
    r = cape("sweep", job, "--dry-run", "--json", cwd=tmp_path)     # cwd is not the job's folder
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["work"] == "cape_test_work_beside_cli:beside"
    r = cape("sweep", job, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "jobs" / "out" / "shards" / "one.h5").is_file()


def test_work_module_beside_the_job_file_leaves_sys_path_as_it_was(tmp_path):
    from cape_hpc.sweep.runner import run_sweep
    from cape_hpc.sweep.spec import load_job

    job = load_job(_job_beside_its_module(tmp_path / "jobs", "cape_test_work_beside_lib"))
    before = list(sys.path)
    res = run_sweep(job, use_mpi=False)
    assert res.exit_status() == 0 and [m.status for m in res.models] == ["done"], res.models
    assert sys.path == before
    assert sys.modules["cape_test_work_beside_lib"].__file__ == str(tmp_path / "jobs" / "cape_test_work_beside_lib.py")


def test_a_work_module_that_is_nowhere_is_one_line_in_dry_run(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("work: cape_test_no_such_module:f\nmodels: [{id: org/one, params: 1e8}]\n")
    one_line_error(cape("sweep", job, "--dry-run", cwd=tmp_path), "cape_test_no_such_module:f", "cannot be imported")


# ------------------------------------------------------------------ the sweep's prompt budget


def _three_sets(path: Path, per: int = 4) -> Path:
    path.write_text("".join(json.dumps({"id": f"{s}-{i}", "text": f"{s} prompt number {i}", "set": s, "domain": "d"})
                            + "\n" for s in ("reasoning", "truthfulness", "other") for i in range(per)))
    return path


def test_a_third_prompt_set_does_not_use_up_the_sweeps_max_prompts(tmp_path):
    """The sweep steers from the prompts the extraction measures: 4 prompts = 2 per measured set."""
    from cape_hpc.sweep.spec import load_job
    from cape_hpc.sweep.work import process_model

    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""
        output_dir: {tmp_path / 'out'}
        prompts: {{contrastive: {_three_sets(tmp_path / 'three.jsonl')}, max_prompts: 4}}
        internals: {{block_resamples: 0}}
        steering: {{enabled: true, max_new_tokens: 2}}
        models: [{{id: tiny-gpt2, params: 1e5}}]
    """))
    spec = load_job(job)
    out = process_model(spec.models[0], spec)
    res = out["internals"]
    assert (res.set_r, res.set_t, res.n_r, res.n_t) == ("reasoning", "truthfulness", 2, 2)
    (steered,) = out["steering"].values()
    assert steered.n_prompts == 2          # the truthfulness prompts measured (1 when 'other' took a share)


# ------------------------------------------------------------------ thread counts


def test_internals_output_records_the_thread_counts(tmp_path):
    import h5py

    from cape_hpc.io.store import read_results
    from cape_hpc.internals.results import InternalsResult

    out = tmp_path / "i.h5"
    r = cape("internals", "--model", "tiny-gpt2", "--max-prompts", 8, "--block-resamples", 0, "--out", out, "--json",
             env={"OMP_NUM_THREADS": "3"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    inputs = json.loads(r.stdout)["provenance"]["inputs"]
    assert inputs["threads_omp"] == "3" and int(inputs["threads_torch"]) >= 1 and "threads_numba" in inputs
    with h5py.File(out, "r") as f:
        (name,) = list(f["internals"])
    stored = InternalsResult.from_tree(read_results(out)["internals"][name], where=name)
    assert stored.provenance.inputs == inputs


def test_merged_file_records_each_shards_thread_counts(tmp_path):
    import h5py

    from cape_hpc.io.store import read_results
    from cape_hpc.sweep.merge import SweepIndex, merge_shards
    from cape_hpc.sweep.runner import run_sweep
    from cape_hpc.sweep.spec import load_job

    job = load_job(_job_beside_its_module(tmp_path / "jobs", "cape_test_work_beside_threads"))
    assert run_sweep(job, use_mpi=False).exit_status() == 0
    merge_shards(job.output_dir, tmp_path / "merged.h5")
    with h5py.File(Path(job.output_dir) / "shards" / "one.h5", "r") as f:
        shard_threads = f.attrs["info_threads"]
    index = SweepIndex.from_tree(read_results(tmp_path / "merged.h5")["sweep"], where="/sweep")
    assert index.provenance.inputs["one.threads"] == shard_threads and "omp=" in shard_threads


# ------------------------------------------------------------------ huge steering items


def _items(path: Path, huge_question: int | None = None, huge_answer: bool = False) -> Path:
    rows = [{"id": f"i{k}", "domain": "d", "question": f"What is {k}?", "answers": ["yes", "no"], "correct": [k % 2]}
            for k in range(8)]
    if huge_question is not None:
        rows[huge_question]["question"] = "word " * 3000         # far past tiny-gpt2's 256-token context
    if huge_answer:
        rows.append({"id": "big-answer", "domain": "d", "question": "q?", "answers": ["yes", "no " * 3000],
                     "correct": [0]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_huge_item_is_one_warning_line_naming_its_file_and_line(tmp_path):
    items = _items(tmp_path / "huge.jsonl", huge_question=3)
    r = cape("steer", "--model", "tiny-gpt2", "--items", items, "--max-neutral", 0, "--folds", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr                       # no tokenizer log line, no Python source line
    assert lines[0].startswith("cape steer: warning: 1 item(s) longer than the model's context of 256 tokens")
    assert lines[0].endswith(f"(first: {items}: line 4)"), lines[0]


def test_an_answer_that_can_never_fit_is_one_line_naming_its_file_and_line(tmp_path):
    items = _items(tmp_path / "ans.jsonl", huge_answer=True)
    line = one_line_error(cape("steer", "--model", "tiny-gpt2", "--items", items, "--max-neutral", 0, "--folds", 2,
                               cwd=tmp_path), f"{items}: line 9: answer 1 alone has")
    assert "can never be scored" in line
