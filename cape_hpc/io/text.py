"""Reading the users' text files (score tables, prompt sets, item sets): one place that turns
every way a file can be unreadable into a one-line ``DataError`` naming it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

from cape_hpc.errors import DataError

__all__ = ["read_text", "jsonl_records"]


def read_text(path: str | Path, what: str) -> tuple[str, str]:
    """(text, sha256 of the file's bytes) of a UTF-8 text file; a byte-order mark is accepted.

    ``what`` names the file's role in the errors ("prompt file", "CSV table", ...): not found,
    a folder, unreadable, not UTF-8 (with the line and byte), a NUL character (with the line)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a folder, not a {what}") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line}: not valid UTF-8 (byte {exc.start}: "
                        f"{raw[exc.start:exc.start + 1]!r})") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise DataError(f"{p}: line {line}: a NUL character (not a text {what})")
    return text, hashlib.sha256(raw).hexdigest()


def jsonl_records(path: str | Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL text; DataError naming file and line."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(rec).__name__}")
        _check_unicode(rec, path, lineno)
        yield lineno, rec


def _check_unicode(value, path, lineno: int, field: str = "") -> None:
    """DataError naming file, line and field when a string of a JSON value holds a lone surrogate
    (``"\\ud800"`` is valid JSON but not Unicode text: tokenizers and HDF5 fail on it later)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(v, path, lineno, f"{field}.{k}" if field else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_unicode(v, path, lineno, f"{field}[{i}]")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(f"{path}: line {lineno}: field {field!r} holds a lone surrogate "
                            f"({value[exc.start]!r} at character {exc.start}): not valid Unicode text") from None
