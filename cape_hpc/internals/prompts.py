"""Prompt sets: JSONL, one prompt a line, fields id, text, set, domain (and ``true`` for calibration).

The project's own sets live in ``data/prompts/``: ``contrastive.jsonl`` (reasoning vs
truthfulness prompts over the factual, reasoning and ethical domains) and ``calibration.jsonl``
(true and false statements for the steering direction).  Users pass their own files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cape_hpc.errors import DataError
from cape_hpc.io.data import data_file
from cape_hpc.io.text import jsonl_records, read_text

REQUIRED = ("id", "text", "set")


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    set: str
    domain: str = ""
    true: bool | None = None


@dataclass
class PromptSet:
    prompts: list[Prompt]
    path: str = ""
    sha256: str = ""
    sets: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not self.sets:
            seen: list[str] = []
            for p in self.prompts:
                if p.set not in seen:
                    seen.append(p.set)
            self.sets = tuple(seen)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    def subset(self, n: int | None) -> "PromptSet":
        """The first ``n`` prompts of each set (keeps the sets balanced); None = all."""
        if n is None or n >= len(self.prompts):
            return self
        per = {s: 0 for s in self.sets}
        k = max(1, n // max(1, len(self.sets)))
        keep = []
        for p in self.prompts:
            if per[p.set] < k:
                keep.append(p)
                per[p.set] += 1
        return PromptSet(keep, path=self.path, sha256=self.sha256, sets=self.sets)

    def measured(self, sets: tuple[str, str], n: int | None) -> "PromptSet":
        """The prompts of the two ``sets`` a coupling measures, at most ``n`` (``n // 2`` of each):
        with a budget, a third set in the file is dropped first so it cannot use the budget up."""
        if n is None:
            return self
        if len(self.sets) > 2:
            kept = [p for p in self.prompts if p.set in sets]
            return PromptSet(kept, path=self.path, sha256=self.sha256).subset(n)
        return self.subset(n)

    def select(self, name: str) -> list[Prompt]:
        return [p for p in self.prompts if p.set == name]


def load_prompts(path: str | Path | None = None, *, calibration: bool = False) -> PromptSet:
    """Read and check a JSONL prompt file (default: the project's contrastive set, or its
    calibration set with ``calibration=True``).  Raises DataError naming the file, line and field."""
    default = "calibration.jsonl" if calibration else "contrastive.jsonl"
    p = Path(path) if path is not None else data_file("prompts", default)
    text, sha = read_text(p, "prompt file")
    prompts: list[Prompt] = []
    ids: dict[str, str] = {}         # casefolded id -> id as first written
    set_names: dict[str, str] = {}
    for lineno, rec in jsonl_records(p, text):
        for key in REQUIRED:
            if key not in rec:
                raise DataError(f"{p}: line {lineno}: missing field {key!r}")
        if not isinstance(rec["text"], str) or not rec["text"].strip():
            raise DataError(f"{p}: line {lineno}: field 'text' must be a non-empty string")
        for key in ("id", "text", "set", "domain"):
            v = rec.get(key)
            if isinstance(v, str):  # lone surrogates: refused by jsonl_records for every field
                if "\0" in v:
                    raise DataError(f"{p}: line {lineno}: field {key!r} contains a NUL character")
        pid = str(rec["id"])
        if pid.casefold() in ids:
            first = ids[pid.casefold()]
            raise DataError(f"{p}: line {lineno}: duplicate id {pid!r}"
                            + ("" if first == pid else f" (same as {first!r} up to case)"))
        ids[pid.casefold()] = pid
        if rec["set"] is None or not str(rec["set"]).strip():
            raise DataError(f"{p}: line {lineno}: field 'set' must name a prompt set, got {rec['set']!r}")
        sname = str(rec["set"])
        if sname.casefold() in set_names and set_names[sname.casefold()] != sname:
            raise DataError(f"{p}: line {lineno}: set {sname!r} differs only in case from set "
                            f"{set_names[sname.casefold()]!r}")
        set_names[sname.casefold()] = sname
        truth = rec.get("true")
        if truth is not None and not isinstance(truth, bool):
            raise DataError(f"{p}: line {lineno}: field 'true' must be true or false, got {truth!r}")
        prompts.append(Prompt(id=pid, text=rec["text"], set=str(rec["set"]), domain=str(rec.get("domain", "")),
                              true=truth))
    if not prompts:
        raise DataError(f"{p}: no prompts (the file is empty)")
    if calibration:
        if any(q.true is None for q in prompts):
            bad = next(i for i, q in enumerate(prompts) if q.true is None)
            raise DataError(f"{p}: prompt {prompts[bad].id!r}: calibration statements need a boolean field 'true'")
        if not any(q.true for q in prompts) or all(q.true for q in prompts):
            raise DataError(f"{p}: calibration needs both true and false statements")
    return PromptSet(prompts, path=str(p), sha256=sha)
