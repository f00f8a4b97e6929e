"""Build the curated tables in data/ from the public tables in ../shared/data (run once; output committed).

Fixes (SPEC section 1):
- Llama-3-8B / Llama3-8B and Llama-3-70B / Llama3-70B are the same models under two names: keep the
  Open LLM Leaderboard v1 rows (documented source), drop the 'cape_26' duplicates.
- GPT-J-6B and GPT-NeoX-20B were filed under Pythia: they get their own families (GPT-J, GPT-NeoX).
- Gemma-3-4B and Gemma-4-E4B are different generations at the same size: families Gemma-3, Gemma-4.
- The stored gamma12 column does not recompute: it is not copied (the toolkit recomputes coupling).
- Names normalised to the hyphenated form used in architectures.csv (Llama1-7B -> Llama-1-7B).
Every row carries a source and tqa_variant = mc2 (Open LLM Leaderboard v1 TruthfulQA is MC2).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

SHARED = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data")
OUT = Path(__file__).resolve().parents[1] / "data"

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


def main() -> None:
    base = json.load(open(SHARED / "base_models_consolidated.json"))["models"]
    arch = {r["model"]: int(r["d_model"]) for r in csv.DictReader(open(SHARED / "architectures.csv"))}
    pythia = json.load(open(SHARED / "ai_free_energy_data.json"))["pythia_models"]
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
    with open(OUT / "base_models.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([fmt(r[c]) for c in cols])

    fr = json.load(open(SHARED / "frontier_34models.json"))["models"]
    post = json.load(open(SHARED / "post_cutoff_april2026.json"))["models"]
    with open(OUT / "frontier.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "lab", "date", "SWE", "GPQA", "cohort", "subset", "source"])
        for m in fr:
            w.writerow([m["name"], m["lab"], "", fmt(m["swe"]), fmt(m["gpqa"]), "main", m.get("subset", ""),
                        "lab-reported SWE-bench Verified and GPQA Diamond (CAPE authors' 34-model panel)"])
        for m in post:
            w.writerow([m["name"], m["lab"], m.get("date", ""), fmt(m["swe"]), fmt(m["gpqa"]), "post_cutoff", "",
                        "lab-reported SWE-bench Verified and GPQA Diamond (CAPE authors' April 2026 update)"])

    with open(OUT / "pythia_loss.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "family", "params", "val_loss", "source"])
        for r in csv.DictReader(open(SHARED / "pythia_validation_loss.csv")):
            w.writerow([r["model"], "Pythia", r["params"], r["val_loss"],
                        "CAPE authors' Pythia validation losses (original source undocumented)"])
    print(f"wrote {len(rows)} base models, {len(fr) + len(post)} frontier models")


if __name__ == "__main__":
    main()
