"""Score tables: load and validate the curated CSVs (or a user's table in the same schema).

Schemas (one row per model; header names exact, extra columns kept):

base scores (``data/base_models.csv``)
    model, family, params (parameter count, > 0), d_model, n_layers, n_heads (blank = unknown),
    HS, TQA (percent, required), ARC, WG, MMLU (percent; blank = not reported), tqa_variant
    (``mc1`` | ``mc2``, one variant per table), source (non-empty).
frontier (``data/frontier.csv``)
    model, lab, date (may be blank), SWE, GPQA (percent, required), cohort (``main`` |
    ``post_cutoff``), source.
loss (``data/pythia_loss.csv``)
    model, family, params (> 0), val_loss (> 0), source.

Validation errors name the file, the row (the CSV line number, header = line 1) and the column.
A blank cell is "not reported" and is allowed only where the schema says so; a non-numeric cell,
or an explicit NaN/inf, is always an error.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cape_hpc.errors import DataError
from cape_hpc.io.data import data_file
from cape_hpc.io.text import read_text
from cape_hpc.schema import Result

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used (CLI start-up)
    import pandas as pd

SCORE_COLUMNS = ("HS", "TQA", "ARC", "WG", "MMLU")
TQA_VARIANTS = ("mc1", "mc2")

_BASE = {
    "text": ("model", "family", "tqa_variant", "source"),
    "required_numbers": ("params", "HS", "TQA"),
    "optional_numbers": ("d_model", "n_layers", "n_heads", "ARC", "WG", "MMLU"),
    "positive": ("params", "d_model", "n_layers", "n_heads"),
    "percent": SCORE_COLUMNS,
}
_FRONTIER = {
    "text": ("model", "lab", "cohort", "source"),
    "optional_text": ("date",),
    "required_numbers": ("SWE", "GPQA"),
    "optional_numbers": (),
    "positive": (),
    "percent": ("SWE", "GPQA"),
}
_LOSS = {
    "text": ("model", "family", "source"),
    "required_numbers": ("params", "val_loss"),
    "optional_numbers": (),
    "positive": ("params", "val_loss"),
    "percent": (),
}


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], str]:
    text, sha = read_text(path, "CSV table")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DataError(f"{path}: not a CSV table ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row)")
    header = [h.strip() for h in rows[0]]
    seen: dict[str, int] = {}
    for i, h in enumerate(header, 1):
        if h in seen:
            raise DataError(f"{path}: row 1: column {h!r} appears twice in the header (columns {seen[h]} and {i})")
        seen[h] = i
    return header, rows[1:], sha


def _parse_number(path: Path, line: int, col: str, cell: str, required: bool) -> float:
    cell = cell.strip()
    if cell == "":
        if required:
            raise DataError(f"{path}: row {line}, column '{col}': missing value (required)")
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: row {line}, column '{col}': not a number: {cell!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: row {line}, column '{col}': {cell!r} is not a finite number")
    return value


def _records(path: Path, schema: dict) -> tuple[list[str], list[dict], str]:
    """(header, one dict per data row with its numbers parsed and ``_row`` set, sha256 of the file):
    the schema's checks, each error naming the file, the row and the column."""
    header, rows, digest = _read_csv(path)
    text_cols = schema["text"] + schema.get("optional_text", ())
    numeric = schema["required_numbers"] + schema["optional_numbers"]
    missing = [c for c in text_cols + numeric if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
                        f"(header has: {', '.join(header)})")
    idx = {c: i for i, c in enumerate(header)}
    records = []
    seen: dict[str, tuple[int, str]] = {}
    for offset, row in enumerate(rows):
        line = offset + 2
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(f"{path}: row {line}: {len(row)} fields, header has {len(header)}")
        rec: dict = {}
        for c in header:
            rec[c] = row[idx[c]].strip()
        for c in schema["text"]:
            if not rec[c]:
                raise DataError(f"{path}: row {line}, column '{c}': empty")
        for c in numeric:
            rec[c] = _parse_number(path, line, c, rec[c], c in schema["required_numbers"])
            if c in schema["positive"] and not math.isnan(rec[c]) and rec[c] <= 0:
                raise DataError(f"{path}: row {line}, column '{c}': must be > 0, got {rec[c]:g}")
            if c in schema["percent"] and not math.isnan(rec[c]) and not 0 <= rec[c] <= 100:
                raise DataError(f"{path}: row {line}, column '{c}': {rec[c]:g} is not a percentage in [0, 100]")
        name = rec["model"]
        if name.casefold() in seen:  # names differing only in case are one model (and one HDF5 name on some systems)
            first, other = seen[name.casefold()]
            same = "" if other == name else f" ({other!r}: names differing only in case are the same model)"
            raise DataError(f"{path}: row {line}, column 'model': duplicate model {name!r} "
                            f"(first at row {first}){same}")
        seen[name.casefold()] = (line, name)
        rec["_row"] = line
        records.append(rec)
    if not records:
        raise DataError(f"{path}: no data rows")
    return header, records, digest


def _load(path: str | os.PathLike, schema: dict) -> pd.DataFrame:
    import pandas as pd  # here, not at the top: the options import SCORE_COLUMNS (the CLI starts without pandas)

    path = Path(path)
    header, records, digest = _records(path, schema)
    df = pd.DataFrame.from_records(records, columns=header + ["_row"])
    for c in schema["required_numbers"] + schema["optional_numbers"]:
        df[c] = df[c].astype(float)
    df.attrs["path"] = str(path)
    df.attrs["sha256"] = digest
    return df


class ScoreColumns:
    """A validated table as numpy columns, without pandas (a new `cape nc` process reads its table
    this way: importing pandas costs more than its whole computation).

    The part of a DataFrame's interface the N_c path reads: ``columns``, ``attrs`` (``path``,
    ``sha256``), ``len()``, ``table[name]`` -> the column as a numpy array (numbers float64, text
    object arrays of str, ``_row`` int64: what ``DataFrame[name].to_numpy()`` gives for the same
    file), ``take(rows)`` and ``assign(name=values)`` (new tables, attrs kept)."""

    def __init__(self, data: dict[str, Any], attrs: dict[str, Any]):
        self._data = data
        self.columns = list(data)
        self.attrs = attrs

    @classmethod
    def read(cls, path: Path, schema: dict) -> "ScoreColumns":
        import numpy as np

        header, records, digest = _records(path, schema)
        numeric = set(schema["required_numbers"] + schema["optional_numbers"])
        data = {c: np.array([r[c] for r in records], dtype=float if c in numeric else object)
                for c in header}
        data["_row"] = np.array([r["_row"] for r in records], dtype=np.int64)
        return cls(data, {"path": str(path), "sha256": digest})

    def __len__(self) -> int:
        return len(self._data["_row"])

    def __getitem__(self, name: str):
        return self._data[name]

    def __setitem__(self, name: str, values) -> None:
        if name not in self._data:
            self.columns.append(name)
        self._data[name] = values

    def take(self, rows) -> "ScoreColumns":
        return ScoreColumns({k: v[rows] for k, v in self._data.items()}, dict(self.attrs))

    def assign(self, **columns) -> "ScoreColumns":
        return ScoreColumns({**self._data, **columns}, dict(self.attrs))


def _check_base(path: Path, table) -> None:
    """The checks of a base table that span rows (one TruthfulQA variant, a known one), over its
    columns: ``tqa_variant`` lower-cased in place and ``attrs['same_n_in_family']`` set; ``table`` is
    a DataFrame or a ScoreColumns."""
    import numpy as np

    variant = np.asarray(table["tqa_variant"], dtype=object)
    rows = np.asarray(table["_row"])
    lowered = np.array([v.lower() if isinstance(v, str) else v for v in variant], dtype=object)
    bad = [i for i, v in enumerate(lowered) if v not in TQA_VARIANTS]
    if bad:
        raise DataError(f"{path}: row {rows[bad[0]]}, column 'tqa_variant': {variant[bad[0]]!r} is not one of "
                        f"{', '.join(TQA_VARIANTS)}")
    table["tqa_variant"] = lowered
    variants = list(dict.fromkeys(lowered))
    if len(variants) > 1:
        first = next(i for i, v in enumerate(lowered) if v != lowered[0])
        raise DataError(f"{path}: row {rows[first]}, column 'tqa_variant': mixes TruthfulQA variants "
                        f"{sorted(variants)}; MC1 and MC2 scores are not comparable - split the table")
    keys = [(f, p if p == p else "nan") for f, p in zip(table["family"], np.asarray(table["params"], dtype=float))]
    count = Counter(keys)
    same = [str(m) for m, k in zip(table["model"], keys) if count[k] > 1]
    if same:
        # same N twice in one family is allowed (coupling marks that interval undefined), but say so
        table.attrs["same_n_in_family"] = sorted(same)


def load_scores(path: str | os.PathLike | None = None, *, frame: bool = True) -> pd.DataFrame | ScoreColumns:
    """Load and validate a base-model score table (default: the shipped curated cohort).

    Returns a DataFrame with the schema's columns plus ``_row`` (CSV line), attrs ``path`` and
    ``sha256``; with ``frame=False``, a CSV file is returned as ``ScoreColumns`` (the same columns
    and checks, no pandas).  Raises DataError naming file/row/column for any schema violation,
    including a table that mixes TruthfulQA MC1 and MC2.  A folder or a ``.json`` file is read as
    evaluation results (lm-eval, Open LLM Leaderboard v1, Every Eval Ever:
    ``cape_hpc.io.evalresults``).
    """
    path = Path(path) if path is not None else data_file("base_models.csv")
    if path.is_dir() or path.suffix.lower() == ".json":
        from cape_hpc.io.evalresults import load_results_table

        df = load_results_table(path)
    elif path.suffix.lower() in (".h5", ".hdf5"):   # a merged sweep's score table (scores: section)
        from cape_hpc.io.evalresults import load_store_table

        df = load_store_table(path)
    elif not frame:
        table = ScoreColumns.read(path, _BASE)
        _check_base(path, table)
        return table
    else:
        df = _load(path, _BASE)
    _check_base(path, df)
    return df.reset_index(drop=True)


def load_frontier(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load and validate the frontier panel (SWE-bench Verified vs GPQA Diamond)."""
    path = Path(path) if path is not None else data_file("frontier.csv")
    df = _load(path, _FRONTIER)
    bad = df.loc[~df["cohort"].isin(("main", "post_cutoff"))]
    if len(bad):
        r = bad.iloc[0]
        raise DataError(f"{path}: row {r['_row']}, column 'cohort': {r['cohort']!r} is not 'main' or 'post_cutoff'")
    return df.reset_index(drop=True)


def load_loss(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load and validate a validation-loss table (default: Pythia)."""
    path = Path(path) if path is not None else data_file("pythia_loss.csv")
    return _load(path, _LOSS).reset_index(drop=True)


@dataclass
class InputTable(Result):
    """An input table as an analysis used it, stored beside its results under ``/scores/<name>``:
    the file name, its sha256 (from the loader), the row count and the columns (``_row`` dropped)."""

    file: str
    sha256: str
    n_rows: int
    table: dict[str, Any]

    @classmethod
    def of(cls, df: pd.DataFrame) -> "InputTable":
        cols = [c for c in df.columns if c != "_row"]
        return cls(file=Path(str(df.attrs.get("path", ""))).name, sha256=str(df.attrs.get("sha256", "")),
                   n_rows=int(len(df)), table={str(c): df[c].to_numpy() for c in cols})
