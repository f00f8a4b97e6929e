"""The report's readers: every stored group decoded into its result class, loud on a mismatch.

A group that is absent skips its figure with a note naming the group; a stored group that does not
match its class (a renamed, missing or extra field, a value of the wrong type, another class at the
path) is a SchemaError naming the group and the field, which ``cape report`` / ``cape figures``
print on one line.
"""
import contextlib
import shutil

import h5py
import numpy as np
import pytest

from cape_hpc.errors import DataError, SchemaError
from cape_hpc.io.store import read_results
from cape_hpc.report.registry import extractors
from cape_hpc.report.data import Results, Skip
from cape_hpc.io.scores import InputTable
from cape_hpc.report.layout import LAYOUT
from cape_hpc.schema import Result
from report_fixture import cached_sample, cape
from roundtrip import assert_roundtrip


@pytest.fixture(scope="module")
def coupling_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("coupling") / "coupling.h5"
    cape("coupling", "--out", str(p))
    return p


@contextlib.contextmanager
def _edit(path):
    """Edit a results file in place as another version of the code would have written it: its
    content hash is recomputed (a file whose hash does not match is refused before its schema is
    read; tests/test_reliability_round2.py covers that)."""
    from cape_hpc.io.codec import content_hash

    with h5py.File(path, "r+") as f:
        yield f
        f.attrs["content_sha256"] = content_hash(f)


def _copy(src, tmp_path, name="edited.h5"):
    dst = tmp_path / name
    shutil.copy(src, dst)
    return dst


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Results.load(tmp_path / "none.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError, match="bad.h5"):
        Results.load(bad)


def test_coupling_file_decodes_into_its_classes(coupling_file):
    from cape_hpc.analysis.coupling import CouplingResult

    res = Results.load(coupling_file)
    assert sorted(res.stored) == ["/analysis/coupling", "/scores/base"]
    cp = res.get("/analysis/coupling", CouplingResult)
    assert isinstance(cp, CouplingResult) and isinstance(res.stored["/scores/base"], InputTable)
    raw = read_results(coupling_file, "/analysis/coupling")
    assert len(cp.intervals) == len(raw["intervals"]) > 10
    assert [iv.gamma for iv in cp.intervals] == pytest.approx([r["gamma"] for r in raw["intervals"]], nan_ok=True)
    assert res.stored["/scores/base"].n_rows == len(res.stored["/scores/base"].table["model"])


def test_absent_groups_are_skips_naming_the_group(coupling_file):
    res = Results.load(coupling_file)
    drawn = {"phase_diagram", "running_gamma"}
    expect = {"deff": "/analysis/deff", "width": "/analysis/width", "frontier": "/analysis/frontier",
              "dynamics": "/dynamics/", "predict": "/dynamics/predict/", "internals": "/internals/",
              "steering": "/steering/", "steering_dose": "/steering", "isocline": "/analysis/isocline", "hfield": "/analysis/hfield",
              "loss": "/analysis/loss", "eigen": "/analysis/eigen",
              **{f"crossmodel_{k}": "/crossmodel" for k in ("ladders", "depth", "drep", "bottleneck", "phases")}}
    extract = extractors()
    assert set(expect) | drawn == set(extract)
    for name, group in expect.items():
        with pytest.raises(Skip, match=group):
            extract[name](res)
    for name in drawn:
        assert extract[name](res)["families"]
    assert "no /analysis/nc" in extract["running_gamma"](res)["note"]


@pytest.mark.parametrize("edit, field", [
    ("rename-attr", "bench1"),        # b1 renamed: an extra field and a missing one, named
    ("drop-column", "x_mid"),         # a column of the intervals table removed
    ("wrong-type", "min_delta"),      # a number stored as text
])
def test_mismatched_group_is_a_schema_error(coupling_file, tmp_path, edit, field):
    p = _copy(coupling_file, tmp_path)
    with _edit(p) as f:
        g = f["/analysis/coupling"]
        if edit == "rename-attr":
            g.attrs["bench1"] = g.attrs["b1"]
            del g.attrs["b1"]
        elif edit == "drop-column":
            del g["intervals/x_mid"]
        else:
            g.attrs["min_delta"] = "half a point"
    with pytest.raises(SchemaError) as exc:
        Results.load(p)
    msg = str(exc.value)
    assert msg.startswith("/analysis/coupling") and field in msg, msg


def test_other_class_at_a_layout_path_is_a_schema_error(coupling_file, tmp_path):
    """A CouplingResult stored where the report reads a DeffResult."""
    p = _copy(coupling_file, tmp_path)
    with _edit(p) as f:
        f.copy(f["/analysis/coupling"], "/analysis/deff")
    with pytest.raises(SchemaError, match="/analysis/deff"):
        Results.load(p)


@pytest.mark.parametrize("command", ["report", "figures"])
def test_cli_prints_one_line_naming_group_and_field(coupling_file, tmp_path, capsys, command):
    from cape_hpc.cli import main

    p = _copy(coupling_file, tmp_path)
    with _edit(p) as f:
        g = f["/analysis/coupling"]
        g.attrs["tax_threshold"] = g.attrs["tax_below"]
        del g.attrs["tax_below"]
    out = tmp_path / ("r.html" if command == "report" else "figs")
    assert main([command, str(p), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "/analysis/coupling" in err[0] and "tax_threshold" in err[0], err
    assert not out.exists()


def test_sample_steering_with_a_renamed_field_fails_loudly(tmp_path, capsys):
    """The torch-free SteeringResult: its rate interval renamed in one run of the sample file."""
    from cape_hpc.cli import main

    p = _copy(cached_sample(), tmp_path)
    with _edit(p) as f:
        run = next(iter(f["/steering/tiny-llama"].values()))
        name = run.name
        f.move(f"{name}/rate_ci", f"{name}/rate_interval")
    assert main(["report", str(p), "-o", str(tmp_path / "r.html")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert name in line and "rate_interval" in line, line


def test_sample_every_group_is_a_typed_result_that_round_trips(tmp_path):
    """Every group of the sample decodes into the class LAYOUT names, which derives from Result
    (the /scores input tables included), and each one round-trips through HDF5 field by field."""
    res = Results.load(cached_sample())
    assert res.unknown == {}
    seen = set()
    for path, obj in res.stored.items():
        (cls,) = [c for pat, c in LAYOUT if pat.fullmatch(path)][:1]
        assert type(obj) is cls, path
        assert isinstance(obj, Result), f"{path}: {cls.__name__} does not derive from cape_hpc.schema.Result"
        if cls.__name__ not in seen:
            assert_roundtrip(obj, tmp_path, group=path)
            seen.add(cls.__name__)
    assert len(seen) >= 15, sorted(seen)


def test_jsonable_has_no_nan():
    from cape_hpc.report.data import jsonable

    out = jsonable({"a": np.array([1.0, np.nan]), "b": float("inf"), "c": [np.float64(2.0)]})
    assert out == {"a": [1.0, None], "b": None, "c": [2.0]}
