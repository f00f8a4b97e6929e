"""`cape figures` (PNG + SVG with matplotlib) and `cape report` (one self-contained HTML file)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cape_hpc.commands.common import check_out_first
from cape_hpc.errors import OptionError


def register(sub) -> None:
    p = sub.add_parser("figures", help="write the figures of a results file (PNG and SVG)",
                       description="Draw every figure a results file has data for; the others are "
                                   "skipped with a note naming the missing group.")
    p.add_argument("results", metavar="RESULTS.h5")
    p.add_argument("-o", "--outdir", default="figs", metavar="DIR", help="output folder (default: figs/)")
    p.add_argument("--format", action="append", choices=("png", "svg", "pdf"), dest="formats",
                   help="file format(s) (default: png and svg)")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--json", action="store_true", help="print written files and skip notes as JSON")
    p.add_argument("--force", action="store_true", help="overwrite figure files that exist in the folder")
    p.set_defaults(func=run_figures)

    r = sub.add_parser("report", help="write one self-contained interactive HTML report",
                       description="One HTML file with the charts (plotly, inlined), the tables behind "
                                   "them, the reproduction audit, the provenance of every group, and "
                                   "an in-page diagnose panel.  Opens without network access.")
    r.add_argument("results", metavar="RESULTS.h5")
    r.add_argument("-o", "--out", default="report.html", metavar="FILE.html")
    r.add_argument("--title", default=None)
    r.add_argument("--json", action="store_true", help="print the path, charts and skip notes as JSON")
    r.add_argument("--force", action="store_true", help="overwrite an existing report file")
    r.set_defaults(func=run_report)


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
