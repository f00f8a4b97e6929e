"""The shipped score rows against an independent compilation, and the audit on it (issue 25 item 7).

The ObsScaling table (Ruan et al. 2024: 148 base models, Open LLM Leaderboard v1 protocol, compiled
by another group; converted to this project's schema with its provenance in its README) lies in the
folder ``shared/external/obsscaling`` next to the checkout (``EXTERNAL``).  The repository does not
depend on it: these tests skip, naming the path, when it is absent, and are marked ``slow`` (CI,
where it is absent, allows only gpu and slow tests to skip).
"""
from pathlib import Path

import pytest

from cape_hpc.io.data import data_file
from cape_hpc.io.scores import SCORE_COLUMNS, load_scores

EXTERNAL = Path(__file__).resolve().parents[1].parent / "shared" / "external" / "obsscaling" / "scores.csv"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not EXTERNAL.exists(), reason=f"the independent table {EXTERNAL} is absent")]

#: shipped model -> the ObsScaling row of the same model (its HF name without the org)
SAME_MODEL = {
    "BLOOM-560M": "bloom-560m", "BLOOM-1.1B": "bloom-1b1", "BLOOM-3B": "bloom-3b", "BLOOM-7.1B": "bloom-7b1",
    "BLOOM-176B": "bloom", "Falcon-1B": "falcon-rw-1b", "Falcon-7B": "falcon-7b", "Falcon-40B": "falcon-40b",
    "GPT-J-6B": "gpt-j-6b", "GPT-Neo-125M": "gpt-neo-125m", "GPT-Neo-1.3B": "gpt-neo-1.3B",
    "GPT-Neo-2.7B": "gpt-neo-2.7B", "GPT-NeoX-20B": "gpt-neox-20b",
    "Llama-1-7B": "llama-7b", "Llama-1-13B": "llama-13b", "Llama-1-65B": "llama-65b",
    "Llama-2-7B": "Llama-2-7b-hf", "Llama-2-13B": "Llama-2-13b-hf", "Llama-2-70B": "Llama-2-70b-hf",
    "Llama-3-8B": "Meta-Llama-3-8B", "Llama-3-70B": "Meta-Llama-3-70B", "Mistral-7B": "Mistral-7B-v0.1",
    "OLMo-1B": "OLMo-1B-hf", "OLMo-7B": "OLMo-7B-hf", "Phi-1.5": "phi-1_5", "Phi-2": "phi-2", "Yi-34B": "Yi-34B",
    **{f"Cerebras-GPT-{s}": f"Cerebras-GPT-{s}" for s in ("111M", "256M", "590M", "1.3B", "2.7B", "6.7B")},
    **{f"OPT-{s}": f"opt-{s.lower()}" for s in ("125M", "350M", "1.3B", "2.7B", "6.7B", "13B", "30B", "66B")},
}

#: shipped model -> the ObsScaling row of a related but different model, and why a difference is intended
INTENTIONAL = {
    **{f"Pythia-{s}": (f"pythia-{s.lower()}-deduped", "ObsScaling has only the deduplicated Pythia runs; the "
                       "shipped rows are the standard Pythia models (another training set)")
       for s in ("70M", "160M", "410M", "1B", "1.4B", "2.8B", "6.9B", "12B")},
    "Llama-3-8B": ("Meta-Llama-3-8B", "the shipped row equals the Open LLM Leaderboard v1 collection entry "
                   "(data/row_sources.csv: verified); ObsScaling's own run of the protocol differs by 1.0 "
                   "(TQA) and 1.3 (WG) points"),
}

THRESHOLD = 0.5   # points


def _pairs():
    import pandas as pd

    ship = load_scores(data_file("base_models.csv")).set_index("model")
    ext = pd.read_csv(EXTERNAL).set_index("model")
    return ship, ext


def test_every_shipped_row_agrees_with_the_independent_table_or_is_explained():
    """Every shipped row with the same model in ObsScaling agrees within 0.5 points in each of the
    five scores; each row that was corrected to it names it in data/row_sources.csv."""
    import csv

    ship, ext = _pairs()
    sources = {r["model"]: r for r in csv.DictReader(open(data_file("row_sources.csv"), newline=""))
               if r["table"] == "base_models.csv"}
    bad = []
    for model, other in SAME_MODEL.items():
        if model in INTENTIONAL:
            continue
        for c in SCORE_COLUMNS:
            a, b = float(ship.loc[model, c]), float(ext.loc[other, c])
            if abs(a - b) > THRESHOLD:
                bad.append(f"{model} {c}: shipped {a:g}, ObsScaling {b:g}")
        if "ObsScaling" in ship.loc[model, "source"]:
            assert "ObsScaling" in sources[model]["source"] and other in sources[model]["source"]
    assert not bad, "\n".join(bad)


def test_intentional_differences_are_real_and_named():
    """The rows listed as intentional differ (else the entry is stale) and name a reason."""
    ship, ext = _pairs()
    for model, (other, reason) in INTENTIONAL.items():
        assert other in ext.index and reason
        d = max(abs(float(ship.loc[model, c]) - float(ext.loc[other, c])) for c in SCORE_COLUMNS)
        if model.startswith("Llama-3"):
            assert d > THRESHOLD


def test_reproduce_runs_on_the_independent_table(tmp_path):
    """`cape reproduce --scores` on the 148-model table (no d_model column values) runs to the end."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "cape_hpc.cli", "reproduce", "--scores", str(EXTERNAL), "--json",
                          "-n", "100"], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert len(res["claims"]) == sum(res["counts"].values()) > 100
    width = {c["id"]: c for c in res["claims"]}["width-pythia"]
    assert width["verdict"] == "needs data not available" and "d_model" in width["reason"]
