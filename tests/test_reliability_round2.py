"""Issue 26: verdicts never come from bad input (items 1, 2, 7), nothing but a regular file is ever
replaced (3, 4, 5), a full disk is one line (6), outputs are checked before the computation (8).

Every error case runs the real CLI in a subprocess and asserts exit 2 and exactly one line on
stderr (``one_line_error``).  Device tests create a FIFO or a device node in a temporary folder
(never a real device) and the device-node and full-disk tests run only as root.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from test_reliability_cli import cape, one_line_error

ROOT = Path(__file__).resolve().parents[1]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and mounts need root")


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith((".tmp.h5", ".tmp", ".lock")))


def _internals_file(path: Path, models=("A", "B")) -> Path:
    """A results file with /internals/<model> groups written by the library (content hash stored)."""
    from crossmodel_fixture import synthetic_internals

    from cape_hpc.internals.results import store_name
    from cape_hpc.io.store import write_results

    groups = {}
    for i, m in enumerate(models):
        res, _ = synthetic_internals(m, [0.2, 0.5 + 0.1 * i], seed=i)
        groups[f"/internals/{store_name(res.model)}"] = res
    write_results(path, groups)
    return path


def _results_file(path: Path, value: float = 1.0) -> Path:
    from cape_hpc.io.store import write_results

    write_results(path, {"/x": {"v": np.arange(64, dtype=float) * value, "note": "n"}})
    return path


def _flip_one_bit_in_a_data_block(path: Path) -> str:
    """Flip the lowest bit of the first byte of the largest float dataset's raw data; returns its name."""
    found = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.id.get_offset() is not None:
                found.append((obj.nbytes, name, obj.id.get_offset()))
        f.visititems(visit)
    _, name, offset = max(found)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 1]))
    return name


# ----------------------------------------------------------------------------------------------
# item 1: reproduce --internals on a missing or foreign file


def test_reproduce_internals_missing_file_is_one_line(tmp_path):
    missing = tmp_path / "typo.h5"
    one_line_error(cape("reproduce", "--internals", missing), "--internals", str(missing), "not found")


def test_reproduce_internals_without_internals_group_is_one_line(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    one_line_error(cape("reproduce", "--internals", foreign), "--internals", str(foreign), "no /internals")


# ----------------------------------------------------------------------------------------------
# item 2: every reader verifies the stored content hash


def test_one_flipped_bit_in_a_data_block_is_refused_by_crossmodel_and_report(tmp_path):
    p = _internals_file(tmp_path / "int.h5")
    before = _sha(p)
    _flip_one_bit_in_a_data_block(p)
    assert _sha(p) != before
    line = one_line_error(cape("crossmodel", p, "--scores", "none", "-n", 20), str(p), "content_sha256")
    assert "corrupt" in line
    one_line_error(cape("report", p, "-o", tmp_path / "r.html"), str(p), "content_sha256")
    assert not (tmp_path / "r.html").exists()


def test_read_results_verifies_once_per_file_identity(tmp_path, monkeypatch):
    from cape_hpc.errors import StoreError
    from cape_hpc.io import verify
    from cape_hpc.io.store import read_results

    p = _results_file(tmp_path / "r.h5")
    calls = []
    real = verify.content_hash
    monkeypatch.setattr(verify, "content_hash", lambda f: calls.append(1) or real(f))
    for _ in range(3):
        assert read_results(p, "/x")["note"] == "n"
    assert len(calls) == 1                       # cached by path, size and mtime
    _flip_one_bit_in_a_data_block(p)             # changes the mtime: hashed again, refused
    with pytest.raises(StoreError, match="content_sha256"):
        read_results(p, "/x")
    assert len(calls) == 2


# ----------------------------------------------------------------------------------------------
# item 3: only a regular file is ever replaced


def test_fifo_as_out_is_refused_without_the_force_hint(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    line = one_line_error(cape("coupling", "--out", fifo, "--force"), str(fifo), "FIFO")
    assert "--force" not in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@ROOT_ONLY
def test_device_node_is_never_replaced_even_with_force(tmp_path):
    node = tmp_path / "full"                     # a node in a temporary folder: no real device is opened
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 7))
    for extra in ((), ("--force",)):
        line = one_line_error(cape("coupling", "--out", node, *extra), str(node), "character device")
        assert "--force" not in line
        assert stat.S_ISCHR(os.lstat(node).st_mode)


# ----------------------------------------------------------------------------------------------
# item 4: the update path respects the file's mode, symlinks and leaves no lock files


def test_update_of_a_read_only_results_file_is_refused_and_the_file_kept(tmp_path):
    src = _internals_file(tmp_path / "int.h5")
    ro = _results_file(tmp_path / "ro.h5")
    os.chmod(ro, 0o444)
    before = _sha(ro)
    one_line_error(cape("crossmodel", src, "--scores", "none", "-n", 20, "--out", ro), str(ro), "read-only")
    assert _sha(ro) == before and stat.S_IMODE(os.stat(ro).st_mode) == 0o444
    assert _temporaries(tmp_path) == []


def test_update_keeps_the_mode_writes_through_symlinks_and_leaves_no_lock(tmp_path):
    from cape_hpc.io.store import read_results, update_results

    target = _results_file(tmp_path / "data" / "r.h5")
    os.chmod(target, 0o640)
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    assert update_results(link, {"/y": {"w": 2.0}}) == {"/y": "added"}
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert read_results(target, "/y") == {"w": 2.0}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    os.chmod(target, 0o440)
    assert update_results(link, {"/z": {"w": 3.0}}, force=True) == {"/z": "added"}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o440
    assert _temporaries(tmp_path) == [] and _temporaries(target.parent) == []


# ----------------------------------------------------------------------------------------------
# item 5: report and figures need --force to overwrite; report -o DIR; long names


def test_report_does_not_overwrite_without_force_and_names_a_folder(tmp_path):
    p = _results_file(tmp_path / "r.h5")
    out = tmp_path / "report.html"
    out.write_text("mine")
    one_line_error(cape("report", p, "-o", out), str(out), "--force")
    assert out.read_text() == "mine"
    folder = tmp_path / "dir"
    folder.mkdir()
    one_line_error(cape("report", p, "-o", folder), str(folder), "folder")
    assert _temporaries(tmp_path) == [] and list(folder.iterdir()) == []
    long = tmp_path / ("r" * 228 + ".html")       # 233 characters: a legal name
    r = cape("report", p, "-o", long)
    assert r.returncode == 0, r.stderr[-2000:]
    assert long.exists() and _temporaries(tmp_path) == []


def test_long_names_get_short_temporaries(tmp_path):
    from cape_hpc.io.publication import temp_path
    from cape_hpc.io.store import read_results, write_results

    name = "n" * 250 + ".h5"
    assert len(temp_path(tmp_path / name).name.encode()) <= 255
    write_results(tmp_path / name, {"/a": {"v": 1.0}})
    assert read_results(tmp_path / name, "/a") == {"v": 1.0}


def test_figures_do_not_overwrite_without_force(tmp_path):
    from report_fixture import cached_sample

    sample = cached_sample()
    out = tmp_path / "figs"
    r = cape("figures", sample, "-o", out, "--format", "png")
    assert r.returncode == 0, r.stderr[-2000:]
    first = sorted(out.iterdir())
    assert first
    stamp = {p: p.stat().st_mtime_ns for p in first}
    one_line_error(cape("figures", sample, "-o", out, "--format", "png"), "--force")
    assert {p: p.stat().st_mtime_ns for p in first} == stamp


# ----------------------------------------------------------------------------------------------
# item 6: a full file system is one line, the old file survives, no temporary is left


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, size: str = "2m"):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    fd = os.open(folder / "filler", os.O_CREAT | os.O_WRONLY)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0"):
                pass
    finally:
        os.close(fd)


@ROOT_ONLY
def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path):
    with small_tmpfs(tmp_path) as mnt:
        out = mnt / "c.h5"
        r = cape("coupling", "--out", out)
        assert r.returncode == 0, r.stderr[-2000:]
        before = _sha(out)
        _fill(mnt)
        one_line_error(cape("coupling", "--units", "fraction", "--out", out, "--force"), str(out), "No space left")
        assert _sha(out) == before
        one_line_error(cape("coupling", "--out", mnt / "new.h5"), "new.h5", "No space left")
        assert sorted(p.name for p in mnt.iterdir()) == ["c.h5", "filler"]


# ----------------------------------------------------------------------------------------------
# item 7: a dataset where a group belongs; non-UTF-8 bytes in --out


def test_internals_member_that_is_a_dataset_is_one_line(tmp_path):
    p = tmp_path / "ds.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("internals/M", data=np.arange(4.0))
    one_line_error(cape("crossmodel", p, "--scores", "none"), str(p), "/internals/M")
    one_line_error(cape("reproduce", "--internals", p), "/internals/M", "dataset")


def test_non_utf8_out_name_is_one_line(tmp_path):
    out = os.fsencode(tmp_path) + b"/r\xff.h5"
    r = subprocess.run([sys.executable, "-m", "cape_hpc.cli", "coupling", "--out", out], capture_output=True,
                       text=True, cwd=ROOT, timeout=300, errors="replace")
    one_line_error(r, "--out", "UTF-8")


# ----------------------------------------------------------------------------------------------
# item 8: outputs are checked before the computation (a bad --out wins over a bad input)


@pytest.mark.parametrize("argv", [
    ("dynamics", "--scores", "{missing}"),
    ("predict", "--size", "70B", "--family", "Pythia", "--scores", "{missing}"),
    ("reproduce", "--scores", "{missing}"),
    ("internals", "--model", "{missing}"),
    ("steer", "--model", "{missing}"),
])
def test_update_commands_check_out_before_reading_inputs(tmp_path, argv):
    folder = tmp_path / "folder"
    folder.mkdir()
    argv = [a.replace("{missing}", str(tmp_path / "missing.csv")) for a in argv]
    one_line_error(cape(*argv, "--out", folder), str(folder), "folder")


def test_bench_csv_and_report_out_are_checked_first(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    one_line_error(cape("bench", "--shapes", "nosuch", "--csv", folder), str(folder), "--csv")
    one_line_error(cape("report", tmp_path / "missing.h5", "-o", folder), str(folder), "folder")


@pytest.mark.parametrize("flag,value", [("--blocks", 100000), ("--block-seed", 2 ** 64)])
def test_blocks_and_block_seed_have_a_maximum(flag, value):
    one_line_error(cape("internals", "--model", "tiny-gpt2", flag, value), flag)


@pytest.mark.parametrize("key,value", [("n_blocks", 100000), ("block_seed", 2 ** 64)])
def test_job_file_blocks_beyond_the_maximum_fail_in_dry_run(tmp_path, key, value):
    job = tmp_path / "job.yaml"
    job.write_text(f"name: big\noutput_dir: out\ninternals: {{{key}: {value}}}\n"
                   "models:\n  - {id: tiny-gpt2, name: a}\n")
    one_line_error(cape("sweep", job, "--dry-run"), str(job), f"internals.{key}", "must be <=")


def test_remote_code_model_with_unknown_type_is_one_line(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nosuchmodel", "architectures": ["M"],
                                                      "auto_map": {"AutoConfig": "x.C", "AutoModelForCausalLM": "x.M"}}))
    one_line_error(cape("internals", "--model", tmp_path), "--trust-remote-code")


def test_lone_surrogate_in_a_steering_item_file_is_one_line(tmp_path):
    import json

    lines = (ROOT / "data" / "mc_items.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["answers"][0] += "\ud800"
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join([lines[0], json.dumps(rec), *lines[2:]]) + "\n")
    one_line_error(cape("steer", "--model", "tiny-gpt2", "--items", items, "--max-neutral", 0), str(items),
                   "line 2", "answers[0]", "surrogate")


# ----------------------------------------------------------------------------------------------
# item 9: a default token budget


def test_internals_has_a_default_token_budget():
    from cape_hpc.internals.options import ExtractOptions

    assert ExtractOptions().token_budget == 8192
    assert ExtractOptions(token_budget=None).token_budget is None


# ----------------------------------------------------------------------------------------------
# item 10: `cape nc` groups the table once


def test_nc_groups_the_table_once_with_the_same_numbers(monkeypatch):
    import pandas as pd

    from cape_hpc.analysis import nc
    from cape_hpc.analysis.nc import NcOptions

    rng = np.random.default_rng(3)
    rows = []
    for f in range(6):
        for i in range(7):
            rows.append({"model": f"F{f}-{i}", "family": f"F{f}", "params": 1e8 * 2 ** i,
                         "HS": 30 + 3 * i + rng.normal(), "TQA": 40 - (i - 3) ** 2 + rng.normal()})
    df = pd.DataFrame(rows)
    opts = NcOptions(estimator="quadratic", families=tuple(f"F{f}" for f in range(6)), n_resamples=50)
    calls = []
    real = nc._scope_arrays
    monkeypatch.setattr(nc, "_scope_arrays", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = nc.estimate_nc(df, opts)
    assert len(calls) == 1
    for e in res.estimates:                      # each family alone gives the same estimate
        alone = nc.estimate_nc(df[df.family == e.scope], NcOptions(estimator="quadratic", families=(e.scope,),
                                                                   n_resamples=50))
        assert alone.estimates[0].log10_nc == pytest.approx(e.log10_nc, nan_ok=True, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# item 12: an estimate outside its own interval is marked and explained


def test_crossmodel_marks_an_estimate_outside_its_interval():
    from cape_hpc.commands.crossmodel import _v, outside_note
    from cape_hpc.crossmodel.results import ModelRow
    from cape_hpc.schema import ConfidenceInterval

    row = ModelRow("tiny-gpt2", "", float("nan"), "", 2, 8, 2, "x", 0.883,
                   final_coupling_ci=ConfidenceInterval(0.596, 0.881, 0.95),
                   mean_coupling=0.5, mean_coupling_ci=ConfidenceInterval(0.4, 0.6, 0.95))
    assert _v(row.final_coupling, row.final_coupling_ci).endswith("!")
    assert not _v(row.mean_coupling, row.mean_coupling_ci).endswith("!")
    note = outside_note([row])
    assert "tiny-gpt2 final_coupling" in note and "mean_coupling" not in note
    assert outside_note([]) == ""


# ----------------------------------------------------------------------------------------------
# item 11: the smaller ones


def test_sweep_merge_refusal_names_merge_force(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"name: one\noutput_dir: {tmp_path / 'out'}\ndefaults: {{dtype: float32, batch_size: 8}}\n"
                   "prompts: {max_prompts: 8}\nsteering: {enabled: false}\n"
                   "models:\n  - {id: tiny-llama, params: 1.3e5, d_model: 64, n_layers: 3, vocab: 260}\n")
    merged = _results_file(tmp_path / "merged.h5")
    line = one_line_error(cape("sweep", job, "--merge", merged), str(merged), "--merge-force")
    assert "pass --force" not in line


def test_mixed_prompts_message_prints_each_files_count_beside_it(tmp_path):
    from crossmodel_fixture import synthetic_internals

    from cape_hpc.io.store import write_results

    a, _ = synthetic_internals("A", [0.2, 0.5], n_r=12, seed=1)
    b, _ = synthetic_internals("B", [0.2, 0.5], n_r=10, seed=2)
    pa, pb = tmp_path / "a.h5", tmp_path / "b.h5"
    write_results(pa, {"/internals/A": a})
    write_results(pb, {"/internals/B": b})
    line = one_line_error(cape("crossmodel", pa, pb, "--scores", "none"), "mixed prompt sets")
    assert f"{pb}:/internals/B vs {pa}:/internals/A" in line and "prompts in R 10 != 12" in line


def test_steer_layers_out_of_range_names_layers(tmp_path):
    line = one_line_error(cape("steer", "--model", "tiny-gpt2", "--layers", 99, "--max-neutral", 0), "--layers 99")
    assert "--probe-layer" not in line


def test_job_taps_empty_is_an_error_like_taps_comma(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: t\noutput_dir: out\ninternals: {taps: []}\nmodels:\n  - {id: tiny-gpt2, name: a}\n")
    one_line_error(cape("sweep", job, "--dry-run"), "--taps", "no tap")


def test_the_same_set_twice_is_refused():
    one_line_error(cape("internals", "--model", "tiny-gpt2", "--sets", "reasoning", "reasoning"), "--sets")


def test_null_set_in_a_prompt_file_is_one_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a", "text": "x y", "set": "r", "domain": "d"}\n'
                 '{"id": "b", "text": "x z", "set": null, "domain": "d"}\n')
    one_line_error(cape("internals", "--model", "tiny-gpt2", "--prompts", p), str(p), "line 2", "'set'")


def test_bench_threads_maximum_and_its_name_once():
    one_line_error(cape("bench", "--threads", 100000), "--threads")
    line = one_line_error(cape("bench", "--baselines", "nosuch", "--shapes", "layers", "--ops", "steer", "--quick"),
                          "nosuch")
    assert line.count("cape bench") == 1


def test_nc_out_says_unchanged_when_the_file_is_left_as_it_is(tmp_path):
    out = tmp_path / "nc.h5"
    env = {"GIT_DIR": str(tmp_path / "no-git")}    # the same code version in both runs
    first = cape("coupling", "--out", out, env=env)
    assert first.returncode == 0 and f"wrote {out}" in first.stdout, first.stderr[-2000:]
    stamp = os.stat(out).st_mtime_ns
    again = cape("coupling", "--out", out, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "wrote" not in again.stdout and "unchanged" in again.stdout
    assert os.stat(out).st_mtime_ns == stamp


def test_a_third_prompt_set_does_not_use_up_max_prompts(tmp_path):
    import json

    p = tmp_path / "three.jsonl"
    p.write_text("".join(json.dumps({"id": f"{s}-{i}", "text": f"{s} prompt number {i}", "set": s, "domain": "d"})
                         + "\n" for s in ("reasoning", "truthfulness", "other") for i in range(4)))
    r = cape("internals", "--model", "tiny-gpt2", "--prompts", p, "--max-prompts", 4, "--block-resamples", 0,
             "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert (doc["set_r"], doc["set_t"], doc["n_r"], doc["n_t"]) == ("reasoning", "truthfulness", 2, 2)
