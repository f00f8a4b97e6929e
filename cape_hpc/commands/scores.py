"""`cape scores import`: evaluation results (lm-eval 0.3/0.4, Open LLM Leaderboard v1, Every Eval Ever)
into a score table in cape_hpc's CSV schema, with the provenance of every cell beside it."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

_MAP_HELP = """metric map (one rule per benchmark; the file's fractions x 100 = the table's percent):
  HS   = hellaswag acc_norm
  TQA  = TruthfulQA MC2 (lm-eval 0.4 truthfulqa_mc2 acc; 0.3 truthfulqa_mc mc2; leaderboard truthfulqa:mc mc2)
  ARC  = arc_challenge acc_norm
  WG   = winogrande acc
  MMLU = unweighted mean of the 57 subjects' acc (mmlu_<subject>, hendrycksTest-<subject>; the Open LLM
         Leaderboard v1 convention); --mmlu aggregate takes lm-eval 0.4's 'mmlu' group instead, which
         weights subjects by their number of questions (they differ: 1.7 to 2.5 points on Qwen2.5-1.5B/7B)
  override one with --metric BENCH=TASK:METRIC (e.g. TQA=truthfulqa:mc1 makes tqa_variant mc1).

Per model and benchmark the newest file per n-shot wins (the others are listed). Parameter counts:
the file's config.model_num_parameters, else --params CSV, else the shipped table's row of the same
name, else an error naming the model. Families: --family REGEX=NAME, else --family-file, else the
shipped table, else the name without its size token (Qwen2.5-1.5B -> Qwen2.5). One benchmark with
different n-shot, harness generation or task version across models is refused unless --allow-mixed.
Writes TABLE.csv and TABLE.provenance.json (file, sha256, harness, task version, n-shot, stderr of
every cell). `--scores DIR|FILE.json` of the analysis commands reads results the same way (defaults)."""


def register(sub) -> None:
    from cape_hpc.io.evalresults_map import ImportOptions

    p = sub.add_parser("scores", help="score tables from evaluation results (cape scores import)",
                       description="Score tables from other tools' evaluation results.")
    ssub = p.add_subparsers(dest="scores_command", metavar="SUBCOMMAND", required=True)
    imp = ssub.add_parser(
        "import", help="lm-eval / Open LLM Leaderboard v1 / Every Eval Ever results -> score table CSV",
        description="Read evaluation-results JSON files (folders searched recursively: lm_eval --output_path "
                    "folders, lm-eval 0.3 files, Open LLM Leaderboard v1 results_*.json, Every Eval Ever "
                    "records) into one score table in cape_hpc's CSV schema.",
        epilog=_MAP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("paths", nargs="+", metavar="PATH", help="results JSON files or folders")
    imp.add_argument("-o", "--out", required=True, metavar="TABLE.csv", help="the score table to write")
    imp.add_argument("--force", action="store_true", help="overwrite existing files with different content")
    imp.add_argument("--json", action="store_true", help="print the import (cells and their provenance) as JSON")
    ImportOptions.add_arguments(imp)
    imp.set_defaults(func=run_import)


def run_import(args) -> int:
    from cape_hpc.commands.common import emit_json, print_table
    from cape_hpc.io.evalresults import import_results, write_import
    from cape_hpc.io.evalresults_map import ImportOptions
    from cape_hpc.io.scores import load_scores

    result = import_results(args.paths, ImportOptions.from_args(args))
    csv_path, json_path = write_import(result, args.out, force=args.force)
    df = load_scores(csv_path)  # the written table passes the schema's own validation
    if args.json:
        emit_json(result)
        return 0
    rows = [[r["model"], r["family"], r["params"], *(r[c] for c in ("HS", "TQA", "ARC", "WG", "MMLU"))]
            for r in df.to_dict("records")]
    print_table(rows, ["model", "family", "params", "HS", "TQA", "ARC", "WG", "MMLU"],
                title=f"{len(df)} models from {len(result.files)} files ({result.metric_map})")
    for c in result.superseded:
        print(f"superseded: {c.model} {c.column} from {c.file} (a newer file gives it)")
    for why in result.skipped:
        print(f"left out: {why}")
    mixed = sorted({(c.column, c.n_shot) for c in result.cells})
    shots = ", ".join(f"{col} {n if n >= 0 else '?'}-shot" for col, n in mixed)
    stated = sum(not math.isnan(c.stderr) for c in result.cells)
    print(f"n-shot: {shots}; stderr stated for {stated} of {len(result.cells)} cells")
    print(f"wrote {csv_path} and {Path(json_path).name}")
    return 0
