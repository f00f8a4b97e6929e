"""The first commands a newcomer types: `cape`, `cape --help`, and every sub-command's `--help`."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cape_hpc.cli import build_parser, main


def subcommands() -> dict[str, str]:
    """name -> one-line summary, from the parser itself."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {a.dest: a.help for a in sub._choices_actions}


EXPECTED = {"coupling", "phases", "population", "nc", "deff", "width", "hfield", "isocline", "loss",
            "fixedpoint", "eigen", "frontier", "diagnose", "analyze", "dynamics", "predict", "reproduce",
            "internals", "steer", "sweep", "merge", "figures", "report", "bench"}


def test_every_command_is_registered_with_a_summary():
    cmds = subcommands()
    assert EXPECTED <= set(cmds), f"missing: {sorted(EXPECTED - set(cmds))}"
    for name, summary in cmds.items():
        assert summary and "\n" not in summary and len(summary) < 120, f"{name}: summary {summary!r}"


@pytest.mark.parametrize("argv", [[], ["--help"]])
def test_top_level_lists_every_command_and_exits_cleanly(argv):
    """As a user runs it: the console script in a fresh process (no import state shared with tests)."""
    out = subprocess.run([sys.executable, "-m", "cape_hpc.cli", *argv], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == ""
    for name in EXPECTED:
        assert f"\n    {name} " in out.stdout or f"\n    {name}\n" in out.stdout, f"{name} not listed"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: cape {name}")
    assert "--json" in text  # the same machine-readable output everywhere


def test_unknown_option_is_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nc", "--no-such-option"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("unrecognized arguments: --no-such-option")


def test_missing_input_file_is_one_line_naming_it(capsys, tmp_path):
    missing = tmp_path / "nope.csv"
    assert main(["coupling", "--scores", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and err[0].startswith("cape coupling: error:")
