"""Per-model HDF5 shards: provenance, validation, exclusive publication, and per-model locks.

Layout of a results directory::

    <out>/shards/<model>.h5        complete shards only (published by link/rename)
    <out>/shards/.<model>.h5~<host>~<pid>~<token>.tmp.h5   being written (never read as results)
    <out>/shards/corrupt/          truncated or corrupt shards moved aside (kept for inspection)
    <out>/locks/<model>.lock       who is computing <model> now (O_EXCL; stale if its process is gone)
    <out>/manifest.json            per-model status, error, time (see runner)

A shard is *complete* when it opens, its root attribute ``complete`` is true, and its stored
``content_sha256`` equals the hash recomputed from its datasets and attributes.  Its root attribute
``provenance`` (canonical JSON) holds what must match for a resume to reuse it: the model entry
(id, revision, dtype, batch size), the job options (prompt sets, taps, steering, work function),
the prompt files' SHA-256 and the code version.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py

from cape_hpc import __version__
from cape_hpc.io.provenance import sha256_bytes, sha256_file
from cape_hpc.schema import git_commit
from cape_hpc.io.store import clean_stale_temporaries, content_hash, pid_alive, publish, temp_path, write_tree
from cape_hpc.sweep.spec import JobSpec, ModelEntry, options_hash

SHARD_FORMAT = 1
HOST = socket.gethostname()
#: a lock from another host whose heartbeat is older than this is stale
REMOTE_STALE_S = float(os.environ.get("CAPE_SWEEP_STALE_S", 600))
HEARTBEAT_S = 30.0

# the packages whose source decides what a shard contains
_CODE_PACKAGES = ("cape_hpc.sweep", "cape_hpc.models", "cape_hpc.internals", "cape_hpc.steering",
                  "cape_hpc.io", "cape_kernels")


def source_hash() -> str:
    """SHA-256 over the sources of the packages that produce a shard (uncommitted edits count), read
    where they are imported from: a checkout or an installed wheel."""
    parts = []
    for pkg in _CODE_PACKAGES:
        base = Path(importlib.util.find_spec(pkg).submodule_search_locations[0])
        for p in sorted(base.rglob("*.py")) + sorted(base.rglob("*.cu")):
            parts.append(f"{pkg}/{p.relative_to(base).as_posix()}:{sha256_file(p)}")
    return sha256_bytes("\n".join(parts).encode())


_CODE_VERSION: str | None = None


def shard_code_version() -> str:
    """``<version>+src.<hash of the producing sources>``; ``CAPE_SWEEP_CODE_VERSION`` overrides."""
    global _CODE_VERSION
    if os.environ.get("CAPE_SWEEP_CODE_VERSION"):
        return os.environ["CAPE_SWEEP_CODE_VERSION"]
    if _CODE_VERSION is None:
        _CODE_VERSION = f"{__version__}+src.{source_hash()[:16]}"
    return _CODE_VERSION


def prompt_hashes(job: JobSpec) -> dict[str, str]:
    """SHA-256 of each prompt file the job reads (default files resolved); 'absent' if missing."""
    from cape_hpc.io.data import data_file

    out = {}
    for key, default in (("contrastive", data_file("prompts", "contrastive.jsonl")),
                         ("calibration", data_file("prompts", "calibration.jsonl"))):
        p = Path(getattr(job.prompts, key) or default)
        out[key] = sha256_file(p) if p.is_file() else "absent"
    return out


def expected_provenance(entry: ModelEntry, job: JobSpec, prompts_sha: dict[str, str] | None = None) -> dict:
    return {
        "format": SHARD_FORMAT,
        "model": entry.name,
        "model_options": entry.options(),
        "job_options": job.job_options(),
        "prompt_sha256": prompts_sha if prompts_sha is not None else prompt_hashes(job),
        "code_version": shard_code_version(),
    }


def provenance_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ (dotted paths), for error messages."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += provenance_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} != {vb!r}")
    return out


def shards_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "shards"


def shard_path(out_dir: str | os.PathLike, name: str) -> Path:
    return shards_dir(out_dir) / f"{name}.h5"


@dataclass
class ShardState:
    status: str              # 'missing' | 'complete' | 'corrupt' | 'incomplete'
    path: Path
    provenance: dict | None = None
    detail: str = ""
    content_sha256: str | None = None


def inspect_shard(path: str | os.PathLike) -> ShardState:
    """Open a shard and check it is complete and intact (recomputes the content hash)."""
    path = Path(path)
    if not path.exists():
        return ShardState("missing", path)
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if not bool(attrs.get("complete", False)):
                return ShardState("incomplete", path, detail="root attribute 'complete' is not set")
            stored = attrs.get("content_sha256")
            stored = stored.decode() if isinstance(stored, bytes) else stored
            prov = json.loads(attrs["provenance"])
            actual = content_hash(f)
    except Exception as exc:  # truncated or garbage file: h5py raises OSError/KeyError/ValueError
        return ShardState("corrupt", path, detail=f"{type(exc).__name__}: {exc}")
    if stored != actual:
        return ShardState("corrupt", path, prov, f"content hash mismatch (stored {str(stored)[:12]}, "
                                                 f"actual {actual[:12]})")
    return ShardState("complete", path, prov, content_sha256=actual)


def quarantine(path: Path) -> Path:
    """Move a corrupt shard aside (never deleted silently); returns its new path."""
    dest = path.parent / "corrupt" / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}.h5"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        pass
    return dest


def failpoint(where: str, name: str) -> None:
    """Test hook: ``CAPE_SWEEP_FAILPOINT=<where>:<model>`` SIGKILLs this process at that point."""
    fp = os.environ.get("CAPE_SWEEP_FAILPOINT", "")
    if fp and fp == f"{where}:{name}":
        os.kill(os.getpid(), signal.SIGKILL)


def write_shard(out_dir: str | os.PathLike, entry: ModelEntry, provenance: dict, tree: dict[str, Any], *,
                force: bool = False, info: dict | None = None) -> tuple[str, Path]:
    """Write a shard under a temporary name, then publish it exclusively (``cape_hpc.io.store.publish``,
    the mechanism of every results file: fsync, mode from the umask, link(2), fsync of the folder).

    ``tree`` has keys ``internals`` (one tree), ``steering`` (run name -> tree) and ``scores`` (one
    tree), all optional.
    Returns ('written' | 'exists', path): 'exists' when another process published the same model
    first (the existing shard is kept, ours dropped) -- a shard is never written twice.
    """
    final = shard_path(out_dir, entry.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["cape_shard"] = SHARD_FORMAT
            f.attrs["model"] = entry.name
            f.attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
            f.attrs["provenance_sha256"] = options_hash(provenance)
            f.attrs["git_commit"] = git_commit()
            # the model's family and parameter count from the job spec travel with the shard (issue 12)
            for k, v in {"family": entry.family, "params": entry.params, **(info or {})}.items():
                if v is not None:
                    f.attrs[f"info_{k}"] = v
            if tree.get("internals") is not None:
                write_tree(f.require_group(f"internals/{entry.name}"), tree["internals"])
            for run, st in (tree.get("steering") or {}).items():
                write_tree(f.require_group(f"steering/{entry.name}/{run}"), st)
            if tree.get("scores") is not None:   # a ScoreRun (cape_hpc.sweep.scores)
                write_tree(f.require_group(f"scores/{entry.name}"), tree["scores"])
            f.flush()
            failpoint("write", entry.name)
            f.attrs["complete"] = True
            f.attrs["content_sha256"] = content_hash(f)
        outcome = publish(tmp, final, force=force, on_exists="keep")
        return ("exists" if outcome == "exists" else "written"), final
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def clean_stale_tmp(out_dir: str | os.PathLike) -> list[Path]:
    """Remove temporary shards left by dead processes (``cape_hpc.io.store.clean_stale_temporaries``)."""
    return clean_stale_temporaries(shards_dir(out_dir))


# ---------------------------------------------------------------------------------------------
# locks


_pid_alive = pid_alive


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class LockBusy(Exception):
    def __init__(self, holder: dict):
        super().__init__(f"locked by {holder.get('host')}:{holder.get('pid')}")
        self.holder = holder


class ModelLock:
    """An exclusive per-model lock file (O_CREAT|O_EXCL) with stale-lock takeover.

    The file holds host, pid, the process start time and a nonce.  A lock is stale when its host is
    this host and the process is gone (or the pid was reused: start time differs), or when it is
    from another host and its heartbeat (mtime, touched every 30 s) is older than
    ``CAPE_SWEEP_STALE_S`` (600 s).  Taking over renames the stale file to a unique name first and
    checks it is still the stale one, so two processes cannot both take the same stale lock.
    """

    def __init__(self, out_dir: str | os.PathLike, name: str, run_id: str = ""):
        self.path = Path(out_dir) / "locks" / f"{name}.lock"
        self.name = name
        self.run_id = run_id
        self.nonce = f"{HOST}.{os.getpid()}.{time.time_ns()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None

    def _content(self) -> dict:
        return {"host": HOST, "pid": os.getpid(), "start": _proc_start(os.getpid()), "nonce": self.nonce,
                "run_id": self.run_id, "since": time.time()}

    @staticmethod
    def read(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def is_stale(self, holder: dict) -> bool:
        if not holder:  # empty/unreadable: a writer died between create and write, or is writing now
            try:
                return time.time() - self.path.stat().st_mtime > 5.0
            except FileNotFoundError:
                return False
        if holder.get("host") == HOST:
            pid = int(holder.get("pid", -1))
            if not _pid_alive(pid):
                return True
            start = holder.get("start")
            return start is not None and _proc_start(pid) not in (None, start)
        try:
            return time.time() - self.path.stat().st_mtime > REMOTE_STALE_S
        except FileNotFoundError:
            return False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.read(self.path)
                if holder is None:
                    continue  # released in between: retry
                if not self.is_stale(holder):
                    raise LockBusy(holder)
                aside = self.path.with_name(f"{self.path.name}.stale.{self.nonce}")
                try:
                    os.rename(self.path, aside)
                except FileNotFoundError:
                    continue
                moved = self.read(aside)
                if moved != holder and moved is not None:
                    # someone replaced the stale lock with a live one in between: put it back
                    try:
                        os.link(aside, self.path)
                    except FileExistsError:
                        pass
                    os.unlink(aside)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(aside)
                self.took_over = holder
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._content(), f)
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()
            return
        raise LockBusy(self.read(self.path) or {})

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        holder = self.read(self.path)
        if holder and holder.get("nonce") == self.nonce:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> "ModelLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def clear_stale_lock(out_dir: str | os.PathLike, name: str) -> dict | None:
    """Remove model ``name``'s lock when it is stale (its holder died, e.g. a rank killed after it
    published the shard and before it released the lock); a live lock is left alone.  Returns the
    stale holder, or None when there was nothing stale to remove."""
    lock = ModelLock(out_dir, name)
    if not lock.path.exists():
        return None
    try:
        lock.acquire()
    except LockBusy:
        return None
    lock.release()
    return lock.took_over


# ---------------------------------------------------------------------------------------------
# manifest


@contextlib.contextmanager
def locked_manifest(out_dir: str | os.PathLike) -> Iterator[dict]:
    """Read-modify-write ``manifest.json`` under an flock (safe across concurrent runs)."""
    import fcntl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    with open(out / ".manifest.lock", "a+") as lk:
        try:
            fcntl.flock(lk, fcntl.LOCK_EX)
        except OSError:  # file systems without flock: the manifest is a report, shards are the truth
            pass
        try:
            try:
                data = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                data = {}
            data.setdefault("models", {})
            data.setdefault("runs", {})
            yield data
            tmp = path.with_name(f".manifest.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lk, fcntl.LOCK_UN)
