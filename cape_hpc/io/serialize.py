"""Turn result dataclasses into plain trees (for --json and for HDF5) without losing numbers.

A *tree* is made of dicts (str keys), lists, numpy arrays, and scalars (int, float, bool, str,
None).  ``to_tree`` converts dataclasses, numpy scalars/arrays, tuples, pandas objects and
``math.nan`` recursively; ``to_jsonable`` additionally turns arrays into lists and NaN/inf into None
(JSON has no NaN).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


def to_tree(obj: Any) -> Any:
    """Recursively convert a result object into dicts, lists, numpy arrays and scalars."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_tree(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_tree(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas DataFrame
        return {str(c): to_tree(obj[c].to_numpy()) for c in obj.columns}
    if hasattr(obj, "to_numpy") and hasattr(obj, "index"):  # pandas Series
        return to_tree(obj.to_numpy())
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor
        return obj.detach().cpu().numpy()
    return obj


def _json_scalar(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def to_jsonable(obj: Any) -> Any:
    """Like ``to_tree`` but JSON-ready: arrays become lists, NaN and inf become None."""
    tree = to_tree(obj)
    return _jsonable_tree(tree)


def _jsonable_tree(t: Any) -> Any:
    if isinstance(t, dict):
        return {k: _jsonable_tree(v) for k, v in t.items()}
    if isinstance(t, list):
        return [_jsonable_tree(v) for v in t]
    if isinstance(t, np.ndarray):
        if t.dtype.kind in "SUO":
            return [str(v) for v in t.tolist()]
        return _jsonable_tree(t.tolist())
    if isinstance(t, np.generic):
        return _json_scalar(t.item())
    return _json_scalar(t)
