"""`cape figures` (PNG + SVG with matplotlib) and `cape report` (one self-contained HTML file)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cape_hpc.commands.common import check_out_first
from cape_hpc.errors import OptionError


def _command(sub, name: str, summary: str, description: str, func, json_help: str, force_help: str,
             nargs: str | None = None):
    """A command reading RESULTS.h5 (``nargs`` "+": one or more), with --json and --force (its own
    flags added by the caller)."""
    p = sub.add_parser(name, help=summary, description=description)
    p.add_argument("results", metavar="RESULTS.h5", nargs=nargs)
    p.set_defaults(func=func)
    return p, (("--json", json_help), ("--force", force_help))


def register(sub) -> None:
    p, common = _command(sub, "figures", "write the figures of a results file (PNG and SVG)",
                         "Draw every figure a results file has data for; the others are skipped with a note "
                         "naming the missing group.", run_figures, "print written files and skip notes as JSON",
                         "overwrite figure files that exist in the folder")
    p.add_argument("-o", "--outdir", default="figs", metavar="DIR", help="output folder (default: figs/)")
    p.add_argument("--format", action="append", choices=("png", "svg", "pdf"), dest="formats",
                   help="file format(s) (default: png and svg)")
    p.add_argument("--dpi", type=int, default=150)
    for flag, help_ in common:
        p.add_argument(flag, action="store_true", help=help_)

    r, common = _command(sub, "report", "write one self-contained interactive HTML report",
                         "One HTML file of one study from one or more results files (an analysis file, a merged "
                         "sweep, a steering run): the study's answers first (ladders and N_c with intervals, the "
                         "phase tables, the audit's verdict counts), one collapsed line for what was not computed, "
                         "the other charts (plotly, inlined) with the tables behind them, the per-model charts "
                         "behind a model picker, an in-page diagnose panel, the reproduction audit and the "
                         "provenance of every group.  A group stored in two files is the first file's.  Opens "
                         "without network access.", run_report, "print the path, charts and skip notes as JSON",
                         "overwrite an existing report file", nargs="+")
    r.add_argument("-o", "--out", default="report.html", metavar="FILE.html")
    r.add_argument("--title", default=None)
    for flag, help_ in common:
        r.add_argument(flag, action="store_true", help=help_)


def run_figures(args: argparse.Namespace) -> int:
    from cape_hpc.report.data import Results
    from cape_hpc.report.figures import build_figures, close

    if args.dpi <= 0:
        raise OptionError(f"option '--dpi': must be > 0, got {args.dpi}")
    res = Results.load(args.results)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    formats = args.formats or ["png", "svg"]
    written, skipped = [], []
    outcomes = build_figures(res)
    for outcome in outcomes:  # before anything is written: no figure is overwritten without --force
        for fmt in formats if outcome.figure is not None else ():
            check_out_first(argparse.Namespace(out=outdir / f"{outcome.name}.{fmt}", force=args.force), flag="-o")
    for outcome in outcomes:
        if outcome.figure is None:
            skipped.append({"figure": outcome.name, "note": outcome.note})
            continue
        for fmt in formats:
            path = outdir / f"{outcome.name}.{fmt}"
            outcome.figure.savefig(path, dpi=args.dpi)
            written.append(str(path))
        close(outcome.figure)
    if args.json:
        print(json.dumps({"results": args.results, "written": written, "skipped": skipped}, indent=2))
    else:
        for w in written:
            print(f"wrote {w}")
        for s in skipped:
            print(f"skipped {s['figure']}: {s['note']}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from cape_hpc.report.html import write_report

    check_out_first(args, flag="--out")
    info = write_report(args.results, args.out, title=args.title, force=args.force)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for s in info["skipped"]:
            print(f"skipped {s['chart']}: {s['note']}")
        print(f"report: {Path(args.out).resolve()}")
    return 0
