"""Results files: atomic writes, reads and updates of whole groups, no silent overwrite.

Built from three parts: ``cape_hpc.io.codec`` (trees <-> HDF5 groups, the content hash),
``cape_hpc.io.publication`` (temporary name, fsync, exclusive link(2) or rename(2)) and
``cape_hpc.io.locks`` (``file_lock``).  Their public names are re-exported here.

Each file carries ``content_sha256``, a hash of everything in it except the volatile root
attributes (time, command line): an existing target with the same content is left alone, one with
different content is kept and an error raised, unless ``force=True``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import h5py

from cape_hpc.errors import StoreError
from cape_hpc.io.codec import (DICT_AS_TABLE, VOLATILE_ROOT_ATTRS, _read_attr, content_hash,  # noqa: F401
                               existing_content_hash, read_tree, write_tree)
from cape_hpc.io.locks import file_lock
from cape_hpc.io.provenance import run_attrs
from cape_hpc.io.publication import (HOST, STALE_TMP_S, check_target, clean_stale_temporaries,  # noqa: F401
                                     file_mode, pid_alive, publish, temp_path)
from cape_hpc.schema import to_tree


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
