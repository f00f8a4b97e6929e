"""Atomic publication of a finished file: one mechanism for results files and sweep shards.

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
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Callable

from cape_hpc.errors import StoreError
from cape_hpc.io.codec import existing_content_hash
from cape_hpc.io.locks import file_lock

HOST = socket.gethostname()
STALE_TMP_S = float(os.environ.get("CAPE_STALE_TMP_S", 24 * 3600))


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


NAME_MAX = 255


def _temp_stem(name: str) -> str:
    """``name`` as it appears in its temporaries: shortened (with a hash of the whole name) when the
    temporary name would be longer than a file name may be (``NAME_MAX`` bytes)."""
    room = NAME_MAX - len(f".~{HOST}~{'0' * 10}~00000000.tmp.h5".encode())  # pids: at most 10 digits
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return raw[:max(room - 13, 1)].decode("utf-8", "ignore") + "-" + digest


def temp_path(final: str | os.PathLike) -> Path:
    """A temporary name beside ``final``: ``.<name>~<host>~<pid>~<token>.tmp.h5`` (a long name shortened)."""
    final = Path(final)
    return final.with_name(f".{_temp_stem(final.name)}~{HOST}~{os.getpid()}~{secrets.token_hex(4)}.tmp.h5")


def clean_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Remove temporaries of ``name`` (every target: '*') left in ``folder`` by writers that died:
    of this host and the pid is gone, or older than ``STALE_TMP_S`` (other hosts, older layouts)."""
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not (entry.name.endswith(".tmp.h5") and entry.name.startswith("." + ("" if name == "*" else _temp_stem(name)))):
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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def check_regular(path: Path, what: str = "--out") -> None:
    """StoreError unless ``path`` is missing or a regular file (through symlinks): cape never replaces
    a device, FIFO, socket or folder, with or without --force."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise StoreError(f"{path}: is a {_kind(mode)}, not a regular file; cape writes only regular files "
                         f"(option '{what}')")


def _path_text(path: str | os.PathLike, what: str) -> str:
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text == "":
        raise StoreError(f"option '{what}': an empty path")
    if "\0" in text:
        raise StoreError(f"option '{what}': the path {text!r} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"option '{what}': the path {text.encode('utf-8', 'surrogateescape')!r} is not valid "
                         f"UTF-8 (cape stores file names as UTF-8 text; rename it)") from None
    return text


def check_target(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check that a results file can be written at ``path`` (before any computation): not empty, no
    NUL, valid UTF-8, not a folder, device, FIFO or socket, its parent a folder (created if missing)
    in which a file can be created.  A symlink is followed: the returned path is its target, which
    is what gets written (the link stays).  Raises StoreError naming the path."""
    path = Path(_path_text(path, what))
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    check_regular(path, what)
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


def write_image(tmp: Path, image: bytes, final: Path) -> None:
    """Write a finished file image (bytes) to the temporary ``tmp`` and fsync it; a full disk or any
    write error is one StoreError naming ``final`` (the caller removes ``tmp``)."""
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            view = memoryview(image)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"{final}: cannot write in {final.parent} ({exc.strerror or exc}); nothing was "
                         f"replaced") from None


def publish(tmp: str | os.PathLike, final: str | os.PathLike, *, force: bool = False,
            same: Callable[[Path], bool] | None = None, on_exists: str = "error", mode: int | None = None) -> str:
    """Publish a complete temporary file ``tmp`` as ``final``; returns 'written', 'unchanged' or 'exists'.

    fsync of the file, ``mode`` (default: from the umask), exclusive link(2) (or, with ``force``, rename(2)),
    fsync of the folder.  When ``final`` exists (before or, another writer being faster, during the
    publication): ``on_exists='keep'`` returns 'exists' (the sweep's shards: the first one stays);
    otherwise ``same(final)`` true gives 'unchanged' and false a StoreError (nothing is replaced).
    ``tmp`` is removed in every case.  Only a regular file is ever replaced (``check_regular``).
    """
    tmp, final = Path(tmp), Path(final)
    try:
        _fsync_path(tmp)
        os.chmod(tmp, file_mode() if mode is None else mode)
        check_regular(final)

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



def publish_bytes(final: str | os.PathLike, data: bytes, *, force: bool = False, what: str = "--out") -> Path:
    """Write ``data`` as the file ``final`` atomically (``check_target``, a temporary beside it,
    ``write_image``, ``publish``): an existing file is replaced only with ``force`` and only if it is a
    regular file; no temporary is left.  Returns the path written (a symlink's target)."""
    path = check_target(final, what)
    tmp = temp_path(path)
    try:
        write_image(tmp, data, path)
        publish(tmp, path, force=force, same=lambda p: p.read_bytes() == data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path
