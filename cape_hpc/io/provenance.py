"""Input hashes and the root attributes of a results file.

``Provenance`` itself (method, options, seed, inputs, code version) is defined once, in
``cape_hpc.schema``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import sys

from cape_hpc import __version__
from cape_hpc.schema import git_commit

__all__ = ["sha256_file", "sha256_bytes", "run_attrs", "thread_counts", "thread_inputs"]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_attrs() -> dict[str, str]:
    """Root attributes of a results file: package version, git commit, time, command line."""
    return {
        "cape_hpc_version": __version__,
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": " ".join(sys.argv),
    }


def thread_counts() -> dict[str, int]:
    """The threads this process computes with: torch (intra-op), numba, OpenMP (0: not loaded / unset).
    Recorded in the provenance: a float sum's order, so its last digits, can depend on them."""
    out = {"torch": 0, "numba": 0, "omp": int(os.environ.get("OMP_NUM_THREADS", "0") or 0)}
    if "torch" in sys.modules:
        out["torch"] = int(sys.modules["torch"].get_num_threads())
    if "numba" in sys.modules:
        with contextlib.suppress(Exception):
            out["numba"] = int(sys.modules["numba"].get_num_threads())
    return out


def thread_inputs() -> dict[str, str]:
    """``thread_counts`` as provenance inputs: ``{"threads_torch": "8", "threads_numba": ..., "threads_omp": ...}``."""
    return {f"threads_{k}": str(v) for k, v in thread_counts().items()}
