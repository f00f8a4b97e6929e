"""From read files to score cells: the metric map applied to one file, then one cell per
(model, benchmark) chosen across files (the newest file per model, benchmark and n-shot), and the
check that one benchmark was measured the same way for every model.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from cape_hpc.errors import DataError
from cape_hpc.io.evalresults_map import MMLU_SUBJECTS, MetricRule, map_text
from cape_hpc.io.evalresults_readers import RunFile

__all__ = ["CellSource", "cells_of_file", "model_name", "choose_cells", "check_comparable"]


@dataclass
class CellSource:
    """One score cell and where it came from: value and standard error in percent (stderr NaN when
    the file gives none, and for the subject mean), the canonical task and metric, n-shot (-1
    unknown), the harness that wrote the file, its format, the task version(s), the file, its sha256
    and date (Unix time)."""

    model: str
    column: str
    value: float
    stderr: float
    task: str
    metric: str
    n_shot: int
    harness: str
    fmt: str
    task_version: str
    file: str
    sha256: str
    date: float


def model_name(run: RunFile) -> str:
    """The table's name of a file's model: the name the caller gave, else the id's last part with
    ``@revision`` for a non-default revision."""
    if run.name:
        return run.name
    name = run.model_id.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}@{run.revision}" if run.revision not in ("", "main") else name


def _cell(run: RunFile, rule: MetricRule, value: float, stderr: float, n_shot: int, version: str) -> CellSource:
    return CellSource(model_name(run), rule.column, 100.0 * value, 100.0 * stderr, rule.task, rule.metric, n_shot,
                      run.harness, run.fmt, version, run.path, run.sha256, run.date)


def _subject_mean(run: RunFile, rule: MetricRule) -> CellSource | None:
    have = {s: run.tasks[f"mmlu_{s}"] for s in MMLU_SUBJECTS
            if f"mmlu_{s}" in run.tasks and rule.metric in run.tasks[f"mmlu_{s}"].metrics}
    if not have:
        return None
    if len(have) < len(MMLU_SUBJECTS):
        missing = [s for s in MMLU_SUBJECTS if s not in have]
        raise DataError(f"{run.path}: MMLU as the subject mean needs all {len(MMLU_SUBJECTS)} subjects' "
                        f"{rule.metric}; {len(missing)} missing ({', '.join(missing[:3])}...)")
    shots = {t.n_shot for t in have.values()}
    if len(shots) > 1:
        raise DataError(f"{run.path}: the MMLU subjects were run with different n-shot settings {sorted(shots)}")
    versions = sorted({t.versions.get(rule.metric, "") for t in have.values()})
    mean = math.fsum(t.metrics[rule.metric] for t in have.values()) / len(have)
    return _cell(run, rule, mean, math.nan, shots.pop(), "/".join(versions))


def _group_shots(run: RunFile, task: str) -> int:
    """lm-eval 0.4 gives no n-shot for a group (``mmlu``): the one of its subtasks, when they agree."""
    shots = {t.n_shot for name, t in run.tasks.items() if name.startswith(task + "_") and t.n_shot >= 0}
    return shots.pop() if len(shots) == 1 else -1


def cells_of_file(run: RunFile, rules: tuple[MetricRule, ...]) -> list[CellSource]:
    """The cells the map finds in one file; DataError naming the file when it finds none."""
    cells = []
    for rule in rules:
        if rule.subtasks:
            cell = _subject_mean(run, rule)
        elif rule.task in run.tasks and rule.metric in run.tasks[rule.task].metrics:
            t = run.tasks[rule.task]
            shots = t.n_shot if t.n_shot >= 0 else _group_shots(run, rule.task)
            cell = _cell(run, rule, t.metrics[rule.metric], t.stderrs.get(rule.metric, math.nan), shots,
                         t.versions.get(rule.metric, ""))
        else:
            cell = None
        if cell is not None:
            cells.append(cell)
    if not cells:
        near = sorted(f"{task} {metric}" for task in run.tasks for metric in run.tasks[task].metrics
                      if task in {r.task for r in rules} or task.startswith("mmlu"))[:6]
        seen = f"; it has {', '.join(near)}" if near else ""
        raise DataError(f"{run.path}: {run.fmt} file for {run.model_id}: none of the mapped benchmarks "
                        f"({map_text(rules)}){seen}")
    return cells


def choose_cells(cells: list[CellSource]) -> tuple[list[CellSource], list[CellSource]]:
    """One cell per (model, column): the newest file per n-shot wins (the others are returned as
    superseded); one model with the same benchmark at two n-shot settings is an error."""
    groups: dict[tuple[str, str, int], list[CellSource]] = defaultdict(list)
    for c in cells:
        groups[(c.model, c.column, c.n_shot)].append(c)
    chosen: dict[tuple[str, str], CellSource] = {}
    superseded = []
    for (model, column, _shots), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        group.sort(key=lambda c: (c.date, c.file), reverse=True)
        superseded += group[1:]
        if (model, column) in chosen:
            other = chosen[(model, column)]
            raise DataError(f"{group[0].file}: model {model}, {column} at {group[0].n_shot}-shot, but "
                            f"{Path(other.file).name} has it at {other.n_shot}-shot; give the files of one "
                            "n-shot setting")
        chosen[(model, column)] = group[0]
    return list(chosen.values()), superseded


def check_comparable(cells: list[CellSource]) -> None:
    """Refuse one benchmark measured with different n-shot, harness generation (file format) or task
    version across models (``--allow-mixed`` skips this check)."""
    by_column: dict[str, dict[tuple, CellSource]] = defaultdict(dict)
    for c in cells:
        by_column[c.column].setdefault((c.n_shot, c.fmt, c.task_version), c)
    for column, settings in by_column.items():
        if len(settings) > 1:
            (a, b) = list(settings.values())[:2]
            raise DataError(f"{b.file}: {column} of {b.model} is {b.n_shot}-shot, {b.fmt}, task version "
                            f"{b.task_version or '?'}, but {a.model} ({Path(a.file).name}) is {a.n_shot}-shot, "
                            f"{a.fmt}, version {a.task_version or '?'}; pass --allow-mixed to accept this")
