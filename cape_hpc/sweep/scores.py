"""A sweep's benchmark scores: lm-evaluation-harness on the model a rank has already loaded.

A job's optional ``scores:`` section::

    scores:
      tasks: [hellaswag:10, truthfulqa_mc2:0, arc_challenge:25, winogrande:5, mmlu:5]  # TASK[:N-SHOT]
      include_path: tasks/          # a folder of custom task YAMLs (offline: dataset_path json + local files)
      metric: [TQA=cape_mc:acc]     # overrides of the metric map (cape_hpc.io.evalresults_map)
      limit: null                   # at most this many items per task (tests, smoke runs)
      batch_size: 8

``run_scores(loaded, opts, ...)`` wraps the loaded torch model in lm-eval's ``HFLM`` (no second
load), runs ``lm_eval.simple_evaluate`` once per n-shot setting and returns a ``ScoreRun`` whose
``results_json`` has the shape of an lm-eval 0.4 results file, with the sweep's model id, revision,
dtype and parameter count in its ``config`` (the internals' provenance).  ``score_table(runs)``
turns the runs of a merged sweep into the score table through the same metric map and checks as
``cape scores import`` (``cape_hpc.io.evalresults.import_runs``).  lm-eval is the optional extra
``scores`` (``pip install 'cape_hpc[scores]'``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cape_hpc import progress
from cape_hpc.errors import OptionError
from cape_hpc.io.evalresults import ImportOptions, ScoreImport, import_runs
from cape_hpc.io.evalresults_readers import read_run_document
from cape_hpc.options import Options, option
from cape_hpc.schema import Provenance, Result

__all__ = ["ScoresOptions", "ScoreRun", "run_scores", "score_table", "merge_scores", "SCORES_KEYS"]

#: the keys of a job file's ``scores:`` section (each a field of ``ScoresOptions``)
SCORES_KEYS = ("tasks", "include_path", "metric", "limit", "batch_size")

#: the parts of simple_evaluate's return value a shard keeps (the rest: per-task configs, the
#: environment dump, samples)
KEPT_KEYS = ("results", "groups", "group_subtasks", "versions", "n-shot", "n-samples", "higher_is_better",
             "lm_eval_version", "git_hash", "date", "transformers_version")


@dataclass(frozen=True)
class ScoresOptions(Options):
    """What a sweep's ``scores:`` section runs (lm-evaluation-harness tasks on each loaded model)."""

    tasks: tuple[str, ...] = option((), help="lm-eval tasks, each TASK or TASK:N-SHOT", metavar="TASK[:N]")
    include_path: str | None = option(None, help="folder of custom lm-eval task YAMLs (read offline)",
                                      metavar="DIR")
    metric: tuple[str, ...] = option((), help="metric-map overrides BENCH=TASK:METRIC for the score table",
                                     metavar="BENCH=TASK:METRIC")
    limit: int | None = option(None, help="at most this many items per task (none: all)", minimum=1)
    batch_size: int = option(8, help="lm-eval batch size", minimum=1)

    def check(self) -> None:
        for t in self.tasks:
            name, _, shots = t.partition(":")
            if not name or (shots and not shots.isdigit()):
                raise OptionError(f"option 'scores.tasks': {t!r} is not TASK or TASK:N-SHOT")
        ImportOptions(metric=self.metric)   # the overrides' own checks

    def resolved(self, base: Path) -> "ScoresOptions":
        """``include_path`` read from the job file's folder when it is relative and found there."""
        p = self.include_path
        if p is not None and not Path(p).is_absolute() and not Path(p).exists() and (base / p).exists():
            return self.replace(include_path=str(base / p))
        return self

    def by_shots(self) -> dict[int | None, list[str]]:
        """Tasks grouped by their n-shot (None: the task's default)."""
        out: dict[int | None, list[str]] = {}
        for t in self.tasks:
            name, _, shots = t.partition(":")
            out.setdefault(int(shots) if shots else None, []).append(name)
        return out


@dataclass
class ScoreRun(Result):
    """One model's lm-eval run in a sweep: what was loaded (source id, revision, dtype, parameter count),
    the tasks as asked, lm-eval's version, the wall time, and the results document (lm-eval 0.4 shape,
    JSON text)."""

    model: str
    source: str
    revision: str
    dtype: str
    params: float
    family: str
    tasks: list[str]
    lm_eval_version: str
    seconds: float
    results_json: str
    provenance: Provenance


#: the HFLM methods that draw lm-eval's request bars (the long ones: minutes per task)
_REQUEST_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def _request_bars_follow_progress(lm: Any) -> Any:
    """lm-eval's request bars show only where cape shows progress (``--progress``, a display installed:
    ``cape_hpc.progress``); otherwise its request methods get ``disable_tqdm=True``.  Its short bars
    (building contexts, the stderr bootstrap) are not reachable this way and still print."""
    if not progress.is_shown():
        for name in _REQUEST_METHODS:
            setattr(lm, name, functools.partial(getattr(lm, name), disable_tqdm=True))
    return lm


def _evaluate(lm: Any, tasks: list[str], shots: int | None, opts: ScoresOptions) -> dict:
    """One ``simple_evaluate``; what lm-eval prints (``bootstrapping for stddev``) goes to stderr, so a
    command's stdout (``--json``) stays machine-readable."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=opts.include_path) if opts.include_path else TaskManager()
    with contextlib.redirect_stdout(sys.stderr):
        return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, limit=opts.limit,
                                       task_manager=manager, log_samples=False, bootstrap_iters=1000)


def run_scores(loaded: Any, opts: ScoresOptions, *, name: str, params: float, family: str = "",
               revision: str = "", device: str = "cpu") -> ScoreRun:
    """Run ``opts.tasks`` on an already loaded model (``cape_hpc.models.LoadedModel``); ``revision``: the
    revision the job asked for (a checkpoint's ``step1000``; the loaded one is kept as ``model_sha``)."""
    from lm_eval.models.huggingface import HFLM

    t0 = time.perf_counter()
    lm = _request_bars_follow_progress(
        HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=opts.batch_size, device=device))
    doc: dict[str, Any] = {}
    for shots, tasks in opts.by_shots().items():
        part = _evaluate(lm, tasks, shots, opts) or {}
        for key in KEPT_KEYS:
            value = part.get(key)
            if isinstance(value, dict):
                doc.setdefault(key, {}).update(value)
            elif value is not None:
                doc[key] = value
    doc["model_name"] = str(loaded.source)
    doc["config"] = {"model": "hf", "model_args": f"pretrained={loaded.source}", "model_num_parameters": params,
                     "model_revision": revision or str(loaded.revision), "model_sha": str(loaded.revision),
                     "model_dtype": str(loaded.dtype),
                     "limit": opts.limit, "batch_size": opts.batch_size}
    return ScoreRun(model=name, source=str(loaded.source), revision=str(loaded.revision), dtype=str(loaded.dtype),
                    params=float(params), family=family, tasks=list(opts.tasks),
                    lm_eval_version=str(doc.get("lm_eval_version", "")), seconds=round(time.perf_counter() - t0, 3),
                    results_json=json.dumps(doc, sort_keys=True, default=str),
                    provenance=Provenance("cape_hpc.sweep.scores.run_scores", opts.to_dict()))


def score_table(runs: list[ScoreRun], metric: tuple[str, ...] = (), *, where: str = "sweep") -> ScoreImport:
    """The score table of a sweep's runs (one row per model, named as in the sweep), by the metric map
    with ``metric`` overrides; the runs' documents are read like lm-eval files (``where/<model>`` in errors)."""
    files = []
    for r in runs:
        text = r.results_json
        run = read_run_document(json.loads(text), Path(where) / r.model, hashlib.sha256(text.encode()).hexdigest())
        run.name, run.family = r.model, r.family
        files.append(run)
    return import_runs(files, ImportOptions(metric=tuple(metric)), [where])


#: where a merged sweep file keeps the scores: each model's run, and the table built from them
RUNS_GROUP = "scores_runs"
TABLE_GROUP = "score_table"


def merge_scores(out: Any, shards: list[tuple[Path, str]]) -> str:
    """Copy each shard's ``/scores/<model>`` run into the merged file ``out`` (an open h5py file) under
    ``/scores_runs/<model>`` and build ``/score_table`` (a ``ScoreImport``) from them.  Returns '' or why
    no table was built (no shard has scores; the runs do not make a valid table: the reason)."""
    import h5py

    from cape_hpc.errors import DataError
    from cape_hpc.io.store import read_tree, write_tree

    runs = []
    for path, name in shards:
        with h5py.File(path, "r") as src:
            if f"scores/{name}" not in src:
                continue
            run = ScoreRun.from_tree(read_tree(src[f"scores/{name}"]), where=f"{path}:/scores/{name}")
        write_tree(out.require_group(f"{RUNS_GROUP}/{name}"), run)
        runs.append(run)
    if not runs:
        return "no shard has scores (the job has no scores: section)"
    try:
        table = score_table(runs, tuple(runs[0].provenance.options.get("metric") or ()), where=str(out.filename))
    except DataError as exc:
        return str(exc)
    write_tree(out.require_group(TABLE_GROUP), table)
    return ""
