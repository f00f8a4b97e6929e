"""The `cape` command: one sub-command per job.

Each module in COMMAND_MODULES exposes ``register(subparsers)``, which adds its sub-commands and
sets ``func`` on each parser.  ``func(args) -> int`` is the exit status.  A module whose optional
dependencies are missing still registers; the error comes when its command runs.

Start-up: parsing imports only the options classes (declarations); each command imports what it
computes with when it runs, and `cape COMMAND ...` registers only the module of COMMAND.  `cape`,
`cape --help` and an unknown command register every module (tests/test_cli_startup.py).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: the command modules, in the order `cape --help` lists them, with the commands each registers
#: (tests/test_cli_startup.py checks the names against ``register``; a command missing here still
#: works, parsed after registering every module)
COMMAND_MODULES = {
    "cape_hpc.commands.analysis": ("coupling", "phases", "population", "nc", "deff", "width", "hfield", "isocline",
                                   "loss", "fixedpoint", "eigen", "frontier", "diagnose",  # one per ANALYSES record
                                   "analyze"),
    "cape_hpc.commands.dynamics": ("dynamics", "predict", "reproduce"),
    "cape_hpc.commands.internals": ("internals",),
    "cape_hpc.commands.steer": ("steer",),
    "cape_hpc.commands.sweep": ("sweep", "merge"),
    "cape_hpc.commands.crossmodel": ("crossmodel",),
    "cape_hpc.commands.report": ("figures", "report"),
    "cape_hpc.commands.bench": ("bench",),
    "cape_hpc.commands.scores": ("scores",),   # scores import
}

#: top-level flags that may come before the command without changing which modules are needed
_PASSING_FLAGS = ("-v", "--verbose")


def command_module(argv: list[str]) -> str | None:
    """The module that registers the command of ``argv`` (None: every module is needed -- no command,
    ``--help`` or ``--version`` before it, or a command not in ``COMMAND_MODULES``)."""
    for token in argv:
        if token in _PASSING_FLAGS:
            continue
        if token.startswith("-"):
            return None
        return next((module for module, names in COMMAND_MODULES.items() if token in names), None)
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or (given ``argv`` naming a command) of that command's module only."""
    from cape_hpc import __version__

    parser = argparse.ArgumentParser(
        prog="cape", description="Capability-coupling analysis (CAPE) of language models: benchmark-level "
        "analysis, model internals, steering, sweeps, reports.",
        epilog="Run `cape COMMAND --help` for a command's options. Methods: docs/METHODS.md.")
    parser.add_argument("--version", action="version", version=f"cape_hpc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = command_module(argv) if argv is not None else None
    for name in (only,) if only else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command module is not written yet
                continue
            raise
        module.register(sub)
    return parser


#: options that name a file or folder: an empty value is an error, never "not given"
PATH_OPTIONS = ("out", "out_dir", "outdir", "merge", "scores", "frontier", "loss", "prompts", "calibration_file",
                "results", "results_dir", "job")


def _empty_path_option(args: argparse.Namespace) -> str | None:
    for name in PATH_OPTIONS:
        if getattr(args, name, None) == "":
            return "--" + name.replace("_", "-") if name not in ("results", "results_dir", "job") else name.upper()
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import warnings

    if not args.verbose:
        # floating-point RuntimeWarnings (0/0 on a constant column, ...) are the methods' NaN rules at
        # work, documented per method; they are shown with -v only (docs/METHODS.md §1)
        warnings.filterwarnings("ignore", category=RuntimeWarning)
    # a warning is one line naming the command (the message names the file/line), not Python's two
    warnings.formatwarning = lambda message, *_a, **_k: f"cape {args.command}: warning: {message}\n"
    bad = _empty_path_option(args)
    if bad:
        print(f"cape {args.command}: error: option '{bad}': an empty path", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):  # plain `cape`: the list of commands, a clean exit
        parser.print_help()
        return 0
    from cape_hpc.errors import CapeError

    try:
        return int(args.func(args) or 0)
    except CapeError as exc:
        print(f"cape {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cape ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file that cannot be read or written: one line naming it
        if exc.filename is None:
            raise
        print(f"cape {args.command}: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
