"""Issue 23 item 1: `cape scores import` and `--scores DIR|FILE.json`.

References are independent of the code under test: the numbers are read from the files here with
plain ``json`` and the documented map (HS = hellaswag acc_norm, TQA = TruthfulQA MC2, ARC =
arc_challenge acc_norm, WG = winogrande acc, MMLU = unweighted mean of the 57 subjects' acc), x100.
Real files written by other groups are in the checkout's sibling folder shared/external/evalresults
(SOURCES.md there), outside the repository: their tests skip, with the reason, where it is absent.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from cape_hpc.cli import main
from cape_hpc.errors import DataError, OptionError
from cape_hpc.io.evalresults import ImportOptions, companion_path, import_results
from cape_hpc.io.evalresults_cells import cells_of_file
from cape_hpc.io.evalresults_readers import read_run_file
from cape_hpc.io.scores import load_scores

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "external" / "evalresults"
REAL = sorted(EXTERNAL.rglob("*.json")) if EXTERNAL.is_dir() else []
needs_real = pytest.mark.skipif(not REAL, reason="the sibling folder shared/external/evalresults is absent (real files of "
                                                 "other groups; see its SOURCES.md)")
SUBJECTS_CATEGORIES = {"humanities", "other", "social_sciences", "stem"}
# StableLM's external evaluations: the real files that carry both HS and TQA; parameter counts from the
# model cards (the files state none)
STABLELM_PARAMS = {"pythia-2.8b-deduped": 2.8e9, "Llama-2-7b-hf": 6.74e9, "mpt-7b": 6.7e9,
                   "open_llama_3b_v2": 3.43e9, "open_llama_7b_v2": 6.74e9, "RedPajama-INCITE-7B-Base": 6.86e9,
                   "stablelm-base-alpha-3b-v2": 2.8e9}


def cape(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line(rc: int, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------
# independent reading of the files (plain json, the documented map)

def _subject_values(results: dict, metric: str) -> dict[str, float]:
    out = {}
    for key, entry in results.items():
        m = re.fullmatch(r"(?:mmlu_|hendrycksTest-|harness\|hendrycksTest-)(\w+?)(?:\|\d+)?", key)
        if m and m[1] not in SUBJECTS_CATEGORIES and metric in entry:
            out[m[1]] = entry[metric]
    return out


def expected_from_file(path: Path) -> dict[str, float]:
    """{column: percent} by the documented map, read with plain json (format by its keys)."""
    doc = json.loads(path.read_text())
    if "evaluation_results" in doc:  # Every Eval Ever: only explicitly named map metrics count
        names = {(e["evaluation_name"].lower(), e["metric_config"].get("evaluation_description", "")): e
                 for e in doc["evaluation_results"]}
        want = {"HS": ("hellaswag", "acc_norm"), "TQA": ("truthfulqa", "mc2"), "ARC": ("arc_challenge", "acc_norm"),
                "WG": ("winogrande", "acc")}
        return {c: 100 * names[k]["score_details"]["score"] for c, k in want.items() if k in names}
    res = doc["results"]
    if any(k.startswith("harness|") for k in res):   # leaderboard: strip the harness|...|n wrapper
        res = {k.split("|")[1].replace("arc:challenge", "arc_challenge").replace("truthfulqa:mc", "truthfulqa_mc"): v
               for k, v in res.items() if k.count("|") == 2}
    v04 = any("," in m for e in res.values() for m in e)
    suffix = ",none" if v04 else ""
    out = {}
    for col, task, metric in (("HS", "hellaswag", "acc_norm"), ("ARC", "arc_challenge", "acc_norm"),
                              ("WG", "winogrande", "acc")):
        if task in res and metric + suffix in res[task]:
            out[col] = 100 * res[task][metric + suffix]
    if v04 and "truthfulqa_mc2" in res:
        out["TQA"] = 100 * res["truthfulqa_mc2"]["acc,none"]
    elif "truthfulqa_mc" in res:
        out["TQA"] = 100 * res["truthfulqa_mc"]["mc2"]
    subjects = _subject_values(res, "acc" + suffix)
    if subjects:
        assert len(subjects) == 57, (path, len(subjects))
        out["MMLU"] = 100 * float(np.mean(list(subjects.values())))
    return out


# ----------------------------------------------------------------------------------------------
# the real files

@needs_real
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name[:60])
def test_real_file_values_are_the_files_numbers_x100(path):
    expected = expected_from_file(path)
    try:
        cells = cells_of_file(read_run_file(path), ImportOptions().rules())
    except DataError as exc:
        assert not expected, f"refused although the file has {expected}: {exc}"
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    got = {c.column: c.value for c in cells}
    assert got.keys() == expected.keys()
    for col, value in expected.items():
        assert got[col] == pytest.approx(value, rel=1e-12, abs=1e-12), col
    assert all(c.sha256 and c.file == str(path) for c in cells)


@needs_real
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name[:60])
def test_every_real_file_imports_or_is_refused_in_one_line(path, tmp_path, capsys):
    params = tmp_path / "params.csv"
    params.write_text("model,params\n" + "".join(f"{m},{p:.0f}\n" for m, p in STABLELM_PARAMS.items()))
    rc, out, err = cape(capsys, "scores", "import", path, "-o", tmp_path / "t.csv", "--params", params)
    expected = expected_from_file(path)
    if {"HS", "TQA"} <= expected.keys():
        assert rc == 0, err
        df = load_scores(tmp_path / "t.csv")
        for col, value in expected.items():
            assert df[col].iloc[0] == pytest.approx(value, rel=1e-12), col
    else:
        line = one_line(rc, err, str(path))
        missing = [c for c in ("HS", "TQA") if c not in expected]
        assert any(f"no {c}" in line for c in missing) or "none of the mapped benchmarks" in line, line
        assert not (tmp_path / "t.csv").exists()


@needs_real
def test_real_leaderboard_protocol_files_make_one_model_with_each_benchmarks_n_shot(tmp_path):
    files = sorted(EXTERNAL.glob("lmeval03/*olltask*.json"))
    params = tmp_path / "p.csv"
    params.write_text("model,params\nstablelm-base-alpha-3b-v2,2800000000\n")
    imp = import_results(files, ImportOptions(params=str(params)))
    shots = {c.column: c.n_shot for c in imp.cells}
    assert shots == {"HS": 10, "TQA": 0, "ARC": 25, "MMLU": 5}     # the Open LLM Leaderboard v1 protocol
    df = imp.frame()
    expected = {k: v for f in files for k, v in expected_from_file(f).items()}
    for col, value in expected.items():
        assert df[col].iloc[0] == pytest.approx(value, rel=1e-12)
    assert all(math.isnan(c.stderr) for c in imp.cells)          # these files carry no stderr


@needs_real
def test_real_mmlu_subject_mean_and_aggregate_differ_as_documented():
    path = EXTERNAL / "lmeval04" / "Qwen__Qwen2.5-1.5B__lmeh.json"
    doc = json.loads(path.read_text())
    run = read_run_file(path)
    mean = cells_of_file(run, ImportOptions().rules())
    agg = cells_of_file(run, ImportOptions(mmlu="aggregate").rules())
    m_mean = next(c for c in mean if c.column == "MMLU")
    m_agg = next(c for c in agg if c.column == "MMLU")
    subjects = _subject_values(doc["results"], "acc,none")
    sizes = {s: doc["n-samples"][f"mmlu_{s}"]["effective"] for s in subjects}
    weighted = sum(subjects[s] * sizes[s] for s in subjects) / sum(sizes.values())
    assert m_agg.value == pytest.approx(100 * weighted, rel=1e-9)      # the group value is size-weighted
    assert m_agg.value == pytest.approx(100 * doc["results"]["mmlu"]["acc,none"], rel=1e-15)
    assert m_mean.value == pytest.approx(100 * np.mean(list(subjects.values())), rel=1e-12)
    assert 1.5 < m_mean.value - m_agg.value < 2.6     # as the docs say (1.7 here)
    assert m_agg.n_shot == 0 and m_mean.n_shot == 0                     # the group's n-shot from its subjects


# ----------------------------------------------------------------------------------------------
# files written here in the four formats

def lmeval04(model_id: str, params: float | None, pct: dict[str, float], *, date: float = 1.74e9, shots: int = 0,
             stderr="N/A", tqa_version: float = 3.0, subjects: dict[str, float] | None = None) -> dict:
    """A results file as lm_eval 0.4 writes it (keys "<metric>,<filter>", groups repeated, n-shot)."""
    f = {k: v / 100 for k, v in pct.items()}
    res = {"hellaswag": {"alias": "hellaswag", "acc,none": f["HS"] - 0.1, "acc_stderr,none": 0.005,
                         "acc_norm,none": f["HS"], "acc_norm_stderr,none": stderr},
           "truthfulqa_mc1": {"alias": "truthfulqa_mc1", "acc,none": f["TQA"] - 0.12, "acc_stderr,none": 0.01},
           "truthfulqa_mc2": {"alias": "truthfulqa_mc2", "acc,none": f["TQA"], "acc_stderr,none": 0.014},
           "arc_challenge": {"acc,none": f["ARC"] - 0.03, "acc_norm,none": f["ARC"], "alias": "arc_challenge"},
           "winogrande": {"alias": "winogrande", "acc,none": f["WG"], "acc_stderr,none": 0.013}}
    subj = subjects or {s: f["MMLU"] for s in _subjects()}
    for s, v in subj.items():
        res[f"mmlu_{s}"] = {"alias": f"  - {s}", "acc,none": v, "acc_stderr,none": 0.04}
    res["mmlu"] = {"acc,none": float(np.mean(list(subj.values()))) + 0.004, "acc_stderr,none": 0.004, "alias": "mmlu"}
    tasks = [t for t in res if t != "mmlu"]
    return {"results": res, "groups": {"mmlu": dict(res["mmlu"])}, "group_subtasks": {"mmlu": []},
            "configs": {}, "versions": {**{t: 1.0 for t in tasks}, "truthfulqa_mc2": tqa_version,
                                        "truthfulqa_mc1": 2.0, "mmlu": 2},
            "n-shot": {t: shots for t in tasks}, "higher_is_better": {},
            "config": {"model": "hf", "model_args": f"pretrained={model_id},dtype=bfloat16",
                       **({"model_num_parameters": params} if params else {}), "model_dtype": "torch.bfloat16",
                       "model_revision": "main", "model_sha": "", "batch_size": 8},
            "git_hash": "82b812f", "date": date, "model_name": model_id,
            "model_name_sanitized": model_id.replace("/", "__")}


def _subjects() -> tuple[str, ...]:
    """The 57 subjects, as the real files name them (checked against them in the real-file tests)."""
    from cape_hpc.io.evalresults_map import MMLU_SUBJECTS

    assert len(set(MMLU_SUBJECTS)) == 57
    return MMLU_SUBJECTS


def write_output_path(root: Path, doc: dict, stamp: str = "2025-03-03T00-05-12.300060") -> Path:
    """``lm_eval --output_path root``: root/<model_name_sanitized>/results_<date>.json."""
    d = root / doc["model_name_sanitized"]
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"results_{stamp}.json"
    p.write_text(json.dumps(doc, indent=2))
    return p


# two families of five sizes, percent values typed with two decimals
TYPED = {
    "Acme": [(0.16e9, 30.12, 44.21, 22.40, 51.30, 25.10), (0.41e9, 36.55, 41.07, 24.91, 53.12, 25.87),
             (1.0e9, 45.31, 38.66, 29.35, 56.84, 26.43), (2.8e9, 58.02, 36.14, 35.80, 60.21, 28.95),
             (6.9e9, 67.44, 35.02, 41.27, 64.80, 33.12)],
    "Zeta": [(0.12e9, 29.50, 42.80, 21.76, 50.91, 24.82), (0.35e9, 34.61, 40.15, 23.55, 52.02, 25.31),
             (1.3e9, 48.90, 37.92, 30.12, 57.70, 26.99), (2.7e9, 55.13, 37.40, 33.96, 59.42, 27.70),
             (13e9, 72.85, 36.81, 46.20, 68.33, 41.26)],
}


def _typed_rows():
    for fam, rows in TYPED.items():
        for params, hs, tqa, arc, wg, mmlu in rows:
            name = f"{fam}-{params / 1e9:g}B"
            yield fam, name, params, {"HS": hs, "TQA": tqa, "ARC": arc, "WG": wg, "MMLU": mmlu}


def test_lmeval_folder_gives_the_same_analyze_results_as_the_numbers_typed_into_the_csv(tmp_path, capsys):
    out = tmp_path / "lm_eval_out"
    typed = ["model,family,params,d_model,n_layers,n_heads,HS,TQA,ARC,WG,MMLU,tqa_variant,source"]
    for fam, name, params, pct in _typed_rows():
        write_output_path(out, lmeval04(f"org/{name}", params, pct))
        typed.append(f"{name},{fam},{params:.0f},,,,{pct['HS']},{pct['TQA']},{pct['ARC']},{pct['WG']},"
                     f"{pct['MMLU']},mc2,typed")
    (tmp_path / "typed.csv").write_text("\n".join(typed) + "\n")
    runs = {}
    for label, scores in (("typed", tmp_path / "typed.csv"), ("folder", out)):
        rc, text, err = cape(capsys, "analyze", "--scores", scores, "--json", "-n", "300")
        assert rc == 0, err
        runs[label] = json.loads(text)
    assert runs["folder"]["inputs"]["base"]["n_rows"] == 10
    _assert_same_numbers(runs["typed"]["analysis"], runs["folder"]["analysis"], "analysis")
    assert runs["typed"]["skipped"] == runs["folder"]["skipped"]


def _assert_same_numbers(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k in ("inputs", "sha256", "file", "path", "version"):
                continue
            _assert_same_numbers(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-9), where      # 45.31 typed vs 0.4531 x 100
    else:
        assert a == b, where


def test_import_writes_the_table_and_its_provenance_and_keeps_existing_files(tmp_path, capsys):
    out = tmp_path / "res"
    paths = [write_output_path(out, lmeval04(f"org/{name}", params, pct)) for _, name, params, pct in _typed_rows()]
    table = tmp_path / "table.csv"
    rc, text, err = cape(capsys, "scores", "import", out, "-o", table)
    assert rc == 0, err
    df = load_scores(table)
    assert list(df["model"][:2]) == ["Acme-0.16B", "Acme-0.41B"] and set(df["family"]) == {"Acme", "Zeta"}
    for (_, name, params, pct), path in zip(_typed_rows(), paths):
        row = df.loc[df["model"] == name].iloc[0]
        assert row["params"] == params
        for col, value in pct.items():
            assert row[col] == pytest.approx(value, rel=1e-12)
        prov = json.loads(row["provenance"])
        assert prov["HS"]["file"] == str(path) and prov["HS"]["harness"] == "lm-eval 0.4 (git 82b812f)"
        assert prov["TQA"]["task_version"] == "3.0" and prov["HS"]["n_shot"] == 0
        assert prov["HS"]["stderr"] is None and prov["TQA"]["stderr"] == pytest.approx(1.4)   # "N/A" and 0.014
    side = json.loads(companion_path(table).read_text())
    digests = {c["file"]: c["sha256"] for c in side["cells"]}
    assert digests == {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert side["metric_map"].startswith("HS = hellaswag acc_norm; TQA = truthfulqa mc2")
    before = table.read_bytes()
    rc, _, err = cape(capsys, "scores", "import", paths[0], "-o", table)
    one_line(rc, err, str(table), "--force")
    assert table.read_bytes() == before


def test_scores_folder_into_analyze_out_keeps_the_provenance_in_the_scores_group(tmp_path, capsys):
    from cape_hpc.io.store import read_results

    out = tmp_path / "res"
    for _, name, params, pct in _typed_rows():
        write_output_path(out, lmeval04(f"org/{name}", params, pct))
    rc, _, err = cape(capsys, "coupling", "--scores", out, "--out", tmp_path / "r.h5")
    assert rc == 0, err
    tree = read_results(tmp_path / "r.h5", "/scores")
    group = next(iter(tree.values()))
    prov = [json.loads(str(p.decode() if isinstance(p, bytes) else p)) for p in group["table"]["provenance"]]
    assert len(prov) == 10 and all(set(p) == {"HS", "TQA", "ARC", "WG", "MMLU"} for p in prov)
    assert all(len(p["HS"]["sha256"]) == 64 for p in prov)


def test_the_newest_file_per_model_and_n_shot_wins_and_the_rest_are_listed(tmp_path):
    pct = {"HS": 50.0, "TQA": 40.0, "ARC": 30.0, "WG": 55.0, "MMLU": 27.0}
    old = write_output_path(tmp_path, lmeval04("org/M-1B", 1e9, pct, date=1.70e9), "2023-11-14T22-13-20")
    new = write_output_path(tmp_path, lmeval04("org/M-1B", 1e9, {**pct, "HS": 52.0}, date=1.75e9),
                            "2025-06-15T14-13-20")
    imp = import_results([tmp_path])
    assert imp.frame()["HS"].iloc[0] == pytest.approx(52.0)
    assert {c.file for c in imp.cells} == {str(new)}
    assert {(c.column, c.file) for c in imp.superseded} == {(col, str(old)) for col in pct}


def test_one_benchmark_at_two_n_shot_settings_is_refused_unless_allowed(tmp_path):
    pct = {"HS": 50.0, "TQA": 40.0, "ARC": 30.0, "WG": 55.0, "MMLU": 27.0}
    write_output_path(tmp_path, lmeval04("org/A-1B", 1e9, pct, shots=0))
    p = write_output_path(tmp_path, lmeval04("org/A-3B", 3e9, pct, shots=5))
    with pytest.raises(DataError, match=r"5-shot.*0-shot.*--allow-mixed") as exc:
        import_results([tmp_path])
    assert str(p) in str(exc.value) or "A-1B" in str(exc.value)
    imp = import_results([tmp_path], ImportOptions(allow_mixed=True))
    assert sorted(c.n_shot for c in imp.cells if c.column == "HS") == [0, 5]


def test_a_task_version_change_across_models_is_refused(tmp_path):
    pct = {"HS": 50.0, "TQA": 40.0, "ARC": 30.0, "WG": 55.0, "MMLU": 27.0}
    write_output_path(tmp_path, lmeval04("org/A-1B", 1e9, pct, tqa_version=2.0))
    write_output_path(tmp_path, lmeval04("org/A-3B", 3e9, pct, tqa_version=3.0))
    with pytest.raises(DataError, match=r"TQA of .*task version 3.0.*version 2.0"):
        import_results([tmp_path])


def test_parameter_counts_from_params_file_then_the_shipped_table_else_an_error(tmp_path):
    pct = {"HS": 50.0, "TQA": 40.0, "ARC": 30.0, "WG": 55.0, "MMLU": 27.0}
    write_output_path(tmp_path / "a", lmeval04("facebook/opt-125m", None, pct))       # in data/base_models.csv
    imp = import_results([tmp_path / "a"])
    row = imp.models[0]
    assert (row.params, row.params_from, row.family, row.family_from) == (125e6, "registry", "OPT", "registry")
    write_output_path(tmp_path / "b", lmeval04("acme/Unknown-7B", None, pct))
    with pytest.raises(DataError, match=r"acme/Unknown-7B: the file states no parameter count.*--params"):
        import_results([tmp_path / "b"])
    (tmp_path / "p.csv").write_text("model,params\nacme/Unknown-7B,7.1e9\n")
    imp = import_results([tmp_path / "b"], ImportOptions(params=str(tmp_path / "p.csv"),
                                                         family=("^acme/=Acme",)))
    assert (imp.models[0].params, imp.models[0].family) == (7.1e9, "Acme")


def test_metric_override_and_mmlu_aggregate_change_the_cells(tmp_path):
    pct = {"HS": 50.0, "TQA": 40.0, "ARC": 30.0, "WG": 55.0, "MMLU": 27.0}
    write_output_path(tmp_path, lmeval04("org/M-1B", 1e9, pct))
    df = import_results([tmp_path], ImportOptions(metric=("TQA=truthfulqa:mc1", "HS=hellaswag:acc"),
                                                  mmlu="aggregate")).frame()
    assert df["TQA"].iloc[0] == pytest.approx(28.0) and df["tqa_variant"].iloc[0] == "mc1"
    assert df["HS"].iloc[0] == pytest.approx(40.0) and df["MMLU"].iloc[0] == pytest.approx(27.4)
    with pytest.raises(OptionError, match="--metric"):
        ImportOptions(metric=("TQA=truthfulqa:acc_norm",))


def test_leaderboard_v1_eee_and_lmeval03_files_written_here(tmp_path):
    subj = {s: 0.25 + 0.002 * i for i, s in enumerate(_subjects())}
    oll = {"config_general": {"model_name": "acme/Acme-7B", "lighteval_sha": "494ee12240e716e804ae9ea834f84a2c864c07ca"},
           "results": {"harness|arc:challenge|25": {"acc": 0.5, "acc_stderr": 0.01, "acc_norm": 0.53, "acc_norm_stderr": 0.01},
                       "harness|hellaswag|10": {"acc": 0.6, "acc_norm": 0.78},
                       "harness|truthfulqa:mc|0": {"mc1": 0.25, "mc2": 0.39, "mc2_stderr": 0.013},
                       "harness|winogrande|5": {"acc": 0.74},
                       **{f"harness|hendrycksTest-{s}|5": {"acc": v, "acc_norm": v} for s, v in subj.items()},
                       "all": {"acc": 0.5}},
           "versions": {"harness|hellaswag|10": 0, "harness|truthfulqa:mc|0": 1, "all": 0}}
    eee = {"schema_version": "0.2.0", "retrieved_timestamp": "1770834891.1", "model_info": {"id": "acme/Acme-3B"},
           "evaluation_results": [
               {"evaluation_name": "hellaswag", "metric_config": {"evaluation_description": "acc_norm"},
                "score_details": {"score": 0.66}},
               {"evaluation_name": "truthfulqa", "metric_config": {"evaluation_description": "mc2"},
                "score_details": {"score": 0.37}}]}
    v03 = {"results": {"hellaswag": {"acc": 0.4, "acc_norm": 0.51}, "truthfulqa_mc": {"mc1": 0.2, "mc2": 0.36}},
           "versions": {"hellaswag": 0, "truthfulqa_mc": 1},
           "config": {"model": "hf-causal", "model_args": "pretrained=acme/Acme-1B,revision=step1000", "num_fewshot": 0}}
    files = {}
    for name, doc in (("oll.json", oll), ("eee.json", eee), ("v03.json", v03)):
        files[name] = tmp_path / name
        files[name].write_text(json.dumps(doc))
        expected = expected_from_file(files[name])
        got = {c.column: c.value for c in cells_of_file(read_run_file(files[name]), ImportOptions().rules())}
        assert got == pytest.approx(expected, rel=1e-12), name
    assert expected_from_file(files["oll.json"])["MMLU"] == pytest.approx(100 * np.mean(list(subj.values())))
    run = read_run_file(files["v03.json"])
    assert (run.fmt, run.model_id, run.revision) == ("lm-eval 0.3", "acme/Acme-1B", "step1000")
    p = tmp_path / "p.csv"
    p.write_text("model,params\nAcme-7B,7e9\nAcme-3B,3e9\nAcme-1B,1e9\n")
    imp = import_results(list(files.values()), ImportOptions(params=str(p), allow_mixed=True))
    df = imp.frame().set_index("model")
    assert sorted(df.index) == ["Acme-1B@step1000", "Acme-3B", "Acme-7B"]
    assert df.loc["Acme-1B@step1000", "step"] == 1000 and math.isnan(df.loc["Acme-7B", "step"])


@pytest.mark.parametrize("content, needle", [
    ("{", "not valid JSON"), ("[1, 2]", "not an evaluation-results file"),
    ('{"results": {"hellaswag": {"acc_norm": 1.7}}, "config": {"model": "x"}}', "not a fraction"),
    ('{"results": {"hellaswag": {"acc_norm": 0.5}}, "config": {}}', "names no model"),
    ('{"results": {"lambada": {"acc": 0.5}}, "config": {"model": "x"}}', "none of the mapped benchmarks"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, capsys, content, needle):
    f = tmp_path / "bad.json"
    f.write_text(content)
    rc, _, err = cape(capsys, "scores", "import", f, "-o", tmp_path / "t.csv")
    one_line(rc, err, str(f), needle)
    rc, _, err = cape(capsys, "coupling", "--scores", f)               # the same reader behind --scores
    one_line(rc, err, str(f), needle)


def test_help_documents_the_metric_map(capsys):
    with pytest.raises(SystemExit):
        main(["scores", "import", "--help"])
    text = capsys.readouterr().out
    for needle in ("HS   = hellaswag acc_norm", "TQA  = TruthfulQA MC2", "ARC  = arc_challenge acc_norm",
                   "WG   = winogrande acc", "unweighted mean of the 57 subjects", "--mmlu", "--allow-mixed",
                   "--params", "--family"):
        assert needle in text, needle


def test_the_import_round_trips_through_hdf5(tmp_path):
    from roundtrip import assert_roundtrip

    pct = {"HS": 50.0, "TQA": 40.0, "ARC": 30.0, "WG": 55.0, "MMLU": 27.0}
    write_output_path(tmp_path / "res", lmeval04("org/M-1B", 1e9, pct, date=1.70e9), "2023-11-14T22-13-20")
    write_output_path(tmp_path / "res", lmeval04("org/M-1B", 1e9, pct, date=1.75e9), "2025-06-15T14-13-20")
    imp = import_results([tmp_path / "res"])
    assert imp.superseded
    assert_roundtrip(imp, tmp_path)


@needs_real
def test_the_subject_list_is_the_one_the_real_files_use():
    from cape_hpc.io.evalresults_map import MMLU_SUBJECTS

    for name in ("lmeval03/facebook__opt-125m__lmeh.json", "lmeval04/Qwen__Qwen2.5-3B__lmeh.json"):
        res = json.loads((EXTERNAL / name).read_text())["results"]
        assert set(_subject_values(res, "acc,none" if "lmeval04" in name else "acc")) == set(MMLU_SUBJECTS)
