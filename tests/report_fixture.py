"""One small results file for the report's tests, written by the real library functions.

The analyses on five families of the shipped table (the diagnose model, the h-field, the loss law
and the frontier on the whole shipped tables, as ``cape analyze`` does), ODE discovery and a size
prediction, the reproduction audit on a fast subset of the claims, and ``extract_internals`` /
``run_steering`` on two tiny random-weight models (offline, seconds), and the cross-model analysis
(``read_inputs`` + ``cross_model_analysis``) of synthetic internals of eleven models of the shipped
table (``/crossmodel``; tests/crossmodel_fixture.py).  Groups are stored at the
paths the commands write (``cape analyze --out`` ..., ``cape internals/steer --out``, ``cape crossmodel
--out``); only the cross-model group's per-model internals are synthetic.  The file is written once per test session (``cached_sample``).  ``cape(...)`` runs one
command in this process, for the tests that go through the CLI.
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
CROSSMODEL_GROUP = "/crossmodel"
# model -> (layers, last-layer coupling) of the synthetic cross-model table: a Pythia ladder with a dip
# (an internal N_c), a rising OPT ladder, a family of two (no estimate, with the reason)
CROSSMODEL_LADDERS = {"Pythia-70M": (3, 0.80), "Pythia-160M": (4, 0.66), "Pythia-410M": (5, 0.58),
                      "Pythia-1B": (4, 0.64), "Pythia-1.4B": (5, 0.70),
                      "OPT-125M": (3, 0.51), "OPT-350M": (4, 0.60), "OPT-1.3B": (5, 0.72), "OPT-2.7B": (6, 0.80),
                      "Qwen2.5-0.5B": (3, 0.55), "Qwen2.5-1.5B": (4, 0.62)}


def cape(*argv: str) -> str:
    """Run one ``cape`` command in this process; its stdout, or RuntimeError with its stderr."""
    from cape_hpc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    if rc != 0:
        raise RuntimeError(f"cape {' '.join(argv)} exited {rc}: {err.getvalue().strip()}")
    return out.getvalue()


def sample_groups(n_resamples: int = 100) -> dict[str, object]:
    """{group path: result} of the sample file (see the module doc)."""
    from cape_hpc.analysis import options as O
    from cape_hpc.analysis.coupling import local_coupling
    from cape_hpc.analysis.deff import DeffOptions, effective_dimension
    from cape_hpc.analysis.diagnose import fit_diagnose_model
    from cape_hpc.analysis.eigen import eigen_geometry
    from cape_hpc.analysis.frontier import frontier_fit
    from cape_hpc.analysis.hfield import h_field
    from cape_hpc.analysis.isocline import isocline
    from cape_hpc.analysis.losslaw import loss_law
    from cape_hpc.analysis.nc import NcOptions, estimate_nc
    from cape_hpc.analysis.phases import phases
    from cape_hpc.analysis.width import width_normalisation
    from cape_hpc.audit import AuditOptions, run_audit
    from cape_hpc.dynamics import DynamicsOptions, PredictOptions, discover, predict_size
    from cape_hpc.io.scores import load_frontier, load_loss, load_scores

    df, fr, loss = load_scores(), load_frontier(), load_loss()
    fams = tuple(SAMPLE_FAMILIES)
    g: dict[str, object] = {
        "/analysis/coupling": local_coupling(df, O.CouplingOptions(families=fams)),
        "/analysis/phases": phases(df, O.PhasesOptions(families=fams)),
        "/analysis/deff": effective_dimension(df, DeffOptions(families=fams, n_resamples=n_resamples, seed=2)),
        "/analysis/width": width_normalisation(df, O.WidthOptions(families=fams, n_permutations=200, seed=3)),
        "/analysis/hfield": h_field(df),
        "/analysis/isocline": isocline(df, O.IsoclineOptions(families=fams)),
        "/analysis/loss": loss_law(loss),
        "/analysis/eigen": eigen_geometry(df, O.EigenOptions(family="Pythia")),
        "/analysis/frontier": frontier_fit(fr),
        "/analysis/diagnose_model": fit_diagnose_model(df),
    }
    for est in ("quadratic", "sign-change"):
        for pooled in (False, True):
            g[f"/analysis/nc/{est}{'_pooled' if pooled else ''}"] = estimate_nc(
                df, NcOptions(families=fams, estimator=est, pooled=pooled, n_resamples=n_resamples, seed=1))
    g[DYNAMICS_GROUP] = discover(df, DynamicsOptions(train=("Pythia",), holdout=("OPT",), model="linear",
                                                     n_resamples=20, seed=4))
    g[PREDICT_GROUP] = predict_size(df, PredictOptions(family="Pythia", size=3e10, model="linear", n_resamples=20,
                                                       seed=5))
    g["/reproduce"] = run_audit(df, AuditOptions(only=AUDIT_SAMPLE, n_resamples=50, seed=0), frontier=fr, loss=loss)
    g.update(model_groups())
    g[CROSSMODEL_GROUP] = crossmodel_group(df, n_resamples=n_resamples)
    return g


def crossmodel_group(df, n_resamples: int = 100):
    """A real ``CrossModelResult`` (``cross_model_analysis`` on ``read_inputs`` of a merged-style file)
    of synthetic internals (tests/crossmodel_fixture.py) for models of the shipped table, whose
    family and parameter count come from the score table; their benchmark phases are the table's."""
    from crossmodel_fixture import synthetic_internals, write_internals

    from cape_hpc.crossmodel.families import cross_model_analysis
    from cape_hpc.crossmodel.options import CrossModelOptions
    from cape_hpc.crossmodel.table import read_inputs

    results = []
    for k, (model, (depth, final)) in enumerate(CROSSMODEL_LADDERS.items()):
        layers = [0.9 - 0.1 * i for i in range(depth - 1)] + [final]
        res, _ = synthetic_internals(model, layers, n_blocks=6, seed=40 + k, noise=0.02,
                                     prompt_sha="sha-report-fixture")
        results.append(res)
    with tempfile.TemporaryDirectory(prefix="cape-crossmodel-") as d:
        inputs = read_inputs([write_internals(Path(d) / "merged.h5", results)], df)
    return cross_model_analysis(inputs, CrossModelOptions(n_resamples=n_resamples, seed=6), df)


def model_groups() -> dict[str, object]:
    """Internals and steering of the tiny random-weight models (the real code, offline)."""
    from cape_hpc.internals.extract import extract_internals
    from cape_hpc.internals.prompts import load_prompts
    from cape_hpc.models.loading import load_model
    from cape_hpc.steering.evaluate import evaluate_steering
    from cape_hpc.steering.items import load_items, load_neutral
    from cape_hpc.steering.steer import calibrate_direction, run_steering

    prompts = load_prompts().subset(16)
    calibration = load_prompts(calibration=True).subset(16)
    out: dict[str, object] = {}
    for spec, alphas in STEER_ALPHAS.items():
        loaded = load_model(spec)
        r = extract_internals(loaded, prompts, batch_size=8)
        out[r.group] = r
        direction = calibrate_direction(loaded, calibration)
        for alpha in alphas:
            s = run_steering(loaded, calibration, prompts, direction=direction, alpha=alpha, max_prompts=6,
                             max_new_tokens=4, batch_size=6)
            out[s.group] = s
        o = evaluate_steering(loaded, load_items(), neutral=load_neutral(), max_items=12, max_neutral=3, folds=3,
                              alphas=(-0.5, 0.5, 2.0), generate=False)
        out[o.group] = o
    return out


def write_sample(path: str | Path, *, n_resamples: int = 100) -> Path:
    """Write the sample results file (see the module doc) and return its path."""
    from cape_hpc.io.store import write_results

    return Path(write_results(path, sample_groups(n_resamples), force=True))


@functools.lru_cache(maxsize=None)
def cached_sample(n_resamples: int = 100) -> str:
    """One sample file per test process (the figure, data and browser tests share it)."""
    d = tempfile.mkdtemp(prefix="cape-report-sample-")
    atexit.register(shutil.rmtree, d, True)
    return str(write_sample(Path(d) / "sample.h5", n_resamples=n_resamples))


#: the groups of the sample that `cape merge` + `cape crossmodel` write (the rest: `cape analyze`,
#: `cape steer`, `cape dynamics`, `cape reproduce`)
CROSSMODEL_PREFIXES = ("/internals/", "/crossmodel")


def split_sample(folder: str | Path) -> tuple[Path, Path]:
    """The sample written as two files of one study: (analysis file, cross-model file), each group in one
    of them (the decoded results of ``cached_sample`` written again with ``write_results``)."""
    from cape_hpc.io.store import write_results
    from cape_hpc.report.data import Results

    stored = Results.load(cached_sample()).stored
    folder = Path(folder)
    parts = ({k: v for k, v in stored.items() if not k.startswith(CROSSMODEL_PREFIXES)},
             {k: v for k, v in stored.items() if k.startswith(CROSSMODEL_PREFIXES)})
    return tuple(Path(write_results(folder / name, groups, force=True))
                 for name, groups in zip(("analysis.h5", "sweep.h5"), parts))
