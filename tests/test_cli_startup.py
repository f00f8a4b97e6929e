"""The `cape` command starts at once: parsing (``--help``, a command's ``--help``, a bad option)
imports none of the heavy libraries, and each command imports only what it computes with (issue 22
item 5).  Every check runs a new Python process and reads its ``sys.modules`` after ``cli.main``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "numba", "llvmlite", "pandas", "scipy", "h5py", "matplotlib")

#: runs cape_hpc.cli.main(argv) in a new process, then writes its exit status and the heavy modules
#: it left in sys.modules to the file named by CAPE_PROBE_OUT
PROBE = f"""
import json, os, sys
from cape_hpc import cli
try:
    rc = cli.main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
with open(os.environ["CAPE_PROBE_OUT"], "w") as f:
    json.dump({{"rc": rc, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
               "commands": sorted(m for m in sys.modules if m.startswith("cape_hpc.commands."))}}, f)
"""


def _cape(tmp_path, *argv: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / "probe.json"
    env = {**os.environ, "CAPE_PROBE_OUT": str(out)}
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=600)
    assert out.exists(), proc.stderr
    return json.loads(out.read_text()), proc


@pytest.mark.parametrize("argv", [("--help",), ("nc", "--help"), ("steer", "--help"), ("internals", "--help"),
                                  ("sweep", "--help"), ("crossmodel", "--help"), ("reproduce", "--help"),
                                  ("analyze", "--help"), ("report", "--help"), ("bench", "--help")],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_module(tmp_path, argv):
    probe, proc = _cape(tmp_path, *argv)
    assert probe["rc"] == 0, proc.stderr
    assert "usage: cape" in proc.stdout
    assert probe["heavy"] == [], f"`cape {' '.join(argv)}` imported {probe['heavy']}"


@pytest.mark.parametrize("argv, flag", [(("nc", "--estimator", "nope"), "--estimator"),
                                        (("internals", "--batch-size", "x"), "--batch-size"),
                                        (("steer", "--alphas", "x"), "--alphas")],
                         ids=lambda a: " ".join(a) if isinstance(a, tuple) else a)
def test_bad_option_is_one_line_exit_2_without_heavy_modules(tmp_path, argv, flag):
    probe, proc = _cape(tmp_path, *argv)
    assert probe["rc"] == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"cape {argv[0]}: error:") and flag in errors[0], proc.stderr
    assert probe["heavy"] == [], f"`cape {' '.join(argv)}` imported {probe['heavy']}"


def test_nc_imports_what_it_computes_with_and_no_torch(tmp_path):
    """A command that needs the heavy modules still gets them (imported when it runs: the gamma
    estimators' numba), and `cape nc` needs no torch and no transformers."""
    probe, proc = _cape(tmp_path, "nc", "--estimator", "sign-change", "-n", "200", "--scope", "pooled", "--json")
    assert probe["rc"] == 0, proc.stderr
    result = json.loads(proc.stdout)["sign-change_pooled"]
    assert result["estimator"] == "sign-change" and result["estimates"][0]["bootstrap"]["n_resamples"] == 200
    assert "numba" in probe["heavy"]
    assert not {"torch", "transformers", "matplotlib"} & set(probe["heavy"]), probe["heavy"]


def test_quadratic_nc_runs_without_numba_scipy_or_pandas(tmp_path):
    """`cape nc --estimator quadratic -n 100000` (the start-up goal's command) runs on the numpy
    backend (cape_kernels.numpy_resample.resample_backend) and reads its table as ScoreColumns: no
    numba, llvmlite, scipy or pandas in the process."""
    probe, proc = _cape(tmp_path, "nc", "--estimator", "quadratic", "-n", "100000", "--json")
    assert probe["rc"] == 0, proc.stderr
    result = json.loads(proc.stdout)["quadratic_pooled"]
    assert result["estimates"][0]["bootstrap"]["n_resamples"] == 100000
    assert probe["heavy"] == [], probe["heavy"]


def test_options_constants_equal_the_kernels():
    """The N_c estimators and attach rules of the options (taken from the numba-free
    cape_kernels.numpy_resample) are the numba kernels' (cape_kernels.resample) plus the quadratic."""
    from cape_kernels.resample import ATTACH_CODES, GAMMA_NC_ESTIMATORS

    from cape_hpc.analysis.options import ATTACH, ESTIMATORS

    assert ESTIMATORS == (*GAMMA_NC_ESTIMATORS, "quadratic")
    assert ATTACH == tuple(ATTACH_CODES)


def test_lazy_package_keeps_a_function_named_like_its_module():
    """``cape_hpc.stats.bootstrap`` is the function even when its submodule was imported first (as
    ``stats.summary`` does), as with the eager ``from .bootstrap import bootstrap`` before."""
    code = ("import cape_hpc.stats.summary, cape_hpc.stats.bootstrap, types\n"
            "from cape_hpc.stats import bootstrap\n"
            "import cape_hpc.dynamics.trajectories\n"
            "from cape_hpc.dynamics import trajectories\n"
            "assert callable(bootstrap) and not isinstance(bootstrap, types.ModuleType), bootstrap\n"
            "assert not isinstance(trajectories, types.ModuleType), trajectories\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("package", ["cape_hpc.stats", "cape_hpc.dynamics", "cape_hpc.audit"])
def test_lazy_packages_export_every_name(package):
    import importlib

    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        value = getattr(pkg, name)
        module = importlib.import_module(f"{package}.{pkg._EXPORTS[name]}")
        assert value is getattr(module, name), (package, name)


def test_command_index_names_what_each_module_registers():
    """cli.COMMAND_MODULES (which module `cape COMMAND` imports) lists exactly the commands each module
    registers, in the order `cape --help` shows them."""
    import argparse
    import importlib

    from cape_hpc.cli import COMMAND_MODULES, build_parser, command_module

    for module, names in COMMAND_MODULES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == names, module
    full = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert tuple(full.choices) == tuple(n for names in COMMAND_MODULES.values() for n in names)
    assert command_module(["-v", "steer", "--help"]) == "cape_hpc.commands.steer"
    assert command_module(["--help", "steer"]) is None and command_module([]) is None
    assert command_module(["no-such-command"]) is None


def test_a_command_registers_only_its_module(tmp_path):
    probe, proc = _cape(tmp_path, "nc", "--help")
    assert probe["commands"] == ["cape_hpc.commands.analysis", "cape_hpc.commands.analysis_print",
                                 "cape_hpc.commands.common"], probe["commands"]
    probe, proc = _cape(tmp_path, "--help")
    assert "cape_hpc.commands.steer" in probe["commands"] and "cape_hpc.commands.scores" in probe["commands"]
