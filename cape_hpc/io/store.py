"""The HDF5 store: plain trees in and out, atomic writes, no silent overwrite.

Tree -> HDF5 mapping (``write_tree`` / ``read_tree`` are inverse up to list/tuple and dtype width):

- dict                        -> group
- scalar (int, float, bool, str) -> attribute of the enclosing group;  None -> empty attribute
- numpy array, list of numbers or strings -> dataset (strings as UTF-8 variable length)
- list of dicts with the same scalar keys -> group with attr ``_kind='table'``, one dataset per column
- any other list               -> group with attr ``_kind='list'`` and members '0', '1', ...

Atomicity: ``atomic_h5(path)`` writes a temporary file in the target's directory and renames it
over the target only when the block completes.  Each file carries ``content_sha256``, a hash of
everything in it except the volatile root attributes (time, command line); an existing target with
the same content is left alone, one with different content is kept and an error raised, unless
``force=True``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from cape_hpc.errors import StoreError
from cape_hpc.io.provenance import run_attrs
from cape_hpc.schema import to_tree

VOLATILE_ROOT_ATTRS = ("created", "command_line", "content_sha256", "git_commit")
_STR = h5py.string_dtype("utf-8")
_SCALARS = (int, float, bool, str, np.integer, np.floating, np.bool_)


def _is_table(items: list) -> bool:
    if not items or not all(isinstance(r, dict) for r in items):
        return False
    keys = list(items[0].keys())
    return all(list(r.keys()) == keys and all(v is None or isinstance(v, _SCALARS) for v in r.values())
               for r in items)


def _as_dataset_array(values: Any) -> np.ndarray | None:
    """An array for a list/array of numbers or strings; None if it is not homogeneous."""
    if isinstance(values, np.ndarray):
        arr = values
    else:
        if not all(v is None or isinstance(v, _SCALARS) for v in values):
            return None
        if any(isinstance(v, str) for v in values):
            if not all(isinstance(v, str) for v in values):
                values = ["" if v is None else str(v) for v in values]
            return np.array(values, dtype=object)
        arr = np.array([np.nan if v is None else v for v in values])
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    return arr


def write_tree(group: h5py.Group, tree: dict[str, Any]) -> None:
    """Write a tree (see module doc) into an open HDF5 group."""
    tree = to_tree(tree)
    if not isinstance(tree, dict):
        raise TypeError(f"write_tree needs a dict at the top, got {type(tree).__name__}")
    for key, value in tree.items():
        key = str(key).replace("/", "|")
        if isinstance(value, dict):
            write_tree(group.create_group(key), value)
        elif value is None:
            group.attrs[key] = h5py.Empty("f")
        elif isinstance(value, _SCALARS):
            group.attrs[key] = value
        elif isinstance(value, (list, np.ndarray)):
            if isinstance(value, list) and _is_table(value):
                sub = group.create_group(key)
                sub.attrs["_kind"] = "table"
                for col in value[0].keys():
                    arr = _as_dataset_array([row[col] for row in value])
                    _create_dataset(sub, str(col), arr)
                continue
            arr = _as_dataset_array(value)
            if arr is not None and arr.dtype != object or (arr is not None and all(isinstance(v, str) for v in arr.ravel())):
                _create_dataset(group, key, arr)
            else:
                sub = group.create_group(key)
                sub.attrs["_kind"] = "list"
                for i, item in enumerate(value):
                    write_tree(sub, {str(i): item})
        else:
            raise TypeError(f"cannot store {key!r} of type {type(value).__name__} in HDF5")


def _create_dataset(group: h5py.Group, key: str, arr: np.ndarray) -> None:
    if arr.dtype == object:
        group.create_dataset(key, data=arr.astype(_STR), dtype=_STR)
    else:
        group.create_dataset(key, data=arr)


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


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """Read a group written by ``write_tree`` back into a tree."""
    out: dict[str, Any] = {k: _read_attr(v) for k, v in group.attrs.items() if k != "_kind"}
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            out[key] = _read_dataset(item)
            continue
        kind = _read_attr(item.attrs.get("_kind", ""))
        if kind == "table":
            cols = {k: _read_dataset(v) for k, v in item.items()}
            n = len(next(iter(cols.values()))) if cols else 0
            out[key] = [{c: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for c, v in cols.items()}
                        for i in range(n)]
        elif kind == "list":
            sub = read_tree(item)
            out[key] = [sub[str(i)] for i in range(len(sub))]
        else:
            out[key] = read_tree(item)
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


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, *, force: bool = False, root_attrs: dict | None = None) -> Iterator[h5py.File]:
    """Yield a new HDF5 file that replaces ``path`` only if the block completes.

    The outcome is stored on the yielded file object's ``cape_outcome`` attribute after the block:
    'written', 'unchanged' (same content already there), or an exception is raised
    (different content and not ``force``).  Nothing existing is touched on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.h5", dir=path.parent)
    os.close(fd)
    try:
        h5 = h5py.File(tmp, "w")
        try:
            for k, v in {**run_attrs(), **(root_attrs or {})}.items():
                h5.attrs[k] = v
            yield h5
            digest = content_hash(h5)
            h5.attrs["content_sha256"] = digest
        finally:
            h5.close()
        if path.exists() and not force:
            old = existing_content_hash(path)
            if old == digest:
                os.unlink(tmp)
                return
            raise StoreError(f"{path} exists with different content; pass --force to overwrite it "
                             f"(the existing file is kept)")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def existing_content_hash(path: str | os.PathLike) -> str | None:
    """The stored content hash of an existing results file (recomputed if absent); None if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            stored = _read_attr(f.attrs.get("content_sha256", None))
            return stored if stored else content_hash(f)
    except OSError:
        return None


def write_results(path: str | os.PathLike, groups: dict[str, Any], *, force: bool = False,
                  root_attrs: dict | None = None) -> Path:
    """Write ``{'/analysis/nc': tree_or_dataclass, ...}`` atomically into ``path``."""
    with atomic_h5(path, force=force, root_attrs=root_attrs) as h5:
        for name, tree in groups.items():
            write_tree(h5.require_group(name.strip("/")), to_tree(tree))
    return Path(path)


def read_results(path: str | os.PathLike, group: str = "/") -> dict[str, Any]:
    """Read a whole results file (or one group of it) into a tree."""
    with h5py.File(path, "r") as f:
        return read_tree(f[group])


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock (``.<name>.lock`` beside ``path``) serialising cape writers of a file."""
    import fcntl

    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_results(path: str | os.PathLike, groups: dict[str, Any], *, force: bool = False) -> dict[str, str]:
    """Add or replace groups in a results file atomically, keeping every other group.

    For each ``name -> tree``: a new group is added; an existing group with the same content is
    left alone; one with different content is an error (StoreError, file untouched) unless
    ``force``.  Returns ``{name: 'added' | 'unchanged' | 'replaced'}``.  A missing file is created.
    Concurrent cape writers of the same file are serialised by ``file_lock``.
    """
    with file_lock(path):
        return _update_results(Path(path), groups, force=force)


def _update_results(path: Path, groups: dict[str, Any], *, force: bool) -> dict[str, str]:
    import shutil

    if not path.exists():
        write_results(path, groups, force=force)
        return {name: "added" for name in groups}
    if existing_content_hash(path) is None:
        raise StoreError(f"{path} is not a readable HDF5 file; refusing to update it")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.h5", dir=path.parent)
    os.close(fd)
    outcome: dict[str, str] = {}
    try:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as h5:
            for name, tree in groups.items():
                key = name.strip("/")
                scratch = f"__incoming__{len(outcome)}"
                write_tree(h5.create_group(scratch), to_tree(tree))
                if key in h5:
                    if content_hash(h5[key]) == content_hash(h5[scratch]):
                        del h5[scratch]
                        outcome[name] = "unchanged"
                        continue
                    if not force:
                        raise StoreError(f"{path}: group /{key} exists with different content; pass --force "
                                         f"to replace it (the existing file is kept)")
                    del h5[key]
                    outcome[name] = "replaced"
                else:
                    outcome[name] = "added"
                parent = key.rsplit("/", 1)[0] if "/" in key else ""
                if parent:
                    h5.require_group(parent)
                h5.move(scratch, key)
            if all(v == "unchanged" for v in outcome.values()):
                return outcome
            for k, v in run_attrs().items():
                if k in ("created", "command_line", "git_commit"):
                    h5.attrs[k] = v
            h5.attrs["content_sha256"] = content_hash(h5)
        os.replace(tmp, path)
        return outcome
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
