"""Advisory locks serialising cape writers of one file; no lock file is left behind."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock (``.<name>.lock`` beside ``path``) serialising cape writers of a file.

    The holder removes the lock file before it unlocks; a waiter that then gets the lock of a
    removed file (its inode is no longer the name's) opens the name again, so no two writers ever
    hold locks of different files at once."""
    import fcntl

    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)
                return
        finally:
            os.close(fd)  # closing releases the lock
