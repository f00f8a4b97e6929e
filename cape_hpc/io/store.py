"""The HDF5 store: plain trees in and out, atomic publication, no silent overwrite.

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

Publication (``publish``; used by ``atomic_h5`` for results files and by the sweep's shard writer):
the file is written under a temporary name in the target's folder
(``.<name>~<host>~<pid>~<token>.tmp.h5``), flushed and fsync'ed, given the mode the umask allows
(0666 & ~umask, as any new file), then published by ``link(2)``, which fails if the target exists:
two writers can never both publish, the second sees the first's file and compares contents (same:
'unchanged'; different: StoreError, both files kept as they are).  ``force`` replaces the target with
``rename(2)``.  The folder is fsync'ed after the publication.  On file systems without hard links
the check and the rename run under ``file_lock``.  Temporaries of dead writers are removed at the
next write into the same folder: same host and the pid is gone, or older than ``STALE_TMP_S``
(default 24 h, ``CAPE_STALE_TMP_S``) for other hosts.

Each file carries ``content_sha256``, a hash of everything in it except the volatile root
attributes (time, command line): an existing target with the same content is left alone, one with
different content is kept and an error raised, unless ``force=True``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from cape_hpc.errors import StoreError
from cape_hpc.io.provenance import run_attrs
from cape_hpc.schema import to_tree

VOLATILE_ROOT_ATTRS = ("created", "command_line", "content_sha256", "git_commit")
_STR = h5py.string_dtype("utf-8")
_SCALARS = (int, float, bool, str, np.integer, np.floating, np.bool_)
_NUMBERS = (int, float, bool, np.integer, np.floating, np.bool_)
#: a dict with more entries than this (and no ``_schema``) is stored as keys + values datasets
DICT_AS_TABLE = 32
HOST = socket.gethostname()
STALE_TMP_S = float(os.environ.get("CAPE_STALE_TMP_S", 24 * 3600))


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
    """Read a group written by ``write_tree`` back into a tree."""
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


# ---------------------------------------------------------------------------------------------
# publication: one mechanism for results files and sweep shards


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_mode() -> int:
    """The mode a new file gets under the current umask (0666 & ~umask)."""
    mask = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
    if mask is None:  # no /proc: read it by setting it (and put it back at once)
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def temp_path(final: str | os.PathLike) -> Path:
    """A temporary name beside ``final``: ``.<name>~<host>~<pid>~<token>.tmp.h5``."""
    final = Path(final)
    return final.with_name(f".{final.name}~{HOST}~{os.getpid()}~{secrets.token_hex(4)}.tmp.h5")


def clean_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Remove temporaries of ``name`` (every target: '*') left in ``folder`` by writers that died:
    of this host and the pid is gone, or older than ``STALE_TMP_S`` (other hosts, older layouts)."""
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not (entry.name.endswith(".tmp.h5") and entry.name.startswith("." + ("" if name == "*" else name))):
                continue
            p = Path(entry.path)
            parts = p.name[1:-len(".tmp.h5")].rsplit("~", 3)
            try:
                if len(parts) == 4 and parts[1] == HOST and parts[2].isdigit():
                    stale = not pid_alive(int(parts[2])) and int(parts[2]) != os.getpid()
                else:
                    stale = now - p.stat().st_mtime > STALE_TMP_S
                if stale:
                    p.unlink()
                    removed.append(p)
            except OSError:
                continue
    return removed


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some file systems cannot open a folder: nothing to sync then
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _test_delay() -> None:
    """Tests only: ``CAPE_STORE_PUBLISH_DELAY_S`` widens the window between the check for an
    existing target and the publication (the fault-injection test of two concurrent writers)."""
    d = os.environ.get("CAPE_STORE_PUBLISH_DELAY_S")
    if d:
        time.sleep(float(d))


def check_target(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check that a results file can be written at ``path`` (before any computation): not empty, no
    NUL, not a folder, its parent a folder (created if missing) in which a file can be created.
    Raises StoreError naming the path."""
    text = os.fspath(path)
    if text == "":
        raise StoreError(f"option '{what}': an empty path")
    if "\0" in text:
        raise StoreError(f"option '{what}': the path {text!r} contains a NUL character")
    path = Path(text)
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a results file (option '{what}')")
    parent = path.parent
    anc = parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise StoreError(f"{path}: cannot write here, {anc} is a file, not a folder (option '{what}')")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the folder {parent} ({exc.strerror or exc})") from None
    probe = temp_path(path)
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write in {parent} ({exc.strerror or exc}) (option '{what}')") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    if path.exists() and not os.access(path, os.R_OK):
        raise StoreError(f"{path}: exists and cannot be read (permission denied) (option '{what}')")
    return path


def publish(tmp: str | os.PathLike, final: str | os.PathLike, *, force: bool = False,
            same: Callable[[Path], bool] | None = None, on_exists: str = "error") -> str:
    """Publish a complete temporary file ``tmp`` as ``final``; returns 'written', 'unchanged' or 'exists'.

    fsync of the file, mode from the umask, exclusive link(2) (or, with ``force``, rename(2)),
    fsync of the folder.  When ``final`` exists (before or, another writer being faster, during the
    publication): ``on_exists='keep'`` returns 'exists' (the sweep's shards: the first one stays);
    otherwise ``same(final)`` true gives 'unchanged' and false a StoreError (nothing is replaced).
    ``tmp`` is removed in every case.
    """
    tmp, final = Path(tmp), Path(final)
    try:
        _fsync_path(tmp)
        os.chmod(tmp, file_mode())
        if final.is_dir():
            raise StoreError(f"{final}: is a folder, not a results file")

        def existing() -> str:
            if on_exists == "keep":
                return "exists"
            if same is not None and same(final):
                return "unchanged"
            if existing_content_hash(final) is None:
                raise StoreError(f"{final} exists and is not a readable results file (corrupt, truncated or "
                                 f"not HDF5); pass --force to replace it (the existing file is kept)")
            raise StoreError(f"{final} exists with different content; pass --force to overwrite it "
                             f"(the existing file is kept)")

        if force:
            _test_delay()
            os.replace(tmp, final)
        else:
            if os.path.lexists(final):
                return existing()
            _test_delay()
            try:
                os.link(tmp, final)          # fails if the name exists: publication is exclusive
            except FileExistsError:
                return existing()            # another writer published first
            except OSError as exc:           # file systems without hard links: check and rename under a lock
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.EOPNOTSUPP):
                    raise
                with file_lock(final):
                    if os.path.lexists(final):
                        return existing()
                    os.rename(tmp, final)
        _fsync_path(final.parent, directory=True)
        return "written"
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, *, force: bool = False, root_attrs: dict | None = None) -> Iterator[h5py.File]:
    """Yield a new HDF5 file that is published as ``path`` (``publish``) only if the block completes.

    The outcome is stored on the yielded file object's ``cape_outcome`` attribute after the block:
    'written', 'unchanged' (same content already there), or an exception is raised (different
    content and not ``force``).  Nothing existing is touched on failure.
    """
    path = check_target(path)
    clean_stale_temporaries(path.parent, path.name)
    tmp = temp_path(path)
    try:
        try:
            h5 = h5py.File(tmp, "w")
        except OSError as exc:
            raise StoreError(f"{path}: cannot write in {path.parent} ({exc})") from None
        try:
            for k, v in {**run_attrs(), **(root_attrs or {})}.items():
                h5.attrs[k] = v
            yield h5
            digest = content_hash(h5)
            h5.attrs["content_sha256"] = digest
        finally:
            h5.close()
        h5.cape_outcome = publish(tmp, path, force=force, same=lambda p: existing_content_hash(p) == digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def existing_content_hash(path: str | os.PathLike) -> str | None:
    """The stored content hash of an existing results file (recomputed if absent); None if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            stored = _read_attr(f.attrs.get("content_sha256", None))
            return stored if stored else content_hash(f)
    except (OSError, ValueError, KeyError):
        return None


def write_results(path: str | os.PathLike, groups: dict[str, Any], *, force: bool = False,
                  root_attrs: dict | None = None) -> Path:
    """Write ``{'/analysis/nc': tree_or_dataclass, ...}`` atomically into ``path``."""
    with atomic_h5(path, force=force, root_attrs=root_attrs) as h5:
        for name, tree in groups.items():
            write_tree(h5.require_group(name.strip("/")), to_tree(tree))
    return Path(path)


def is_cape_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file written by cape_hpc (root attribute ``cape_hpc_version`` or
    ``cape_shard``)."""
    try:
        with h5py.File(path, "r") as f:
            return "cape_hpc_version" in f.attrs or "cape_shard" in f.attrs
    except (OSError, ValueError):
        return False


def read_results(path: str | os.PathLike, group: str = "/") -> dict[str, Any]:
    """Read a whole results file (or one group of it) into a tree."""
    try:
        f = h5py.File(path, "r")
    except IsADirectoryError:
        raise StoreError(f"{path}: is a folder, not a results file") from None
    except FileNotFoundError:
        raise StoreError(f"{path}: results file not found") from None
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 results file ({str(exc).splitlines()[0]})") from None
    with f:
        if group not in f:
            raise StoreError(f"{path}: no group {group}")
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
    path = check_target(path)
    with file_lock(path):
        return _update_results(path, groups, force=force)


def _update_results(path: Path, groups: dict[str, Any], *, force: bool) -> dict[str, str]:
    import shutil

    if not path.exists():
        write_results(path, groups, force=force)
        return {name: "added" for name in groups}
    if existing_content_hash(path) is None:
        raise StoreError(f"{path} is not a readable HDF5 file; refusing to update it")
    clean_stale_temporaries(path.parent, path.name)
    tmp = temp_path(path)
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
        # under file_lock, a read-modify-write of our own file: replacing it is the point
        publish(tmp, path, force=True)
        return outcome
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
