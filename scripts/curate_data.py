"""Rebuild the curated tables in data/ from the public tables (the output is committed).

    python scripts/curate_data.py --source DIR [--out DIR]

DIR holds the public tables this project was curated from: the CAPE authors' released data
(``base_models_consolidated.json``, ``architectures.csv``, ``ai_free_energy_data.json``,
``frontier_34models.json``, ``post_cutoff_april2026.json``, ``pythia_validation_loss.csv``), whose
scores are Open LLM Leaderboard v1 numbers and lab-reported frontier scores.  A missing file is
reported by name (exit status 2).  ``--out`` defaults to the repository's ``data/``.

Fixes (docs/METHODS.md §1.4):
- Llama-3-8B / Llama3-8B and Llama-3-70B / Llama3-70B are the same models under two names: keep the
  Open LLM Leaderboard v1 rows (documented source), drop the 'cape_26' duplicates.
- GPT-J-6B and GPT-NeoX-20B were filed under Pythia: they get their own families (GPT-J, GPT-NeoX).
- Gemma-3-4B and Gemma-4-E4B are different generations at the same size: families Gemma-3, Gemma-4.
- The stored gamma12 column does not recompute: it is not copied (the toolkit recomputes coupling).
- Names normalised to the hyphenated form used in architectures.csv (Llama1-7B -> Llama-1-7B).
Every row carries a source and tqa_variant = mc2 (Open LLM Leaderboard v1 TruthfulQA is MC2,
docs/METHODS.md §1.2).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data"
REQUIRED = ("base_models_consolidated.json", "architectures.csv", "ai_free_energy_data.json",
            "frontier_34models.json", "post_cutoff_april2026.json", "pythia_validation_loss.csv")

SOURCES = {
    "leaderboard": "Open LLM Leaderboard v1 (HF-LLB-v1)",
    "cape_26": "CAPE authors' 26-model table (cape_26models_9families.json), Open LLM Leaderboard v1 numbers",
    "gemma3_results": "CAPE authors' Gemma-3 evaluation (gemma3_results.json)",
    "gemma4_results": "CAPE authors' Gemma-4 evaluation (gemma4_results.json)",
    "qwen3_results": "CAPE authors' Qwen3 evaluation (qwen3_8b_results.json)",
}
RENAME = {"Llama1-7B": "Llama-1-7B", "Llama1-13B": "Llama-1-13B", "Llama1-65B": "Llama-1-65B",
          "Llama2-7B": "Llama-2-7B", "Llama2-13B": "Llama-2-13B", "Llama2-70B": "Llama-2-70B"}
DROP = {"Llama3-8B", "Llama3-70B"}  # duplicates of Llama-3-8B / Llama-3-70B
FAMILY = {"GPT-J-6B": "GPT-J", "GPT-NeoX-20B": "GPT-NeoX", "Gemma-3-4B": "Gemma-3", "Gemma-4-E4B": "Gemma-4"}
ARCH_ALIAS = {"Falcon-1B": "Falcon-RW-1B", "Phi-3-mini-4k": "Phi-3-mini"}


def fmt(v):
    return "" if v is None else repr(float(v)) if isinstance(v, float) else str(v)


class CurateError(Exception):
    """Bad input: the message names the file (and the field)."""


def _json(path: Path, key: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)[key]
    except json.JSONDecodeError as exc:
        raise CurateError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (KeyError, TypeError):
        raise CurateError(f"{path}: no top-level field {key!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Rebuild data/base_models.csv, data/frontier.csv and "
                                             "data/pythia_loss.csv from the public tables.")
    ap.add_argument("--source", required=True, type=Path, metavar="DIR",
                    help="folder with the public tables (" + ", ".join(REQUIRED) + ")")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                    help="where the curated CSVs are written (default: the repository's data/)")
    return ap.parse_args(argv)


def curate(source: Path, out: Path) -> tuple[int, int]:
    """Write the three curated tables into ``out``; returns (base rows, frontier rows)."""
    source = Path(source)
    if not source.is_dir():
        raise CurateError(f"--source {source}: not a directory")
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if missing:
        raise CurateError(f"--source {source}: missing file(s) {', '.join(missing)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = _json(source / "base_models_consolidated.json", "models")
    arch = {r["model"]: int(r["d_model"]) for r in csv.DictReader(open(source / "architectures.csv", encoding="utf-8"))}
    pythia = _json(source / "ai_free_energy_data.json", "pythia_models")
    pyth = {f"Pythia-{n}": (L, H) for n, L, H in zip(pythia["names"], pythia["n_layers"], pythia["n_heads"])}
    rows = []
    for m in base:
        name = m["name"]
        if name in DROP:
            continue
        name = RENAME.get(name, name)
        family = FAMILY.get(name, m["family"])
        src = SOURCES[m["source"]]
        if name in ("Pythia-6.9B", "Pythia-12B"):
            src += "; scores partly estimated by the CAPE authors from deduped runs"
        d_model = arch.get(ARCH_ALIAS.get(name, name))
        n_layers, n_heads = pyth.get(name, (None, None))
        rows.append({
            "model": name, "family": family, "params": int(round(m["N_B"] * 1e9)),
            "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
            "HS": m["HS"], "TQA": m["TQA"], "ARC": m.get("ARC"), "WG": m.get("WG"), "MMLU": m.get("MMLU"),
            "tqa_variant": "mc2", "source": src,
        })
    rows.sort(key=lambda r: (r["family"], r["params"]))
    cols = list(rows[0].keys())
    with open(out / "base_models.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([fmt(r[c]) for c in cols])

    fr = _json(source / "frontier_34models.json", "models")
    post = _json(source / "post_cutoff_april2026.json", "models")
    with open(out / "frontier.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "lab", "date", "SWE", "GPQA", "cohort", "subset", "source"])
        for m in fr:
            w.writerow([m["name"], m["lab"], "", fmt(m["swe"]), fmt(m["gpqa"]), "main", m.get("subset", ""),
                        "lab-reported SWE-bench Verified and GPQA Diamond (CAPE authors' 34-model panel)"])
        for m in post:
            w.writerow([m["name"], m["lab"], m.get("date", ""), fmt(m["swe"]), fmt(m["gpqa"]), "post_cutoff", "",
                        "lab-reported SWE-bench Verified and GPQA Diamond (CAPE authors' April 2026 update)"])

    with open(out / "pythia_loss.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "family", "params", "val_loss", "source"])
        for r in csv.DictReader(open(source / "pythia_validation_loss.csv", encoding="utf-8")):
            w.writerow([r["model"], "Pythia", r["params"], r["val_loss"],
                        "CAPE authors' Pythia validation losses (original source undocumented)"])
    return len(rows), len(fr) + len(post)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        n_base, n_frontier = curate(args.source, args.out)
    except CurateError as exc:
        print(f"curate_data: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"curate_data: {args.source}: a record lacks the field {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n_base} base models, {n_frontier} frontier models to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
