"""Progress where users wait (``cape_hpc.progress``, ``--progress {auto,on,off}``): bars on stderr,
never on stdout; silent under ``--json`` and off a terminal unless asked; plain lines in a log.

The commands are run in-process with stderr captured (not a terminal) and, for ``auto`` on a
terminal, in a subprocess whose stderr is a pseudo-terminal (``pty``)."""
from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import numpy as np
import pytest

from crossmodel_fixture import synthetic_internals, write_internals

from cape_hpc import progress
from cape_hpc.cli import main
from cape_hpc.stats import BootstrapOptions, ParticipationRatioStatistic, bootstrap

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
#: a tqdm status with a count: "3/6 [" (a bar with a total)
BAR = re.compile(r"\d+/\d+ \[")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Recorder:
    """A display that records (desc, total, unit) and the sum of the updates of every bar."""

    def __init__(self):
        self.bars: list[list] = []

    def __call__(self, desc, total, unit):
        rec = [desc, total, unit, 0, False]
        self.bars.append(rec)

        class Bar:
            def update(self, n=1):
                rec[3] += n

            def close(self):
                rec[4] = True
        return Bar()


# ------------------------------------------------------------------------------------ the module


@pytest.mark.parametrize("mode, quiet, tty, shown", [
    ("auto", False, True, True), ("auto", True, True, False), ("auto", False, False, False),
    ("on", True, False, True), ("on", False, False, True), ("off", False, True, False)])
def test_when_bars_are_shown(mode, quiet, tty, shown):
    stream = Terminal() if tty else io.StringIO()
    assert progress.wanted(mode, quiet=quiet, stream=stream) is shown
    assert (progress.display_for(mode, quiet=quiet, stream=stream) is not None) is shown


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="auto"):
        progress.wanted("sometimes")


def test_a_log_gets_plain_lines_with_the_prefix():
    out = io.StringIO()
    with progress.shown(progress.tqdm_display(out, prefix="rank 2: ", interval=0)):
        with progress.task("internals tiny", total=4, unit="prompt") as advance:
            for _ in range(4):
                advance(1)
        with progress.task("unknown", total=None, unit="item") as advance:
            advance(3)
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text and text.isascii()
    assert all(line.startswith("rank 2: ") for line in lines)
    counts = [m.group(0) for m in re.finditer(r"\b\d/4\b", text)]
    assert counts == ["0/4", "1/4", "2/4", "3/4", "4/4"]          # one line per state, the last not repeated
    assert "prompt/s" in text and lines[-1].startswith("rank 2: unknown: 3item")


def test_a_log_drops_a_closing_redraw_whose_bar_width_changed():
    # tqdm narrows the bar when the rate's text grows (ncols fixed): the closing redraw of the same
    # count is still a repeat (a fast CI run printed 4/4 twice)
    out = io.StringIO()
    lines = progress._Lines(out)
    lines.write("\rtask: 100%|##########| 4/4 [00:00<00:00, 3.20prompt/s]")
    lines.write("\rtask: 100%|#######| 4/4 [00:00<00:00, 123456.78prompt/s]\n")
    lines.write("\rtask:  50%|###   | 2/4 [00:01<00:01, 2.00prompt/s]")
    assert out.getvalue().splitlines() == ["task: 100%|##########| 4/4 [00:00<00:00, 3.20prompt/s]",
                                           "task:  50%|###   | 2/4 [00:01<00:01, 2.00prompt/s]"]


def test_a_log_drops_a_task_shorter_than_the_interval(monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv("CAPE_PROGRESS_INTERVAL", "60")
    with progress.shown(progress.tqdm_display(out)):
        with progress.task("fast", total=3, unit="x") as advance:
            advance(3)
    assert out.getvalue() == ""


def test_without_a_display_nothing_is_made():
    rec = Recorder()
    with progress.task("x", 3, "y") as advance:
        advance(2)
    with progress.shown(rec):
        with progress.shown(None):
            with progress.task("x", 3, "y") as advance:
                advance(2)
    assert rec.bars == []


def test_the_bootstrap_reports_its_resamples_as_a_task():
    rec = Recorder()
    X = np.random.default_rng(0).standard_normal((20, 3))
    with progress.shown(rec):
        res = bootstrap(ParticipationRatioStatistic(X), BootstrapOptions(n_resamples=300), chunk=128)
    assert rec.bars == [["bootstrap participation_ratio_cov", 300, "resample", 300, True]]
    assert res.samples.tobytes() == bootstrap(ParticipationRatioStatistic(X), BootstrapOptions(n_resamples=300),
                                              chunk=128).samples.tobytes()


# ------------------------------------------------------------------------------------ commands


@pytest.fixture(scope="module")
def internals_file(tmp_path_factory):
    """Two families of three synthetic models each (tests/crossmodel_fixture.py)."""
    path = tmp_path_factory.mktemp("progress") / "internals.h5"
    res, rows = [], []
    for f, fam in enumerate(("A", "B")):
        for i, (n, c) in enumerate(zip((1e8, 1e9, 1e10), (0.5, 0.2, 0.6))):
            r, _ = synthetic_internals(f"{fam}{i}", [0.1, c + 0.1 * f], seed=10 * f + i)
            res.append(r)
            rows.append({"model": r.model, "id": r.model, "family": fam, "params": n})
    return write_internals(path, res, rows)


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _commands(path):
    return {"crossmodel": ["crossmodel", path, "--scores", "none", "-n", "200"],
            "nc": ["nc", "-n", "300", "--estimator", "quadratic", "--scope", "pooled"],
            "deff": ["deff", "-n", "300"]}


@pytest.mark.parametrize("name", ["crossmodel", "nc", "deff"])
def test_on_shows_bars_on_stderr_and_stdout_is_unchanged(name, internals_file, capsys, monkeypatch):
    monkeypatch.setenv("CAPE_PROGRESS_INTERVAL", "0")
    cmd = _commands(internals_file)[name]
    rc_off, out_off, err_off = run(capsys, *cmd, "--progress", "off")
    rc_on, out_on, err_on = run(capsys, *cmd, "--progress", "on")
    rc_auto, out_auto, err_auto = run(capsys, *cmd)               # captured stderr: not a terminal
    assert rc_off == rc_on == rc_auto == 0
    assert out_on == out_off == out_auto and not BAR.search(out_on)
    assert err_off == "" and err_auto == ""
    assert BAR.search(err_on) and "\r" not in err_on
    assert "bootstrap" in err_on
    if name == "crossmodel":
        assert "reading" in err_on and "model/s" in err_on and "family" in err_on


MODEL_COMMANDS = {
    "internals": ["internals", "--model", "tiny-llama", "--max-prompts", "16", "--batch-size", "8"],
    "steer": ["steer", "--model", "tiny-llama", "--max-items", "6", "--alphas", "0.1", "--max-neutral", "2",
              "--max-prompts", "2", "--max-new-tokens", "4", "--folds", "2"],
}


@pytest.mark.parametrize("name", sorted(MODEL_COMMANDS))
def test_a_tiny_model_shows_bars_with_on_and_the_same_stdout(name, capsys, monkeypatch):
    """`cape internals` (prompts) and `cape steer` (scoring rows, generation) on a tiny random model."""
    monkeypatch.setenv("CAPE_PROGRESS_INTERVAL", "0")
    rc_off, out_off, err_off = run(capsys, *MODEL_COMMANDS[name], "--progress", "off")
    rc_on, out_on, err_on = run(capsys, *MODEL_COMMANDS[name], "--progress", "on")
    assert rc_off == rc_on == 0
    assert out_on == out_off and not BAR.search(out_on)
    assert BAR.search(err_on) and "\r" not in err_on and "/s]" in err_on
    assert not BAR.search(err_off)


@pytest.mark.parametrize("name", ["crossmodel", "nc"])
def test_json_is_the_same_and_stderr_empty_unless_asked(name, internals_file, capsys, monkeypatch):
    monkeypatch.setenv("CAPE_PROGRESS_INTERVAL", "0")
    cmd = _commands(internals_file)[name] + ["--json"]
    _, out_auto, err_auto = run(capsys, *cmd)
    _, out_off, err_off = run(capsys, *cmd, "--progress", "off")
    _, out_on, err_on = run(capsys, *cmd, "--progress", "on")
    assert json.loads(out_auto) == json.loads(out_off) == json.loads(out_on)
    assert err_auto == err_off == "" and BAR.search(err_on)


def _on_a_terminal(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``cape ARGV`` with stderr on a pseudo-terminal and stdout on a pipe: (rc, stdout, terminal text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))   # a 120-column terminal
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "cape_hpc.cli", *argv], stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:          # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode()
    rc = proc.wait(timeout=600)
    os.close(master)
    return rc, out, b"".join(chunks).decode(errors="replace")


def test_auto_shows_bars_on_a_terminal_and_json_silences_them(internals_file, tmp_path):
    cmd = _commands(internals_file)["crossmodel"]
    rc, out, term = _on_a_terminal(cmd, tmp_path)
    assert rc == 0, term
    assert "reading" in term and "model/s" in term and "\r" in term        # redrawn in place
    assert not BAR.search(out) and "Cross-model internals table" in out
    rc, out, term = _on_a_terminal(cmd + ["--json"], tmp_path)
    assert rc == 0 and term == "" and json.loads(out)["rows"]
    rc, _, term = _on_a_terminal(cmd + ["--progress", "off"], tmp_path)
    assert rc == 0 and term == ""


# ------------------------------------------------------------------------------------ sweep

JOB = """
name: progress_syn
work: synthetic
output_dir: {out}
models:
  - {{id: org/a, name: a, params: 3e9, options: {{sleep: 0.2}}}}
  - {{id: org/b, name: b, params: 1e9, options: {{sleep: 0.2}}}}
  - {{id: org/c, name: c, params: 1e8, options: {{sleep: 0.2}}}}
  - {{id: org/d, name: d, params: 1e7, options: {{sleep: 0.2}}}}
"""


def _job(tmp_path) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(textwrap.dedent(JOB).format(out=tmp_path / "out"))
    return p


def test_sweep_reports_the_whole_job_and_each_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CAPE_PROGRESS_INTERVAL", "0")
    job = _job(tmp_path)
    rc, out, err = run(capsys, "sweep", str(job), "--out-dir", str(tmp_path / "on"), "--progress", "on")
    assert rc == 0, err
    assert "sweep progress_syn" in err and "4/4" in err and ("model/s" in err or "s/model" in err)
    assert all(f"model {m}" in err for m in "abcd") and "rank" not in err        # one process: no prefix
    assert not BAR.search(out) and "sweep progress_syn: 1 rank(s)" in out
    rc, out, err = run(capsys, "sweep", str(job), "--out-dir", str(tmp_path / "auto"))
    assert rc == 0 and err == ""


@pytest.mark.skipif(not MPIEXEC.exists(), reason="the venv has no mpiexec (pip install mpich)")
def test_sweep_under_mpiexec_prefixes_each_rank_and_rank_0_counts_the_job(tmp_path):
    job = _job(tmp_path)
    env = {**os.environ, "CAPE_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "cape_hpc.cli", "sweep", str(job),
                        "--out-dir", str(tmp_path / "out"), "--progress", "on"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    job_lines = [line for line in lines if "sweep progress_syn" in line]
    assert job_lines and all(line.startswith("rank 0: ") for line in job_lines)
    assert "4/4" in job_lines[-1]
    by_rank = {line.split(":")[0] for line in lines if ": model " in line}
    assert by_rank == {"rank 0", "rank 1"}                      # both ranks computed models and said so
    assert "\r" not in r.stderr and not BAR.search(r.stdout)
