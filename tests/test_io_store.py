"""HDF5 store: round trip, provenance, atomic writes, no silent overwrite."""
from dataclasses import dataclass, field

import h5py
import numpy as np
import pytest

from cape_hpc.errors import StoreError
from cape_hpc.schema import Provenance
from cape_hpc.io.store import read_results, update_results, write_results


@dataclass
class Row:
    family: str
    gamma: float


@dataclass
class Result:
    values: np.ndarray
    rows: list
    note: str | None
    nested: dict = field(default_factory=dict)
    provenance: Provenance = field(default_factory=lambda: Provenance("test", {"a": 1}, seed=3, n_resamples=10))


def _result(scale=1.0):
    return Result(values=np.arange(5) * scale, rows=[Row("OPT", -0.5), Row("BLOOM", float("nan"))],
                  note=None, nested={"names": ["x", "y"], "k": 2})


def test_round_trip(tmp_path):
    p = tmp_path / "r.h5"
    write_results(p, {"/analysis/test": _result()})
    tree = read_results(p, "/analysis/test")
    np.testing.assert_array_equal(tree["values"], np.arange(5))
    assert tree["rows"][0] == {"family": "OPT", "gamma": -0.5}
    assert np.isnan(tree["rows"][1]["gamma"])
    assert tree["note"] is None
    assert tree["nested"] == {"names": ["x", "y"], "k": 2}
    assert tree["provenance"]["method"] == "test" and tree["provenance"]["seed"] == 3
    with h5py.File(p) as f:
        assert f.attrs["cape_hpc_version"] and f.attrs["content_sha256"]


def test_same_content_unchanged_different_refused_force_overwrites(tmp_path):
    p = tmp_path / "r.h5"
    write_results(p, {"/analysis/test": _result()})
    before = p.read_bytes()
    write_results(p, {"/analysis/test": _result()})           # same content: file left alone
    assert p.read_bytes() == before
    with pytest.raises(StoreError, match="--force"):
        write_results(p, {"/analysis/test": _result(2.0)})
    assert p.read_bytes() == before                           # original kept
    write_results(p, {"/analysis/test": _result(2.0)}, force=True)
    np.testing.assert_array_equal(read_results(p, "/analysis/test")["values"], np.arange(5) * 2.0)
    assert not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp.h5")]


def test_failed_write_leaves_no_trace(tmp_path):
    p = tmp_path / "r.h5"
    write_results(p, {"/a": _result()})
    before = p.read_bytes()
    with pytest.raises(TypeError):
        write_results(p, {"/a": {"bad": object()}}, force=True)
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["r.h5"]


def test_update_keeps_other_groups(tmp_path):
    p = tmp_path / "r.h5"
    write_results(p, {"/analysis/a": _result()})
    assert update_results(p, {"/internals/m": {"x": np.ones(3)}}) == {"/internals/m": "added"}
    assert update_results(p, {"/internals/m": {"x": np.ones(3)}}) == {"/internals/m": "unchanged"}
    with pytest.raises(StoreError, match="/internals/m"):
        update_results(p, {"/internals/m": {"x": np.zeros(3)}})
    tree = read_results(p)
    np.testing.assert_array_equal(tree["analysis"]["a"]["values"], np.arange(5))
    np.testing.assert_array_equal(tree["internals"]["m"]["x"], np.ones(3))
    assert update_results(p, {"/internals/m": {"x": np.zeros(3)}}, force=True) == {"/internals/m": "replaced"}
    np.testing.assert_array_equal(read_results(p, "/internals/m")["x"], np.zeros(3))
