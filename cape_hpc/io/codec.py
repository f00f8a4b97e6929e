"""The HDF5 codec: plain trees in and out of HDF5 groups, and the content hash.

Tree -> HDF5 mapping (``write_tree`` / ``read_tree`` are inverse up to list/tuple and dtype width):

- dict                        -> group (more than ``DICT_AS_TABLE`` entries and no ``_schema``:
                                 group ``_kind='dict'`` with a ``keys`` dataset and the values
                                 stored like a list under ``values``)
- scalar (int, float, bool, str) -> attribute of the enclosing group;  None -> empty attribute
- numpy array, list of numbers or strings -> dataset (strings as UTF-8 variable length); a list
  with None among its values -> group ``_kind='masked'`` (``values`` and a boolean ``none``)
- list of dicts with the same keys (rows of a table) -> group ``_kind='table'`` (attribute ``_n``:
  the number of rows) with one member per column, each column stored like a list: a dataset, a
  nested table (a column of dataclasses), a ragged list, ...
- list of lists               -> group ``_kind='ragged'``: ``offsets`` (n + 1) and the concatenated
                                 ``values`` (stored like a list)
- any other list              -> group with attr ``_kind='list'`` and members '0', '1', ...

So a table of N rows is a fixed number of datasets whatever N (never one attribute or one group per
value): writing, hashing and reading grow linearly with the rows.  Files written before this layout
(tables of scalar columns, everything else item by item) are read the same way.

``content_hash`` is a SHA-256 of everything below a file or group except the volatile root
attributes (time, command line); results files store it as ``content_sha256``.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import h5py
import numpy as np

from cape_hpc.errors import StoreError
from cape_hpc.schema import to_tree

VOLATILE_ROOT_ATTRS = ("created", "command_line", "content_sha256", "git_commit")
_STR = h5py.string_dtype("utf-8")
_SCALARS = (int, float, bool, str, np.integer, np.floating, np.bool_)
_NUMBERS = (int, float, bool, np.integer, np.floating, np.bool_)
#: a dict with more entries than this (and no ``_schema``) is stored as keys + values datasets
DICT_AS_TABLE = 32


# ---------------------------------------------------------------------------------------------
# writing


def _key(key: Any) -> str:
    key = str(key).replace("/", "|")
    if "\0" in key:
        raise StoreError(f"cannot store the name {key!r}: HDF5 names cannot contain a NUL character")
    return key


def _scalar_column(values: list) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(array, None mask or None) for a list of scalars of one kind (numbers or text); else None."""
    none = [v is None for v in values]
    present = [v for v in values if v is not None]
    if not all(isinstance(v, _SCALARS) for v in present):
        return None
    mask = np.array(none, dtype=bool) if any(none) else None
    if present and all(isinstance(v, str) for v in present):
        arr = np.array(["" if v is None else v for v in values], dtype=object)
    elif all(isinstance(v, _NUMBERS) for v in present):
        if present and all(isinstance(v, (bool, np.bool_)) for v in present):
            arr = np.array([False if v is None else bool(v) for v in values], dtype=bool)
        elif present and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                             for v in present) and all(-2**63 <= int(v) < 2**63 for v in present):
            arr = np.array([0 if v is None else int(v) for v in values], dtype=np.int64)
        else:
            arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    else:
        return None
    return arr, mask


def _is_rows(values: list) -> bool:
    if not values or not all(isinstance(r, dict) for r in values):
        return False
    keys = list(values[0].keys())
    return all(list(r.keys()) == keys for r in values)


def _text_ok(arr: np.ndarray, where: str) -> None:
    if any("\0" in v for v in arr.ravel() if isinstance(v, str)):
        raise StoreError(f"cannot store {where}: a text value contains a NUL character")


def _create_dataset(group: h5py.Group, key: str, arr: np.ndarray) -> None:
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    if arr.dtype == object:
        _text_ok(arr, f"{group.name}/{key}")
        group.create_dataset(key, data=arr.astype(_STR), dtype=_STR)
    else:
        group.create_dataset(key, data=arr)


def _write_list(group: h5py.Group, key: str, values: list) -> None:
    """Store a list as a dataset, a masked dataset, a column table, a ragged list, or item by item."""
    col = _scalar_column(values)
    if col is not None:
        arr, mask = col
        if mask is None:
            _create_dataset(group, key, arr)
        else:
            sub = group.create_group(key)
            sub.attrs["_kind"] = "masked"
            _create_dataset(sub, "values", arr)
            sub.create_dataset("none", data=mask)
        return
    if _is_rows(values):
        sub = group.create_group(key)
        sub.attrs["_kind"] = "table"
        sub.attrs["_n"] = len(values)
        for c in values[0].keys():
            _write_list(sub, _key(c), [r[c] for r in values])
        return
    if all(isinstance(v, (list, tuple)) for v in values):
        flat = [x for v in values for x in v]
        sub = group.create_group(key)
        sub.attrs["_kind"] = "ragged"
        sub.create_dataset("offsets", data=np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int64))
        _write_list(sub, "values", flat)
        return
    sub = group.create_group(key)
    sub.attrs["_kind"] = "list"
    for i, item in enumerate(values):
        write_tree(sub, {str(i): item})


def _write_value(group: h5py.Group, key: str, value: Any) -> None:
    if isinstance(value, dict):
        if len(value) > DICT_AS_TABLE and "_schema" not in value:
            sub = group.create_group(key)
            sub.attrs["_kind"] = "dict"
            _create_dataset(sub, "keys", np.array([str(k) for k in value], dtype=object))
            _write_list(sub, "values", list(value.values()))
        else:
            write_tree(group.create_group(key), value)
    elif value is None:
        group.attrs[key] = h5py.Empty("f")
    elif isinstance(value, _SCALARS):
        if isinstance(value, str) and "\0" in value:
            raise StoreError(f"cannot store {group.name}/{key}: the text {value!r:.60} contains a NUL character")
        group.attrs[key] = value
    elif isinstance(value, np.ndarray):
        _create_dataset(group, key, value)
    elif isinstance(value, (list, tuple)):
        _write_list(group, key, list(value))
    else:
        raise TypeError(f"cannot store {key!r} of type {type(value).__name__} in HDF5")


def write_tree(group: h5py.Group, tree: dict[str, Any]) -> None:
    """Write a tree (see module doc) into an open HDF5 group."""
    tree = to_tree(tree)
    if not isinstance(tree, dict):
        raise TypeError(f"write_tree needs a dict at the top, got {type(tree).__name__}")
    for key, value in tree.items():
        _write_value(group, _key(key), value)


# ---------------------------------------------------------------------------------------------
# reading


def _read_attr(v: Any) -> Any:
    if isinstance(v, h5py.Empty):
        return None
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _read_dataset(ds: h5py.Dataset) -> Any:
    if h5py.check_string_dtype(ds.dtype) is not None:
        data = ds.asstr()[()]
        return data.tolist() if isinstance(data, np.ndarray) else data
    return ds[()]


def _read_list(item: h5py.HLObject) -> list:
    """A member written by ``_write_list`` (or an older layout) as a list of plain values."""
    v = _read_node(item)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, list):
        return v
    return [v]


def _read_node(item: h5py.HLObject) -> Any:
    if isinstance(item, h5py.Dataset):
        return _read_dataset(item)
    kind = _read_attr(item.attrs.get("_kind", ""))
    if kind == "table":
        cols = {k: _read_list(v) for k, v in item.items()}
        n = _read_attr(item.attrs.get("_n", None))
        if n is None:  # older files: the length of the first column
            n = len(next(iter(cols.values()))) if cols else 0
        names = list(cols)
        return [dict(zip(names, vals)) for vals in zip(*(cols[c] for c in names))] if names else [{}] * int(n)
    if kind == "ragged":
        off = item["offsets"][()].tolist()
        vals = _read_list(item["values"])
        return [vals[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    if kind == "masked":
        vals = _read_list(item["values"])
        none = item["none"][()].tolist()
        return [None if m else v for v, m in zip(vals, none)]
    if kind == "dict":
        keys = _read_list(item["keys"])
        return dict(zip((str(k) for k in keys), _read_list(item["values"])))
    if kind == "list":
        sub = read_tree(item)
        return [sub[str(i)] for i in range(len(sub))]
    return read_tree(item)


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """Read a group written by ``write_tree`` back into a tree (a dataset in its place: StoreError)."""
    if not isinstance(group, h5py.Group):
        raise StoreError(f"{group.file.filename}:{group.name}: is a {type(group).__name__.lower()}, not a group "
                         f"(not a results group written by cape)")
    out: dict[str, Any] = {k: _read_attr(v) for k, v in group.attrs.items() if k not in ("_kind", "_n")}
    for key, item in group.items():
        out[key] = _read_node(item)
    return out


def content_hash(h5: h5py.Group) -> str:
    """SHA-256 over every dataset and attribute below a file or group (volatile root attrs excluded)."""
    h = hashlib.sha256()

    def add_attrs(name: str, obj: h5py.HLObject, skip: tuple = ()) -> None:
        for k in sorted(obj.attrs.keys()):
            if k in skip:
                continue
            v = _read_attr(obj.attrs[k])
            h.update(f"{name}@{k}={json.dumps(v.tolist() if isinstance(v, np.ndarray) else v, default=str)}".encode())

    add_attrs("/", h5, VOLATILE_ROOT_ATTRS if isinstance(h5, h5py.File) else ())

    def visit(name: str, obj: h5py.HLObject) -> None:
        add_attrs(name, obj)
        if isinstance(obj, h5py.Dataset):
            data = obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) is not None else obj[()]
            arr = np.asarray(data)
            h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes() if arr.dtype != object else json.dumps(arr.tolist()).encode())

    h5.visititems(visit)
    return h.hexdigest()



def existing_content_hash(path: str | os.PathLike) -> str | None:
    """The stored content hash of an existing results file (recomputed if absent); None if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            stored = _read_attr(f.attrs.get("content_sha256", None))
            return stored if stored else content_hash(f)
    except (OSError, ValueError, KeyError):
        return None
