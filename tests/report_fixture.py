"""One small results file for the report's tests, written by the commands a user runs.

``cape analyze`` on five families of the shipped table, ``cape dynamics`` / ``cape predict``,
``cape reproduce`` on a fast subset of the claims, ``cape internals`` and ``cape steer`` on two
tiny random-weight models (offline, seconds): the same commands ``make demo`` runs, with smaller
counts.  Every group therefore has the layout the library really writes; nothing is synthetic.
The file is written once per test session (``cached_sample``).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import io
import shutil
import tempfile
from pathlib import Path

SAMPLE_FAMILIES = ("Pythia", "OPT", "Qwen2.5", "OLMo", "Llama-2")
# claims of data/claims.yaml with every kind of verdict (a fast subset of the audit)
AUDIT_SAMPLE = ("cohort-models", "pythia-r-hs-tqa", "pythia-r-p", "bayes-factor", "nc-gpt-neo", "nc-qwen3-none",
                "near-1b-gamma", "loss-invariant", "opt-13b-coupling", "isocline-opt")
STEER_ALPHAS = {"tiny-llama": (0.0, 2.0, 8.0), "tiny-gpt2": (2.0, 8.0)}
PREDICT_GROUP = "/dynamics/predict/Pythia/3e+10"
DYNAMICS_GROUP = "/dynamics/linear/Pythia--OPT"


def cape(*argv: str) -> str:
    """Run one ``cape`` command in this process; its stdout, or RuntimeError with its stderr."""
    from cape_hpc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    if rc != 0:
        raise RuntimeError(f"cape {' '.join(argv)} exited {rc}: {err.getvalue().strip()}")
    return out.getvalue()


def write_sample(path: str | Path, *, n_resamples: int = 100) -> Path:
    """Write the sample results file (see the module doc) and return its path."""
    h5 = str(path)
    n = str(n_resamples)
    cape("analyze", "--families", *SAMPLE_FAMILIES, "--n-resamples", n, "--n-permutations", "200", "--seed", "1",
         "--out", h5, "--force")
    cape("dynamics", "--train", "Pythia", "--holdout", "OPT", "--model", "linear", "--n-resamples", "20",
         "--seed", "4", "--out", h5)
    cape("predict", "--family", "Pythia", "--size", "3e10", "--model", "linear", "--n-resamples", "20",
         "--seed", "5", "--out", h5)
    cape("reproduce", "--claim", ",".join(AUDIT_SAMPLE), "--n-resamples", "50", "--seed", "0", "--out", h5)
    for model, alphas in STEER_ALPHAS.items():
        cape("internals", "--model", model, "--max-prompts", "16", "--batch-size", "8", "--out", h5)
        for alpha in alphas:
            cape("steer", "--model", model, "--alpha", f"{alpha:g}", "--max-prompts", "6", "--max-new-tokens", "4",
                 "--batch-size", "6", "--out", h5)
    return Path(h5)


@functools.lru_cache(maxsize=None)
def cached_sample(n_resamples: int = 100) -> str:
    """One sample file per test process (the figure, data and browser tests share it)."""
    d = tempfile.mkdtemp(prefix="cape-report-sample-")
    atexit.register(shutil.rmtree, d, True)
    return str(write_sample(Path(d) / "sample.h5", n_resamples=n_resamples))
