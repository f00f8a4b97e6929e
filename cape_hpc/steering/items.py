"""Multiple-choice items and true/false statements (docs/METHODS.md §4.3): loading, validation, the
texts that are scored.  Torch-free.

One JSON object a line.  A multiple-choice item::

    {"id": "fact-001", "domain": "factual", "question": "...", "answers": ["...", "..."], "correct": [0]}

``answers``: 2 to 5 distinct non-empty strings; ``correct``: the indices of the true answers (at
least one, not all).  A true/false statement::

    {"id": "tf-001", "domain": "factual", "statement": "...", "true": false}

is scored as a two-answer item (" True" / " False").  Optional field: ``note`` (free text).  A bad
line raises :class:`~cape_hpc.errors.DataError` naming the file, the line and the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cape_hpc.errors import DataError
from cape_hpc.io.data import data_file
from cape_hpc.io.text import jsonl_records, read_text

__all__ = ["Item", "ItemSet", "load_items", "load_neutral", "NeutralSet",
           "DOMAINS", "MAX_ANSWERS"]

DOMAINS = ("factual", "reasoning", "ethical")
MAX_ANSWERS = 5
_MC_FIELDS = {"id", "domain", "question", "answers", "correct", "note"}
_TF_FIELDS = {"id", "domain", "statement", "true", "note"}
TF_ANSWERS = (" True", " False")


@dataclass(frozen=True)
class Item:
    """One item as it is scored: ``context`` then each of ``answers`` (docs/METHODS.md §4.3)."""

    id: str
    domain: str
    kind: str                     # 'mc' | 'tf'
    text: str                     # the question or the statement, as written in the file
    answers: tuple[str, ...]      # as written (a true/false statement: ('True', 'False'))
    correct: tuple[int, ...]      # indices of the true answers
    where: str = field(default="", compare=False)   # "<file>: line <n>" (messages only)

    @property
    def context(self) -> str:
        if self.kind == "tf":
            return f"Statement: {self.text}\nIs the statement true or false? Answer:"
        return f"Q: {self.text}\nA:"

    @property
    def scored_answers(self) -> tuple[str, ...]:
        """The answer continuations (a leading space, as they follow 'A:')."""
        return tuple(" " + a.strip() for a in self.answers)


@dataclass
class ItemSet:
    items: list[Item]
    path: str = ""
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def domains(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for it in self.items:
            out[it.domain] = out.get(it.domain, 0) + 1
        return out

    def subset(self, n: int | None, seed: int = 0) -> "ItemSet":
        """A seeded subset of ``n`` items, stratified by domain (proportional, at least one of each
        domain while n allows), in file order; None or n >= len: all."""
        if n is None or n >= len(self.items):
            return self
        rng = np.random.default_rng(seed)
        by: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            by.setdefault(it.domain, []).append(i)
        quota = {d: max(1, int(round(n * len(ix) / len(self.items)))) for d, ix in by.items()}
        while sum(quota.values()) > n:                      # trim the largest quotas first
            d = max(quota, key=lambda k: (quota[k], k))
            quota[d] -= 1
        while sum(quota.values()) < n:
            d = max((k for k in quota if quota[k] < len(by[k])), key=lambda k: (len(by[k]) - quota[k], k))
            quota[d] += 1
        keep: list[int] = []
        for d in sorted(by):
            ix = by[d]
            keep += [ix[j] for j in rng.permutation(len(ix))[:quota[d]]]
        return ItemSet([self.items[i] for i in sorted(keep)], path=self.path, sha256=self.sha256)


def _fail(path, lineno, msg) -> DataError:
    return DataError(f"{path}: line {lineno}: {msg}")


def _text(rec, key, path, lineno) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v.strip():
        raise _fail(path, lineno, f"field {key!r} must be a non-empty string, got {v!r}")
    return v.strip()


def _parse(rec: dict, path, lineno: int) -> Item:
    if "question" in rec and "statement" in rec:
        raise _fail(path, lineno, "has both 'question' and 'statement' (one item is one or the other)")
    if "question" not in rec and "statement" not in rec:
        raise _fail(path, lineno, "missing field 'question' (multiple choice) or 'statement' (true/false)")
    kind = "mc" if "question" in rec else "tf"
    allowed = _MC_FIELDS if kind == "mc" else _TF_FIELDS
    unknown = sorted(set(rec) - allowed)
    if unknown:
        raise _fail(path, lineno, f"unknown field {unknown[0]!r} (a {'multiple-choice item' if kind == 'mc' else 'true/false statement'} "
                                  f"has {', '.join(sorted(allowed))})")
    for key in ("id", "domain"):
        if key not in rec:
            raise _fail(path, lineno, f"missing field {key!r}")
    iid = rec["id"]
    if not isinstance(iid, (str, int)) or isinstance(iid, bool) or not str(iid).strip():
        raise _fail(path, lineno, f"field 'id' must be a non-empty string, got {iid!r}")
    domain = _text(rec, "domain", path, lineno)
    if kind == "tf":
        truth = rec.get("true")
        if not isinstance(truth, bool):
            raise _fail(path, lineno, f"field 'true' must be true or false, got {truth!r}")
        return Item(id=str(iid), domain=domain, kind="tf", text=_text(rec, "statement", path, lineno),
                    answers=tuple(a.strip() for a in TF_ANSWERS), correct=(0,) if truth else (1,))
    question = _text(rec, "question", path, lineno)
    answers = rec.get("answers")
    if not isinstance(answers, list) or not 2 <= len(answers) <= MAX_ANSWERS:
        raise _fail(path, lineno, f"field 'answers' must be a list of 2 to {MAX_ANSWERS} strings, got {answers!r:.80}")
    for j, a in enumerate(answers):
        if not isinstance(a, str) or not a.strip():
            raise _fail(path, lineno, f"field 'answers': answer {j} must be a non-empty string, got {a!r}")
    clean = [a.strip() for a in answers]
    if len(set(clean)) != len(clean):
        dup = next(a for a in clean if clean.count(a) > 1)
        raise _fail(path, lineno, f"field 'answers': duplicate answer {dup!r}")
    correct = rec.get("correct")
    if isinstance(correct, int) and not isinstance(correct, bool):
        correct = [correct]
    if (not isinstance(correct, list) or not correct
            or any(not isinstance(c, int) or isinstance(c, bool) for c in correct)):
        raise _fail(path, lineno, f"field 'correct' must be a non-empty list of answer indices, got {correct!r}")
    bad = [c for c in correct if not 0 <= c < len(clean)]
    if bad:
        raise _fail(path, lineno, f"field 'correct': index {bad[0]} is out of range (answers 0..{len(clean) - 1})")
    if len(set(correct)) != len(correct):
        raise _fail(path, lineno, "field 'correct': repeated index")
    if len(correct) == len(clean):
        raise _fail(path, lineno, "field 'correct': every answer is marked correct (nothing to choose)")
    return Item(id=str(iid), domain=domain, kind="mc", text=question, answers=tuple(clean),
                correct=tuple(sorted(correct)))


def load_items(path: str | Path | None = None) -> ItemSet:
    """Read and check an item file (default: ``data/mc_items.jsonl``)."""
    p = Path(path) if path is not None else data_file("mc_items.jsonl")
    text, sha = read_text(p, "item file")
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, rec in jsonl_records(p, text):
        it = replace(_parse(rec, p, lineno), where=f"{p}: line {lineno}")
        if it.id in seen:
            raise _fail(p, lineno, f"duplicate id {it.id!r} (first on line {seen[it.id]})")
        seen[it.id] = lineno
        items.append(it)
    if len(items) < 2:
        raise DataError(f"{p}: needs at least 2 items, has {len(items)}")
    return ItemSet(items, path=str(p), sha256=sha)


@dataclass
class NeutralSet:
    texts: list[str]
    path: str = ""
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None) -> "NeutralSet":
        return self if n is None or n >= len(self.texts) else NeutralSet(self.texts[:n], self.path, self.sha256)


def load_neutral(path: str | Path | None = None) -> NeutralSet:
    """Neutral texts for the fluency cost (docs/METHODS.md §4.6): JSONL with a ``text`` field per line
    (default ``data/prompts/neutral.jsonl``)."""
    p = Path(path) if path is not None else data_file("prompts", "neutral.jsonl")
    text, sha = read_text(p, "neutral text file")
    texts = []
    for lineno, rec in jsonl_records(p, text):
        texts.append(_text(rec, "text", p, lineno))
    if not texts:
        raise DataError(f"{p}: no texts (the file is empty)")
    return NeutralSet(texts, path=str(p), sha256=sha)
