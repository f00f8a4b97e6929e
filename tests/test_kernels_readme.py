"""kernels/README.md runs: every ```python block executes (in order, one namespace, in a fresh
interpreter) and prints exactly the ```text block that follows it; every op has an example and
every public name is documented."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cape_kernels

README = Path(__file__).resolve().parents[1] / "kernels" / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", re.S)
OPS = ("pooled_tap", "set_mean_cosine", "pairwise_cosine_stats", "steer_inject_", "pool_accumulate_",
       "count_pairs_below")

RUNNER = r'''
import contextlib, io, json, sys
blocks = json.loads(sys.stdin.read())
ns = {"__name__": "__readme__"}
outs = []
for i, src in enumerate(blocks):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(src, f"kernels/README.md python block {i + 1}", "exec"), ns)
    outs.append(buf.getvalue())
print(json.dumps(outs))
'''


def _blocks():
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def test_readme_examples_run_and_print_what_it_says():
    blocks = _blocks()
    assert len(blocks) >= 9
    r = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps([b for b, _ in blocks]),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    outs = json.loads(r.stdout.strip().splitlines()[-1])
    for i, ((src, want), got) in enumerate(zip(blocks, outs)):
        if want is None:
            assert got == "", f"block {i + 1} prints but the README shows no output:\n{got}"
        else:
            assert got.strip().splitlines() == want.strip().splitlines(), \
                f"block {i + 1}:\n{src}\nprinted:\n{got}\nREADME says:\n{want}"


def test_every_op_has_an_example_and_every_name_is_documented():
    code = "\n".join(b for b, _ in _blocks())
    for op in OPS:
        assert f"ck.{op}(" in code, f"no runnable example of {op}"
    text = README.read_text()
    for name in cape_kernels.__all__:
        assert f"`{name}" in text, f"{name} is exported but not documented in kernels/README.md"
    assert cape_kernels.__version__  # the README points to it
