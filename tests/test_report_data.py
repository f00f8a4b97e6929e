"""The tolerant readers behind the figures and the report (cape_hpc.report.data / extract)."""
import math

import numpy as np
import pytest

from cape_hpc.errors import DataError
from cape_hpc.io.store import write_results
from cape_hpc.report import extract as ex
from cape_hpc.report.data import Results, Skip, as_records, interval_of, jsonable


@pytest.mark.parametrize("stored, expected", [
    ({"ci": {"0.95": [1.0, 2.0], "0.68": [1.2, 1.8]}}, (1.0, 2.0)),           # BootSummary
    ({"bootstrap": {"median": 1.5, "ci": {"0.95": [0.5, 3.0]}}}, (0.5, 3.0)),  # nested BootSummary
    ({"rate": 0.5, "rate_ci_low": 0.2, "rate_ci_high": 0.8}, (0.2, 0.8)),     # SteeringResult
    ({"ci_lo": -1.0, "ci_hi": 1.0}, (-1.0, 1.0)),
    ([3.0, 4.0], (3.0, 4.0)),
])
def test_interval_of_known_shapes(stored, expected):
    assert interval_of(stored) == expected


def test_interval_of_absent_is_nan():
    lo, hi = interval_of({"estimate": 1.0})
    assert math.isnan(lo) and math.isnan(hi)


def test_as_records_tables_and_columns():
    assert as_records([{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]
    assert as_records({"a": np.array([1, 2]), "b": ["x", "y"], "s": 3}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert as_records({"a": [1, 2], "b": [1]}) == []  # ragged: not a table
    assert as_records(None) == []


def test_jsonable_has_no_nan():
    out = jsonable({"a": np.array([1.0, np.nan]), "b": float("inf"), "c": [np.float64(2.0)]})
    assert out == {"a": [1.0, None], "b": None, "c": [2.0]}


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Results.load(tmp_path / "none.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError, match="bad.h5"):
        Results.load(bad)


def test_drifted_layout_is_a_skip_not_an_error(tmp_path):
    """A coupling group without intervals, a deff without rows: each extractor skips and says why."""
    p = write_results(tmp_path / "drift.h5", {"/analysis/coupling": {"b1": "HS", "b2": "TQA", "rows": [1, 2]},
                                              "/analysis/deff": {"something": 1.0},
                                              "/internals/m": {"no_layers": 1.0}})
    res = Results.load(p)
    for name, fn in ex.EXTRACTORS.items():
        with pytest.raises(Skip) as exc:
            fn(res)
        assert str(exc.value), name
    with pytest.raises(Skip, match="/analysis/coupling has no intervals"):
        ex.phase_diagram(res)
    with pytest.raises(Skip, match="layer_coupling"):
        ex.internals(res)


def test_steering_rows_from_nested_runs(tmp_path):
    runs = {f"/steering/m|x/run{a}": {"alpha": float(a), "rate": a / 10, "rate_ci_low": 0.0, "rate_ci_high": 1.0,
                                      "n_prompts": 10} for a in (4, 1, 2)}
    d = ex.steering(Results.load(write_results(tmp_path / "s.h5", runs)))
    assert [r["alpha"] for r in d["rows"]] == [1.0, 2.0, 4.0]
    assert [r["rate"] for r in d["rows"]] == [0.1, 0.2, 0.4]
    assert {r["model"] for r in d["rows"]} == {"m|x"}
