"""Regenerate ``analyze_before.json`` from `cape analyze --json` on the shipped data (run from the
repository root: ``.venv/bin/python tests/golden/regenerate.py``).

Only for a deliberate change of the shipped data (a changed golden value is otherwise a bug).  The
file keeps the layout it was first captured in (commit 11e2aa4), which ``tests/test_analyze_golden.py``
maps to today's with ``RENAMES``: a bootstrap summary's ``intervals`` [{low, high, level}, ...] is
written back as ``ci`` {"<level>": [low, high]}.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

GOLDEN = Path(__file__).parent / "analyze_before.json"


def old_layout(node):
    """Today's `cape analyze --json` tree in the golden file's layout (see the module doc)."""
    if isinstance(node, list):
        return [old_layout(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if (k == "intervals" and isinstance(v, list) and v
                and all(isinstance(x, dict) and set(x) == {"low", "high", "level"} for x in v)):
            out["ci"] = {f"{x['level']:g}": [x["low"], x["high"]] for x in v}
        else:
            out[k] = old_layout(v)
    return out


def main() -> None:
    from cape_hpc.cli import main as cape

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cape(["analyze", "--json"]) == 0
    GOLDEN.write_text(json.dumps(old_layout(json.loads(buf.getvalue())), indent=2) + "\n")


if __name__ == "__main__":
    main()
