"""Evaluation results (lm-evaluation-harness 0.3/0.4, Open LLM Leaderboard v1, Every Eval Ever) into
a score table in the schema of ``cape_hpc.io.scores`` (``cape scores import``, ``--scores DIR|FILE.json``).

``import_results(paths, ImportOptions) -> ScoreImport``: every ``*.json`` under the paths is read
(``evalresults_readers``), the metric map applied (``evalresults_map``), one cell chosen per model and
benchmark (``evalresults_cells``: the newest file per n-shot wins), then each model gets its parameter
count (the file's ``config.model_num_parameters``, else ``--params FILE``, else the shipped table's
row of the same name, else an error naming the model) and its family (``--family REGEX=NAME`` rules,
else ``--family-file``, else the shipped table, else the name without its size token:
``Qwen2.5-1.5B`` -> ``Qwen2.5``).  ``ScoreImport.frame()`` is the table ``load_scores`` returns;
its ``provenance`` column and the companion JSON (``write_import``) keep each cell's file, sha256,
harness, task version and n-shot.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cape_hpc.errors import DataError
from cape_hpc.io.evalresults_cells import (CellSource, cells_of_file, check_comparable, choose_cells,
                                           model_name)
from cape_hpc.io.evalresults_map import REQUIRED, ImportOptions, map_text
from cape_hpc.io.evalresults_readers import RunFile, read_run_file
from cape_hpc.io.text import read_text
from cape_hpc.schema import Provenance, Result

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used (CLI start-up)
    import pandas as pd

__all__ = ["ImportOptions", "ModelRow", "ScoreImport", "import_results", "import_runs", "is_results_path", "load_results_table",
           "write_import", "companion_path", "load_store_table"]

SCORE_COLUMNS = ("HS", "TQA", "ARC", "WG", "MMLU")
TABLE_COLUMNS = ("model", "family", "params", "d_model", "n_layers", "n_heads", *SCORE_COLUMNS, "tqa_variant",
                 "source", "model_id", "revision", "step", "provenance")


@dataclass
class ModelRow:
    """One model of the imported table: name, the id and revision its files name, family and
    parameter count with where each came from (file, --params, registry, --family, --family-file, name)."""

    model: str
    model_id: str
    revision: str
    family: str
    family_from: str
    params: float
    params_from: str


@dataclass
class ScoreImport(Result):
    """An imported score table: its models, the chosen cells (percent), the cells superseded by a newer
    file, the models left out (``--skip-incomplete``) with the reason, the paths given and the files
    read, the metric map."""

    models: list[ModelRow]
    cells: list[CellSource]
    superseded: list[CellSource]
    skipped: list[str]
    paths: list[str]
    files: list[str]
    metric_map: str
    tqa_variant: str
    provenance: Provenance

    def frame(self) -> pd.DataFrame:
        """The score table (one row per model, columns of ``cape_hpc.io.scores`` plus ``model_id``,
        ``revision``, ``step`` (the training step a checkpoint revision names, else NaN),
        ``provenance`` and ``_row``), attrs ``path`` and ``sha256`` (of the inputs)."""
        by_model: dict[str, dict[str, CellSource]] = {}
        for c in self.cells:
            by_model.setdefault(c.model, {})[c.column] = c
        records = []
        for row in sorted(self.models, key=lambda r: (r.family, r.params, r.model)):
            cells = by_model[row.model]
            rec = {"model": row.model, "family": row.family, "params": row.params, "d_model": math.nan,
                   "n_layers": math.nan, "n_heads": math.nan, "tqa_variant": self.tqa_variant,
                   "source": "; ".join(sorted({f"{c.fmt} {Path(c.file).name}" for c in cells.values()})),
                   "model_id": row.model_id, "revision": row.revision, "step": _step(row.revision),
                   "provenance": json.dumps({col: _cell_provenance(c) for col, c in cells.items()}, sort_keys=True)}
            rec.update({col: cells[col].value if col in cells else math.nan for col in SCORE_COLUMNS})
            records.append(rec)
        import pandas as pd  # here: a sweep job's options import this module (the CLI starts without pandas)

        df = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
        df["_row"] = range(2, len(df) + 2)
        df.attrs["path"] = ", ".join(self.paths)
        df.attrs["sha256"] = hashlib.sha256("\n".join(sorted(c.sha256 for c in self.cells)).encode()).hexdigest()
        return df


def _step(revision: str) -> float:
    """The training step a checkpoint revision names (``step143000`` -> 143000), NaN for others."""
    m = re.fullmatch(r"(?:.*[-_/])?step[-_]?(\d+)", revision)
    return float(m[1]) if m else math.nan


def _cell_provenance(c: CellSource) -> dict:
    return {"file": c.file, "sha256": c.sha256, "harness": c.harness, "format": c.fmt, "task": c.task,
            "metric": c.metric, "task_version": c.task_version, "n_shot": c.n_shot,
            "stderr": None if math.isnan(c.stderr) else c.stderr}


def collect_files(paths: list[str | os.PathLike]) -> list[Path]:
    """The ``*.json`` files named or found (recursively, sorted) under the folders named."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.json") if f.is_file())
            if not found:
                raise DataError(f"{p}: no *.json evaluation-results file in this folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"{p}: results file or folder not found")
    return files


def _column_file(path: str, column: str) -> dict[str, str]:
    """A two-column CSV (model, ``column``) as {model name casefolded: value}."""
    text, _ = read_text(path, f"CSV of model,{column}")
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip() for h in rows[0]] if rows else []
    if "model" not in header or column not in header:
        raise DataError(f"{path}: needs the columns model and {column} (header has: {', '.join(header)})")
    i, j = header.index("model"), header.index(column)
    return {r[i].strip().casefold(): r[j].strip() for r in rows[1:] if len(r) > max(i, j) and r[i].strip()}


def _registry() -> dict[str, tuple[float, str]]:
    from cape_hpc.io.scores import load_scores

    df = load_scores()
    return {str(m).casefold(): (float(p), str(f)) for m, p, f in zip(df["model"], df["params"], df["family"])}


_SIZE = re.compile(r"[-_.]?\d+(?:\.\d+)?[mMbBkK](?=$|[-_.@])")


def _name_family(name: str) -> str:
    base = _SIZE.sub("", name.split("@")[0]).strip("-_.")
    return base or name


def _lookup(table: dict[str, str], run: RunFile, name: str) -> str | None:
    for key in (name, name.split("@")[0], run.model_id):
        if key.casefold() in table:
            return table[key.casefold()]
    return None


def _params(run: RunFile, name: str, given: dict[str, str], registry: dict, opts: ImportOptions) -> tuple[float, str]:
    if not math.isnan(run.params):
        return run.params, "file"
    text = _lookup(given, run, name)
    if text is not None:
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{opts.params}: model {name}: params {text!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise DataError(f"{opts.params}: model {name}: params must be a positive count, got {text!r}")
        return value, "--params"
    hit = registry.get(name.split("@")[0].casefold())
    if hit is not None:
        return hit[0], "registry"
    raise DataError(f"{run.path}: model {run.model_id}: the file states no parameter count and "
                    f"{'--params ' + opts.params if opts.params else 'no --params CSV'} nor the shipped table "
                    f"names {name!r}; give --params CSV (columns model,params)")


def _family(run: RunFile, name: str, given: dict[str, str], registry: dict, opts: ImportOptions) -> tuple[str, str]:
    if run.family:
        return run.family, "job"
    for regex, family in opts.family_rules():
        if regex.search(run.model_id) or regex.search(name):
            return family, "--family"
    hit = _lookup(given, run, name)
    if hit:
        return hit, "--family-file"
    reg = registry.get(name.split("@")[0].casefold())
    if reg is not None:
        return reg[1], "registry"
    return _name_family(name.rstrip("/").rsplit("/", 1)[-1]), "name"


def _model_rows(runs: dict[str, RunFile], opts: ImportOptions) -> list[ModelRow]:
    given_params = _column_file(opts.params, "params") if opts.params else {}
    given_family = _column_file(opts.family_file, "family") if opts.family_file else {}
    registry = _registry()
    rows = []
    for name, run in sorted(runs.items()):
        params, p_from = _params(run, name, given_params, registry, opts)
        family, f_from = _family(run, name, given_family, registry, opts)
        rows.append(ModelRow(name, run.model_id, run.revision, family, f_from, params, p_from))
    return rows


def _complete(cells: list[CellSource], runs: dict[str, RunFile], opts: ImportOptions,
              rules: dict[str, str]) -> tuple[list[CellSource], list[str]]:
    """Drop (``--skip-incomplete``) or refuse models without a required benchmark; ``rules``:
    column -> its rule as text."""
    have: dict[str, set[str]] = {}
    for c in cells:
        have.setdefault(c.model, set()).add(c.column)
    skipped: dict[str, str] = {}
    for model in sorted(have):
        missing = [col for col in REQUIRED if col not in have[model]]
        if not missing:
            continue
        files = sorted({Path(c.file).name for c in cells if c.model == model})
        why = f"model {model} ({', '.join(files)}): no {' and no '.join(rules[m] for m in missing)}"
        if not opts.skip_incomplete:
            raise DataError(f"{runs[model].path}: {why}; the score table needs HS and TQA "
                            "(--metric maps another task, --skip-incomplete leaves the model out)")
        skipped[model] = why
    return [c for c in cells if c.model not in skipped], list(skipped.values())


def import_results(paths: list[str | os.PathLike], opts: ImportOptions | None = None) -> ScoreImport:
    """Read evaluation-results files (folders searched recursively) into one score table.

    Raises DataError naming the file (and model, task or metric) for a file that is not one of the
    formats, carries none of the mapped benchmarks, or a model that lacks HS/TQA, a parameter
    count, or whose benchmark mixes settings across models (unless ``allow_mixed``)."""
    return import_runs([read_run_file(f) for f in collect_files(paths)], opts, [str(p) for p in paths])


def import_runs(runs: list[RunFile], opts: ImportOptions | None = None, paths: list[str] | None = None) -> ScoreImport:
    """``import_results`` of documents already read (``read_run_document``: a sweep's lm-eval runs)."""
    opts = opts or ImportOptions()
    rules = opts.rules()
    by_model: dict[str, RunFile] = {}
    cells: list[CellSource] = []
    digests: dict[str, str] = {}
    for run in runs:
        cells += cells_of_file(run, rules)
        by_model.setdefault(model_name(run), run)
        f = Path(run.path)
        digests[f"{f.parent.name}__{f.name}"] = run.sha256   # no "/" in a key (HDF5 names)
    chosen, superseded = choose_cells(cells)
    chosen, skipped = _complete(chosen, by_model, opts, {r.column: r.describe() for r in rules})
    if not chosen:
        raise DataError(f"{', '.join(paths or [r.path for r in runs])}: no model with both HS and TQA "
                        f"({'; '.join(skipped)})")
    if not opts.allow_mixed:
        check_comparable(chosen)
    kept = {c.model for c in chosen}
    rows = _model_rows({m: r for m, r in by_model.items() if m in kept}, opts)
    tqa = next(r.metric for r in rules if r.column == "TQA")
    prov = Provenance(method="scores_import", options=opts.to_dict(), inputs=digests)
    return ScoreImport(rows, chosen, superseded, skipped, list(paths or []), [r.path for r in runs],
                       map_text(rules), "mc2" if tqa == "mc2" else "mc1", prov)


def is_results_path(path: str | os.PathLike) -> bool:
    """True for what ``--scores`` reads as evaluation results: a folder or a ``.json`` file."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".json"


def load_store_table(path: str | os.PathLike, group: str = "/score_table") -> pd.DataFrame:
    """``--scores merged.h5``: the score table a sweep with a ``scores:`` section merged (``group``)."""
    from cape_hpc.errors import StoreError
    from cape_hpc.io.store import read_results

    try:
        tree = read_results(path, group)
    except StoreError as exc:
        if f"no group {group}" not in str(exc):
            raise
        raise DataError(f"{path}: no {group} group (a score table is merged from a sweep whose job has a "
                        "scores: section; `cape merge` says why it built none)") from None
    return ScoreImport.from_tree(tree, where=f"{path}:{group}").frame()


def load_results_table(path: str | os.PathLike) -> pd.DataFrame:
    """``--scores DIR|FILE.json``: the imported table with the default options (``cape scores import``
    gives the options: --params, --family, --metric ...)."""
    return import_results([path]).frame()


def companion_path(csv_path: str | os.PathLike) -> Path:
    """The provenance JSON beside a table: ``table.csv`` -> ``table.provenance.json``."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".provenance.json")


def _csv_text(df: pd.DataFrame) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    cols = [c for c in df.columns if c != "_row"]
    w.writerow(cols)
    for rec in df[cols].itertuples(index=False):
        w.writerow(["" if isinstance(v, float) and math.isnan(v) else
                    (str(int(v)) if isinstance(v, float) and c == "params" and v == int(v) else
                     repr(v) if isinstance(v, float) else str(v)) for c, v in zip(cols, rec)])
    return out.getvalue()


def write_import(imp: ScoreImport, out: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path]:
    """Write the table as CSV and its provenance as the companion JSON (each published atomically;
    an existing different file is kept and an error raised unless ``force``)."""
    from cape_hpc.io.publication import check_target, publish, temp_path
    from cape_hpc.schema import to_jsonable

    targets = [(Path(out), _csv_text(imp.frame())),
               (companion_path(out), json.dumps(to_jsonable(imp), indent=1, sort_keys=False) + "\n")]
    for path, _ in targets:
        check_target(path, "-o")
        if path.exists() and not force and path.read_text(encoding="utf-8", errors="replace") != _:
            raise DataError(f"{path} exists with different content; pass --force to overwrite it "
                            "(the existing file is kept)")
    for path, text in targets:
        tmp = temp_path(path)
        Path(tmp).write_text(text, encoding="utf-8")
        publish(tmp, path, force=True)
    return targets[0][0], targets[1][0]
