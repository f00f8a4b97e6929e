"""Verification on read: a results file is opened only if its content matches its stored hash.

Every file cape writes carries ``content_sha256`` (``cape_hpc.io.codec.content_hash``).  ``open_results``
opens a file read-only and recomputes the hash once per file and process: the verdict is cached
under the file's (real path, device, inode, size, mtime in ns), so a file read several times in one
command is hashed once, and a file changed since is hashed again.  A mismatch, or a file too
damaged to hash, is a StoreError of one line; the file is never changed.  Files without a stored
hash (written by other tools or older versions) are read as they are.
"""
from __future__ import annotations

import os

import h5py

from cape_hpc.errors import StoreError
from cape_hpc.io.codec import _read_attr, content_hash

_VERIFIED: dict[tuple, bool] = {}


def _identity(path: str | os.PathLike) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def verify_open_file(f: h5py.File, path: str | os.PathLike) -> None:
    """Raise StoreError (one line naming ``path``) when the open file's content differs from its
    stored ``content_sha256`` or cannot be read to the end; cached per file identity."""
    key = _identity(path)
    if key in _VERIFIED:
        return
    try:
        stored = _read_attr(f.attrs.get("content_sha256", None))
        actual = content_hash(f) if stored else None
    except Exception as exc:  # noqa: BLE001  h5py raises OSError, KeyError, RuntimeError, ValueError ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"{path}: corrupt results file, cannot be read to the end ({first})") from None
    if stored and actual != stored:
        raise StoreError(f"{path}: corrupt results file: its content does not match its stored content_sha256 "
                         f"(stored {str(stored)[:12]}, actual {actual[:12]}); refusing to read it")
    _VERIFIED[key] = True


def open_results(path: str | os.PathLike) -> h5py.File:
    """Open a results file read-only after checking it (one-line StoreError naming ``path``: missing,
    a folder, not HDF5, corrupt).  The caller closes it."""
    if os.path.isdir(path):
        raise StoreError(f"{path}: is a folder, not a results file")
    if not os.path.exists(path):
        raise StoreError(f"{path}: results file not found")
    if not os.path.isfile(path):
        raise StoreError(f"{path}: is not a regular file, not a results file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 results file ({str(exc).splitlines()[0]})") from None
    try:
        verify_open_file(f, path)
    except BaseException:
        f.close()
        raise
    return f
