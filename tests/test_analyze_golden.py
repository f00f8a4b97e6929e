"""Every number that `cape analyze --json` printed before the foundations refactor is unchanged.

``tests/golden/analyze_before.json`` was captured from the tree before the refactor (commit
11e2aa4, `cape analyze --json`, shipped data, 10,000 resamples, seed 0), and regenerated once on
purpose when ten shipped rows were corrected to the Open LLM Leaderboard v1 values (issue 25;
``tests/golden/regenerate.py``, which keeps the file's original layout).  Both outputs are flattened
to ``path -> number``; a field that moved is listed once in ``RENAMES`` (a regex on the old path
giving the new one).  Provenance and the input-table summary are not compared (the code version
and option layout are meant to change).  Tolerances: 1e-12 relative in general; 1e-9 where the fused
bootstrap kernels changed the floating-point order of the fit (``BOOT_PATHS``).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from cape_hpc.cli import main

GOLDEN = Path(__file__).parent / "golden" / "analyze_before.json"

# old path (regex) -> new path; applied in order, first match wins
RENAMES: list[tuple[str, str]] = [
    # BootSummary.ci {"0.95": [lo, hi], "0.68": [lo, hi]} -> BootstrapSummary.intervals[ConfidenceInterval]
    (r"^(.*)/ci/0\.95/0$", r"\1/intervals/0/low"),
    (r"^(.*)/ci/0\.95/1$", r"\1/intervals/0/high"),
    (r"^(.*)/ci/0\.68/0$", r"\1/intervals/1/low"),
    (r"^(.*)/ci/0\.68/1$", r"\1/intervals/1/high"),
]
SKIP = (re.compile(r"(^|/)provenance(/|$)"), re.compile(r"^inputs(/|$)"))
BOOT_PATHS = re.compile(r"/bootstrap/")


def flatten(node, path="", out=None) -> dict[str, object]:
    out = {} if out is None else out
    if isinstance(node, dict):
        for k, v in node.items():
            flatten(v, f"{path}/{k}" if path else str(k), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            flatten(v, f"{path}/{i}", out)
    elif node is None or isinstance(node, (int, float)) and not isinstance(node, bool):
        out[path] = node
    return out


def renamed(path: str) -> str:
    for pattern, repl in RENAMES:
        new, n = re.subn(pattern, repl, path)
        if n:
            return new
    return path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["analyze", "--json"]) == 0
    return json.loads(GOLDEN.read_text()), json.loads(buf.getvalue())


def test_every_number_of_analyze_is_unchanged(outputs):
    before, after = outputs
    old = {p: v for p, v in flatten(before).items() if not any(s.search(p) for s in SKIP)}
    new = flatten(after)
    assert len(old) > 5000  # the golden file holds the whole analysis, not a fragment
    missing, changed = [], []
    for path, v in old.items():
        npath = renamed(path)
        if npath not in new:
            missing.append(f"{path} -> {npath}")
            continue
        w = new[npath]
        if v is None or w is None:
            if v is not w:
                changed.append(f"{path}: {v} -> {w}")
            continue
        tol = 1e-9 if BOOT_PATHS.search(path) else 1e-12
        if not math.isclose(float(v), float(w), rel_tol=tol, abs_tol=tol * 1e-3):
            changed.append(f"{path}: {v!r} -> {w!r}")
    assert not missing, f"{len(missing)} numbers no longer printed, e.g. {missing[:8]}"
    assert not changed, f"{len(changed)} numbers changed, e.g. {changed[:8]}"


def test_rename_table_is_not_vacuous(outputs):
    before, _ = outputs
    paths = flatten(before)
    for pattern, _repl in RENAMES:
        assert any(re.search(pattern, p) for p in paths), f"RENAMES entry {pattern!r} matches no golden path"
