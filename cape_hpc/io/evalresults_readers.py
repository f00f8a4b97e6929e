"""Readers of evaluation-results files, one per format, into one ``RunFile`` shape.

Formats (recognised by their keys, not by the file name):

lm-eval 0.4
    ``lm_eval --output_path DIR`` writes ``DIR/<model_name_sanitized>/results_<ISO date>.json``:
    ``results`` (task -> ``{"<metric>,<filter>": value, "<metric>_stderr,<filter>": value | "N/A",
    "alias": ...}``), group aggregates also under ``groups``, ``n-shot`` (task -> int; none for
    groups), ``versions``, ``config`` (``model_args``, ``model_num_parameters``, ``model_revision``),
    ``model_name``, ``date`` (Unix time), ``lm_eval_version`` (newer files) or ``git_hash``.
lm-eval 0.3
    ``results`` (task -> bare metric keys ``acc``, ``acc_stderr``), ``versions``, ``config``
    (``model``, ``model_args`` with ``pretrained=``/``revision=``, one ``num_fewshot`` per run).
Open LLM Leaderboard v1
    ``results`` keyed ``"harness|<task>|<n-shot>"`` (``hellaswag``, ``arc:challenge``,
    ``truthfulqa:mc`` with ``mc1``/``mc2``, ``hendrycksTest-<subject>``, ``winogrande``) plus
    ``"all"``, ``versions`` under the same keys, ``config_general.model_name`` (older files:
    ``config.model_name``).
Every Eval Ever (schema 0.x)
    ``model_info.id``, ``evaluation_results`` (``evaluation_name``, ``metric_config
    .evaluation_description``, ``score_details.score`` in [0, 1], -1 = not run); the n-shot from the
    detail ``"<name> - # train"`` when it is a whole number.

Every problem is a one-line ``DataError`` naming the file.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from cape_hpc.errors import DataError
from cape_hpc.io.evalresults_map import canonical_metric, canonical_task
from cape_hpc.io.text import read_text

__all__ = ["TaskScores", "RunFile", "read_run_file", "read_run_document", "FORMATS"]

FORMATS = ("lm-eval 0.4", "lm-eval 0.3", "Open LLM Leaderboard v1", "Every Eval Ever")


@dataclass
class TaskScores:
    """One task of one file: metric -> value (a fraction, as in the file), its standard error (NaN
    when absent or "N/A") and the version of the task that produced it ("" unknown: lm-eval 0.4's
    ``truthfulqa_mc1`` and ``truthfulqa_mc2`` are two tasks with their own versions); the n-shot (-1 unknown)."""

    metrics: dict[str, float] = field(default_factory=dict)
    stderrs: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    n_shot: int = -1


@dataclass
class RunFile:
    """One evaluation-results file, whatever its format: the model it evaluated (``model_id`` as the
    file names it, ``revision`` "" when the default branch), its parameter count (NaN when the file
    states none), the harness that wrote it, its date (Unix time) and its tasks (canonical names)."""

    path: str
    sha256: str
    fmt: str
    harness: str
    model_id: str
    revision: str
    params: float
    date: float
    tasks: dict[str, TaskScores]
    name: str = ""       # the table's name when the caller knows it (a sweep's model name)
    family: str = ""     # the model's family when the caller knows it (a sweep's job entry)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _add_metric(path: Path, scores: TaskScores, raw_task: str, key: str, value: Any, version: str) -> None:
    """Add one ``key: value`` of a task's entry (value or ``*_stderr``), keys made canonical."""
    name, comma, filt = key.partition(",")
    is_stderr = name.endswith("_stderr")
    metric = canonical_metric(raw_task, (name[:-len("_stderr")] if is_stderr else name) + comma + filt)
    number = _number(value)
    if is_stderr:
        scores.stderrs[metric] = math.nan if number is None else number
    elif number is not None:
        if not math.isfinite(number):
            raise DataError(f"{path}: task {raw_task!r}, metric {key!r}: {value!r} is not a finite number")
        scores.metrics[metric] = number
        scores.versions[metric] = version


def _merge_task(path: Path, tasks: dict[str, TaskScores], raw_task: str, entry: Any, n_shot: int,
                version: Any) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: results[{raw_task!r}] is not an object of metrics")
    task = canonical_task(raw_task)
    scores = tasks.setdefault(task, TaskScores(n_shot=n_shot))
    for key, value in entry.items():
        if key != "alias":
            _add_metric(path, scores, raw_task, str(key), value, "" if version is None else str(version))


def _model_args(config: dict) -> dict[str, str]:
    args = config.get("model_args") or ""
    if not isinstance(args, str):
        return {}
    return dict(part.split("=", 1) for part in args.split(",") if "=" in part)


def _date_from_name(path: Path) -> float:
    m = re.search(r"(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(?:\.\d+)?)", path.name)
    if m:
        return datetime.strptime(m[1].split(".")[0], "%Y-%m-%dT%H-%M-%S").replace(tzinfo=timezone.utc).timestamp()
    return path.stat().st_mtime if path.is_file() else 0.0


def _shots(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None and number == int(number) and number >= 0 else -1


def _read_lmeval04(path: Path, doc: dict) -> RunFile:
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    margs = _model_args(config)
    nshot, versions, configs = doc.get("n-shot") or {}, doc.get("versions") or {}, doc.get("configs") or {}
    tasks: dict[str, TaskScores] = {}
    for section in ("results", "groups"):
        for raw, entry in (doc.get(section) or {}).items():
            shots = nshot.get(raw, (configs.get(raw) or {}).get("num_fewshot") if isinstance(configs, dict) else None)
            _merge_task(path, tasks, raw, entry, _shots(shots), versions.get(raw))
    version = doc.get("lm_eval_version")
    harness = f"lm-eval {version}" if version else f"lm-eval 0.4 (git {doc.get('git_hash') or 'unknown'})"
    params = _number(config.get("model_num_parameters"))
    date = _number(doc.get("date"))
    return RunFile(str(path), "", FORMATS[0], harness,
                   str(doc.get("model_name") or margs.get("pretrained") or config.get("model") or ""),
                   str(config.get("model_revision") or margs.get("revision") or ""),
                   params if params and params > 0 else math.nan,
                   date if date is not None else _date_from_name(path), tasks)


def _read_lmeval03(path: Path, doc: dict) -> RunFile:
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    margs = _model_args(config)
    shots, versions = _shots(config.get("num_fewshot")), doc.get("versions") or {}
    tasks: dict[str, TaskScores] = {}
    for raw, entry in (doc.get("results") or {}).items():
        _merge_task(path, tasks, raw, entry, shots, versions.get(raw))
    return RunFile(str(path), "", FORMATS[1], "lm-eval 0.3", str(margs.get("pretrained") or config.get("model") or ""),
                   str(margs.get("revision") or ""), math.nan, _date_from_name(path), tasks)


def _read_leaderboard(path: Path, doc: dict) -> RunFile:
    general = doc.get("config_general") or doc.get("config") or {}
    versions = doc.get("versions") or {}
    tasks: dict[str, TaskScores] = {}
    for key, entry in (doc.get("results") or {}).items():
        parts = key.split("|")
        if len(parts) != 3 or parts[0] != "harness":
            continue  # "all" (the leaderboard's average) and non-harness suites
        _merge_task(path, tasks, parts[1], entry, _shots(int(parts[2]) if parts[2].isdigit() else None),
                    versions.get(key))
    sha = general.get("lighteval_sha") or general.get("model_sha") or ""
    return RunFile(str(path), "", FORMATS[2], f"Open LLM Leaderboard v1{f' ({sha[:10]})' if sha else ''}",
                   str(general.get("model_name") or ""), str(general.get("model_revision") or ""),
                   math.nan, _date_from_name(path), tasks)


_EEE_TASKS = (("hellaswag", "hellaswag"), ("truthfulqa", "truthfulqa"), ("arc_challenge", "arc_challenge"),
              ("arc-challenge", "arc_challenge"), ("winogrande", "winogrande"), ("mmlu", "mmlu"))


def _eee_metric(mconf: dict) -> str:
    desc = str(mconf.get("metric_name") or mconf.get("evaluation_description") or "").strip()
    token = desc.lower().replace(" ", "_")
    return token if token in ("acc", "acc_norm", "mc1", "mc2") else desc


def _read_eee(path: Path, doc: dict) -> RunFile:
    info = doc.get("model_info") or {}
    tasks: dict[str, TaskScores] = {}
    for ev in doc.get("evaluation_results") or []:
        name = str(ev.get("evaluation_name") or "")
        label = (name + " " + str((ev.get("source_data") or {}).get("dataset_name") or "")).lower()
        task = next((t for key, t in _EEE_TASKS if key in label.replace(" ", "_")), None)
        details = ev.get("score_details") or {}
        score = _number(details.get("score"))
        if task is None or score is None or score < 0:  # -1: "No matching runs"
            continue
        train = ((details.get("details") or {}).get(f"{name} - # train") or {}).get("score")
        scores = tasks.setdefault(task, TaskScores(n_shot=_shots(train)))
        scores.metrics[_eee_metric(ev.get("metric_config") or {})] = score
    meta = doc.get("source_metadata") or {}
    stamp = _number(doc.get("retrieved_timestamp")) or _number(_try_float(doc.get("retrieved_timestamp")))
    return RunFile(str(path), "", FORMATS[3],
                   f"Every Eval Ever {doc.get('schema_version', '?')} ({meta.get('source_name', '?')})",
                   str(info.get("id") or info.get("name") or ""), "", math.nan,
                   stamp if stamp is not None else _date_from_name(path), tasks)


def _try_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _detect(doc: dict) -> Callable[[Path, dict], RunFile] | None:
    if "evaluation_results" in doc and "model_info" in doc:
        return _read_eee
    results = doc.get("results")
    if not isinstance(results, dict):
        return None
    if "config_general" in doc or any(str(k).startswith("harness|") for k in results):
        return _read_leaderboard
    keys = [k for entry in results.values() if isinstance(entry, dict) for k in entry]
    if any("," in str(k) for k in keys) or "n-shot" in doc or "lm_eval_version" in doc:
        return _read_lmeval04
    return _read_lmeval03


def read_run_file(path: str | Path) -> RunFile:
    """Read one results JSON of any of ``FORMATS``; DataError naming the file when it is not one."""
    path = Path(path)
    text, digest = read_text(path, "results JSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    return read_run_document(doc, path, digest)


def read_run_document(doc: Any, path: str | Path, digest: str) -> RunFile:
    """A parsed results document (a file's, or ``lm_eval.simple_evaluate``'s return value, which has
    the same shape) as a ``RunFile``; ``path`` names it in errors, ``digest`` is its sha256."""
    path = Path(path)
    reader = _detect(doc) if isinstance(doc, dict) else None
    if reader is None:
        raise DataError(f"{path}: not an evaluation-results file (no 'results' object of tasks, no "
                        "'evaluation_results' list); formats read: " + ", ".join(FORMATS))
    run = reader(path, doc)
    run.sha256 = digest
    if not run.model_id:
        raise DataError(f"{path}: {run.fmt} file names no model (looked for the model name and "
                        "pretrained= in the model arguments)")
    for task, scores in run.tasks.items():
        for metric, value in scores.metrics.items():
            if metric in ("acc", "acc_norm", "mc1", "mc2") and not 0.0 <= value <= 1.0:
                raise DataError(f"{path}: task {task!r}, metric {metric!r}: {value!r} is not a fraction in [0, 1]")
    return run
