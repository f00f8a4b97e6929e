"""MPI for the sweep: the communicator, polling receives (no spinning core), the per-node thread
budget, rank 0's dispatcher thread and the gathering of per-rank busy/wait times.

Ranks ask rank 0 for work with ``TAG_REQ`` (carrying the previous result), get a model name (or
None: stop) with ``TAG_ASSIGN``, and the final statistics with ``TAG_BYE``.  Without MPI every
function here degrades to the single-process case (``comm is None``).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable

from cape_hpc.errors import OptionError

if TYPE_CHECKING:
    from cape_hpc.sweep.runner import ModelRun
    from cape_hpc.sweep.scheduler import Scheduler

log = logging.getLogger(__name__)

__all__ = ["TAG_REQ", "TAG_ASSIGN", "TAG_BYE", "POLL_S", "launched_by_mpi", "get_comm", "rank_and_size", "recv_polling",
           "local_ranks", "set_thread_budget", "limit_numba_threads", "gather_stats", "any_source", "dispatch"]

TAG_REQ, TAG_ASSIGN, TAG_BYE = 11, 12, 13
POLL_S = 0.005


def launched_by_mpi() -> bool:
    keys = ("PMI_RANK", "PMI_SIZE", "PMI_FD", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
            "HYDI_CONTROL_FD")
    return any(k in os.environ for k in keys)


def get_comm(use_mpi: bool | None = None):
    """COMM_WORLD when launched under MPI and mpi4py imports; None otherwise (single process)."""
    if use_mpi is False or (use_mpi is None and not launched_by_mpi()):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if use_mpi:
            raise OptionError("--mpi: mpi4py is not installed (pip install mpi4py mpich)") from None
        log.warning("launched under MPI but mpi4py is missing: running as a single process")
        return None
    return MPI.COMM_WORLD


def rank_and_size(use_mpi: bool | None = None) -> tuple[int, int]:
    """(rank, number of ranks) of this process in the sweep (``get_comm``); (0, 1) without MPI."""
    comm = get_comm(use_mpi)
    return (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)


def recv_polling(comm, source: int, tag: int, stop: threading.Event | None = None):
    """Receive without spinning a core (MPICH's blocking receive busy-polls)."""
    req = comm.irecv(source=source, tag=tag)
    delay = POLL_S
    while True:
        ok, msg = req.test()
        if ok:
            return msg
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def local_ranks(comm) -> int:
    if comm is None:
        return 1
    for k in ("MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        if os.environ.get(k, "").isdigit():
            return int(os.environ[k])
    try:
        from mpi4py import MPI

        return comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    except Exception:
        return comm.Get_size()


def set_thread_budget(local_ranks: int) -> int:
    """Split this node's cores between the ranks on it (unless OMP_NUM_THREADS is set)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    n = max(1, cpus // max(1, local_ranks))
    if "OMP_NUM_THREADS" in os.environ:
        n = int(os.environ["OMP_NUM_THREADS"])
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    # every thread pool a rank may use: torch/OpenMP, BLAS, and numba (the kernels' CPU backend).
    # Without the numba limit two ranks on two cores run four spinning numba workers (seen: 2-17x slower).
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    limit_numba_threads(n)
    return n


def limit_numba_threads(n: int) -> None:
    """Numba's thread count for this process, through numba's API only.

    ``NUMBA_NUM_THREADS`` must never change once numba is imported: numba re-reads it at every
    compile, and from 0.68 a value other than the one its pool was launched with makes that compile
    raise "Cannot set NUMBA_NUM_THREADS to a different value once the threads have been launched"
    (whether the pool was up depended on numba's cache, so the failure was intermittent).
    ``numba.set_num_threads`` only masks the launched pool, which is all a rank needs.  numba comes
    through ``cape_kernels.numba_jit`` (its kernels' cache folder, and its pool started with torch's
    thread count kept: starting it here would otherwise undo the budget just given to torch)."""
    from cape_kernels.numba_jit import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def gather_stats(comm, busy: float, wait: float):
    """Per-rank busy and wait seconds on rank 0 (point-to-point, polled: no spinning collective)."""
    if comm is None or comm.Get_size() == 1:
        return [busy], [wait], None
    rank = comm.Get_rank()
    if rank != 0:
        comm.send((rank, busy, wait), dest=0, tag=TAG_BYE + 1)
        return None
    b, w = [busy] + [0.0] * (comm.Get_size() - 1), [wait] + [0.0] * (comm.Get_size() - 1)
    for _ in range(comm.Get_size() - 1):
        r, bb, ww = recv_polling(comm, any_source(), TAG_BYE + 1)
        b[r], w[r] = bb, ww
    return b, w, None


def any_source() -> int:
    from mpi4py import MPI

    return MPI.ANY_SOURCE


def dispatch(comm, sched: Scheduler, on_result: Callable[[ModelRun], None], size: int) -> None:
    """Rank 0's dispatcher thread: answer workers' requests until each has been told to stop."""
    from mpi4py import MPI

    active = size - 1
    status = MPI.Status()
    while active > 0:
        if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_REQ, status=status):
            time.sleep(POLL_S)
            continue
        src = status.Get_source()
        msg = comm.recv(source=src, tag=TAG_REQ)
        if msg["result"] is not None:
            on_result(msg["result"])
        if msg.get("stopping"):
            sched.stop()
        task = sched.next()
        comm.send(task, dest=src, tag=TAG_ASSIGN)
        if task is None:
            active -= 1
