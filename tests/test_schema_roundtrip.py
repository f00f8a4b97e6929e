"""Every result type the package defines is written through HDF5, read back with ``from_tree`` and
compared field by field -- built by the real library functions, not by hand.

The list of classes is not written here: it is the schema's registry after importing every module of
the package, so a new result class without a factory below fails ``test_every_result_class_round_trips``.
"""
from __future__ import annotations

import importlib
import pkgutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

import cape_hpc
from cape_hpc.schema import RESULT_CLASSES, Result, SchemaError, load_result

from roundtrip import assert_roundtrip


def all_result_classes() -> dict[str, type]:
    for info in pkgutil.walk_packages(cape_hpc.__path__, "cape_hpc."):
        importlib.import_module(info.name)
    # the package's classes (tests may register classes of their own in the same process)
    return {k: c for k, c in RESULT_CLASSES.items() if c.__module__.startswith("cape_hpc.")}


def sweep_results(tmp_path: Path) -> list[Result]:
    """A real (synthetic-work, torch-free) sweep of three models, its merge and the merged index."""
    from cape_hpc.io.store import read_results
    from cape_hpc.sweep.merge import SweepIndex, merge_shards
    from cape_hpc.sweep.runner import run_sweep
    from cape_hpc.sweep.spec import load_job

    job_file = tmp_path / "job.yaml"
    job_file.write_text(textwrap.dedent(f"""
        name: roundtrip
        work: synthetic
        output_dir: {tmp_path / 'out'}
        steering: {{enabled: true, alpha: 2.0}}
        models:
          - {{id: org/a, name: a, params: 3e9, n_layers: 4}}
          - {{id: org/b, name: b, params: 1e9}}
        """))
    job = load_job(job_file)
    res = run_sweep(job, use_mpi=False)
    merged = merge_shards(Path(job.output_dir), tmp_path / "merged.h5")
    index = SweepIndex.from_tree(read_results(tmp_path / "merged.h5", "/sweep"), where="/sweep")
    return [res, merged, index]


def _analyze_run() -> Result:
    """What `cape analyze` stores under /analyze: its rows run through the command's own skip rule
    (a single-family analysis whose family is absent; tests/test_reliability_cli.py runs the command)."""
    from cape_hpc.commands.analysis import analyses
    from cape_hpc.io.runs import AnalyzeRun, SkippedAnalysis
    from cape_hpc.schema import Provenance

    rows = analyses()
    return AnalyzeRun([a.name for a in rows if not a.family],
                      [SkippedAnalysis(a.name, "family 'X' is not in the table") for a in rows if a.family],
                      Provenance("cape analyze", {"set": None}))


def library_results(tmp_path: Path) -> list[Result]:
    """Results that the report's sample file does not hold, from their producing functions."""
    from cape_hpc.analysis.diagnose import diagnose
    from cape_hpc.analysis.fixedpoint import coupling_fixed_point
    from cape_hpc.analysis.population import population_coupling
    from cape_hpc.dynamics import discover, phase_fits
    from cape_hpc.dynamics.options import DynamicsOptions
    from cape_hpc.io.scores import InputTable, load_scores
    from cape_hpc.stats import BootstrapOptions, bootstrap

    df = load_scores()
    x = df["HS"].to_numpy(dtype=float)
    boot = bootstrap(lambda idx: float(np.mean(x[idx])), BootstrapOptions(n_resamples=200, seed=3), n=len(x))
    dyn = discover(df, DynamicsOptions(n_resamples=50))  # Pythia -> Llama-2, with term stability
    out = [boot, diagnose(df, 7e9, family="Llama-2"), phase_fits(df), dyn, population_coupling(df),
           coupling_fixed_point(df), InputTable.of(df)]
    if getattr(dyn, "term_stability", None) is not None:
        out.append(dyn.term_stability)
    out.append(_analyze_run())
    out += _score_import(tmp_path)
    return out + sweep_results(tmp_path)


def _score_import(tmp_path: Path) -> list[Result]:
    """`cape scores import` of files written as lm_eval 0.4 does (tests/test_scores_import.py), and a
    sweep's ScoreRun holding such a document (lm-eval itself runs in tests/test_scores_import_sweep.py)."""
    import json

    from cape_hpc.io.evalresults import import_results
    from cape_hpc.schema import Provenance
    from cape_hpc.sweep.scores import ScoreRun
    from test_scores_import import lmeval04, write_output_path

    pct = {"HS": 50.0, "TQA": 40.0, "ARC": 30.0, "WG": 55.0, "MMLU": 27.0}
    write_output_path(tmp_path / "evalres", lmeval04("org/M-1B", 1e9, pct, date=1.7e9), "2023-11-14T22-13-20")
    write_output_path(tmp_path / "evalres", lmeval04("org/M-1B", 1e9, pct, date=1.8e9), "2027-01-15T08-00-00")
    run = ScoreRun("M-1B", "org/M-1B", "main", "float32", 1e9, "M", ["hellaswag:0"], "0.4.13", 1.5,
                   json.dumps(lmeval04("org/M-1B", 1e9, pct)), Provenance("cape_hpc.sweep.scores.run_scores"))
    return [import_results([tmp_path / "evalres"]), run]


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> dict[str, Result]:
    from cape_hpc.io.store import read_results
    from report_fixture import cached_sample

    tmp = tmp_path_factory.mktemp("roundtrip")
    found: dict[str, Result] = {}

    def visit(node, path):
        if isinstance(node, dict):
            if "_schema" in node:
                obj = load_result(node, where=path)
                found.setdefault(type(obj).__name__, obj)
                return
            for k, v in node.items():
                visit(v, f"{path}/{k}")

    visit(read_results(cached_sample()), "")
    for obj in library_results(tmp):
        found.setdefault(type(obj).__name__, obj)
    return found


def test_every_result_class_round_trips(instances, tmp_path):
    classes = all_result_classes()
    assert len(classes) >= 20
    missing = sorted(set(classes) - set(instances))
    assert not missing, f"no real instance of {missing}: add a factory to library_results()"
    for name, obj in sorted(instances.items()):
        assert isinstance(obj, classes[name])
        assert_roundtrip(obj, tmp_path, group=f"/roundtrip/{name}")


def test_a_stored_result_that_does_not_match_its_class_is_named(instances, tmp_path):
    """Renamed, missing and mistyped fields, a foreign class name and an old schema version are all
    SchemaErrors naming the group and the field."""
    obj = instances["NcResult"]
    tree = obj.to_tree()
    bad = dict(tree)
    bad["estimator_name"] = bad.pop("estimator")
    with pytest.raises(SchemaError, match=r"/analysis/nc/x: field\(s\) 'estimator_name' are not fields"):
        type(obj).from_tree(bad, where="/analysis/nc/x")
    bad = dict(tree)
    del bad["b1"]
    with pytest.raises(SchemaError, match=r"/analysis/nc/x: field 'b1' of NcResult is missing"):
        type(obj).from_tree(bad, where="/analysis/nc/x")
    bad = dict(tree, pooled="yes")
    with pytest.raises(SchemaError, match=r"/analysis/nc/x/pooled: expected a bool"):
        type(obj).from_tree(bad, where="/analysis/nc/x")
    with pytest.raises(SchemaError, match="holds 'DeffResult', not a stored NcResult"):
        type(obj).from_tree(dict(tree, _schema="DeffResult"), where="/g")
    with pytest.raises(SchemaError, match="schema version 0"):
        type(obj).from_tree(dict(tree, _schema_version=0), where="/g")


def test_results_refuse_undeclared_attributes(instances):
    for obj in instances.values():
        with pytest.raises(AttributeError, match="declare it in the class"):
            obj.added_later = 1
