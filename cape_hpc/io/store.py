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
import stat
from pathlib import Path
from typing import Any, Iterator

import h5py

from cape_hpc.errors import StoreError
from cape_hpc.io.codec import (DICT_AS_TABLE, VOLATILE_ROOT_ATTRS, _read_attr, content_hash,  # noqa: F401
                               existing_content_hash, read_tree, write_tree)
from cape_hpc.io.locks import file_lock
from cape_hpc.io.provenance import run_attrs
from cape_hpc.io.publication import (HOST, STALE_TMP_S, check_regular, check_target,  # noqa: F401
                                     clean_stale_temporaries, file_mode, pid_alive, publish, temp_path,
                                     write_image)
from cape_hpc.io.verify import open_results
from cape_hpc.schema import to_tree


def _memory_file(name: Path) -> h5py.File:
    """A new HDF5 file held in memory (core driver, no backing store): a full disk shows only when
    its image is written (``write_image``: one plain OSError), never inside h5py."""
    return h5py.File(name, "w", driver="core", backing_store=False)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, *, force: bool = False, root_attrs: dict | None = None) -> Iterator[h5py.File]:
    """Yield a new HDF5 file that is published as ``path`` (``publish``) only if the block completes.

    The file is built in memory, written whole under a temporary name, then published.  The
    outcome is stored on the yielded file object's ``cape_outcome`` attribute after the block:
    'written', 'unchanged' (same content already there), or an exception is raised (different
    content and not ``force``; a full disk).  Nothing existing is touched on failure and no
    temporary is left.
    """
    path = check_target(path)
    clean_stale_temporaries(path.parent, path.name)
    tmp = temp_path(path)
    try:
        h5 = _memory_file(tmp)
        try:
            for k, v in {**run_attrs(), **(root_attrs or {})}.items():
                h5.attrs[k] = v
            yield h5
            digest = content_hash(h5)
            h5.attrs["content_sha256"] = digest
            h5.flush()
            image = h5.id.get_file_image()
        finally:
            h5.close()
        write_image(tmp, image, path)
        h5.cape_outcome = publish(tmp, path, force=force, same=lambda p: existing_content_hash(p) == digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_results(path: str | os.PathLike, groups: dict[str, Any], *, force: bool = False,
                  root_attrs: dict | None = None) -> Path:
    """Write ``{'/analysis/nc': tree_or_dataclass, ...}`` atomically into ``path``."""
    save_results(path, groups, force=force, root_attrs=root_attrs)
    return Path(path)


def save_results(path: str | os.PathLike, groups: dict[str, Any], *, force: bool = False,
                 root_attrs: dict | None = None) -> str:
    """``write_results`` returning what happened: 'written', or 'unchanged' (the file there already
    holds the same content and was left as it is)."""
    with atomic_h5(path, force=force, root_attrs=root_attrs) as h5:
        for name, tree in groups.items():
            write_tree(h5.require_group(name.strip("/")), to_tree(tree))
    return h5.cape_outcome


def is_cape_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file written by cape_hpc (root attribute ``cape_hpc_version`` or
    ``cape_shard``)."""
    try:
        with h5py.File(path, "r") as f:
            return "cape_hpc_version" in f.attrs or "cape_shard" in f.attrs
    except (OSError, ValueError):
        return False


def read_results(path: str | os.PathLike, group: str = "/") -> dict[str, Any]:
    """Read a whole results file (or one group of it) into a tree, after checking its content hash
    (``cape_hpc.io.verify.open_results``)."""
    with open_results(path) as f:
        if group not in f:
            raise StoreError(f"{path}: no group {group}")
        return read_tree(f[group])


def check_update_target(path: str | os.PathLike, *, force: bool = False, what: str = "--out") -> Path:
    """Check, before any computation, that groups can be added to the results file ``path``
    (``check_target``; an existing file must be an intact results file and writable, a read-only
    one is changed only with ``force``).  Returns the path to write (a symlink's target)."""
    path = check_target(path, what)
    if path.exists():
        open_results(path).close()
        mode = path.stat().st_mode
        if not force and (not os.access(path, os.W_OK) or not mode & 0o222):
            raise StoreError(f"{path}: is read-only (mode {stat.S_IMODE(mode):04o}); cape does not change it "
                             f"(make it writable, or pass --force) (option '{what}')")
    return path


def update_results(path: str | os.PathLike, groups: dict[str, Any], *, force: bool = False) -> dict[str, str]:
    """Add or replace groups in a results file atomically, keeping every other group.

    For each ``name -> tree``: a new group is added; an existing group with the same content is
    left alone; one with different content is an error (StoreError, file untouched) unless
    ``force``.  Returns ``{name: 'added' | 'unchanged' | 'replaced'}``.  A missing file is created.
    The file keeps its mode; a read-only file is refused without ``force``; a symlink is written
    through to its target.  Concurrent cape writers of the same file are serialised by ``file_lock``.
    """
    path = check_target(path)
    with file_lock(path):
        path = check_update_target(path, force=force)
        return _update_results(path, groups, force=force)


def _merge_groups(h5: h5py.File, path: Path, groups: dict[str, Any], force: bool) -> dict[str, str]:
    """Write each group into the open file ``h5``; {name: 'added' | 'unchanged' | 'replaced'}."""
    outcome: dict[str, str] = {}
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
    return outcome


def _update_results(path: Path, groups: dict[str, Any], *, force: bool) -> dict[str, str]:
    import io

    if not path.exists():
        write_results(path, groups, force=force)
        return {name: "added" for name in groups}
    mode = stat.S_IMODE(path.stat().st_mode)
    clean_stale_temporaries(path.parent, path.name)
    tmp = temp_path(path)
    try:
        buf = io.BytesIO(path.read_bytes())       # the update is built in memory: a full disk is one error
        with h5py.File(buf, "r+") as h5:
            outcome = _merge_groups(h5, path, groups, force)
            if all(v == "unchanged" for v in outcome.values()):
                return outcome
            for k, v in run_attrs().items():
                if k in ("created", "command_line", "git_commit"):
                    h5.attrs[k] = v
            h5.attrs["content_sha256"] = content_hash(h5)
        write_image(tmp, buf.getbuffer(), path)
        # under file_lock, a read-modify-write of our own file: replacing it is the point
        publish(tmp, path, force=True, mode=mode)
        return outcome
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
