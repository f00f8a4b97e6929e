"""Round-trip check used by every part's tests: a result written to HDF5 and read back with
``from_tree`` equals the original field by field (NaN equals NaN; arrays compared exactly)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from cape_hpc.io.store import read_results, write_results
from cape_hpc.schema import Result, to_jsonable

#: names of the Result classes that went through ``assert_roundtrip`` in this test session
SEEN: set[str] = set()


def assert_same(a, b, where: str = "") -> None:
    """Field-by-field equality of two result trees (dataclasses, dicts, lists, arrays, scalars)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(map(str, b)) | set(b), f"{where}: keys {set(a)} != {set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r:.80} != {b!r:.80}"
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        b = np.asarray(b)
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        if a.dtype.kind in "fc":
            assert np.array_equal(a, b, equal_nan=True), f"{where}: arrays differ"
        else:
            assert a.tolist() == b.tolist(), f"{where}: arrays differ"
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: nan != {b!r}"
    else:
        assert type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                      and not isinstance(a, bool)), f"{where}: {type(a).__name__} != {type(b).__name__}"
        assert a == b, f"{where}: {a!r:.80} != {b!r:.80}"


def assert_roundtrip(obj: Result, tmp_path: Path, group: str = "/analysis/x") -> Result:
    """Write ``obj`` to HDF5, read it back with its class's ``from_tree``, compare; also JSON-encode."""
    assert isinstance(obj, Result), f"{type(obj).__name__} does not derive from cape_hpc.schema.Result"
    path = Path(tmp_path) / f"roundtrip-{type(obj).__name__}.h5"
    write_results(path, {group: obj}, force=True)
    back = type(obj).from_tree(read_results(path, group), where=group)
    assert_same(obj, back, type(obj).__name__)
    to_jsonable(obj)  # JSON output never fails
    SEEN.add(type(obj).__name__)
    return back
