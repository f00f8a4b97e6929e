"""numba for the CPU kernels: the on-disk cache of compiled kernels, and the jit decorators.

Imported only by the numba kernel modules (``numba_backend``, ``numba_streaming``, ``resample``),
so ``import cape_kernels`` and ``cape_kernels.backends`` never import numba: it loads when a numba
kernel is first used.

The cache: compiled kernels are written to ``NUMBA_CACHE_DIR`` when the user set it, else to
``$XDG_CACHE_HOME/cape_kernels/numba`` (``~/.cache/cape_kernels/numba``), never next to the
installed sources; a second process loads them instead of compiling.  The variable is set here
before numba is imported.  When that folder cannot be written, the kernels are compiled in every
process, silently (no cache, and nothing written to the install folder).

The thread pool: numba's is started here, once per process, with torch's CPU thread count kept
(``start_thread_pool``), so no parallel kernel changes the number of threads torch runs with, and
OpenMP's nesting, which the pool's start turns on, turned back off (``_unnest_openmp``).
"""
from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cape_kernels/numba``, or ``~/.cache/cape_kernels/numba``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cape_kernels" / "numba"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def _cache_folder() -> str | None:
    """The folder numba caches into (``NUMBA_CACHE_DIR``, set to the default when unset), or None
    when it is not writable (then nothing is cached)."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or str(default_cache_dir())
    if not _writable(Path(folder)):
        return None
    os.environ["NUMBA_CACHE_DIR"] = folder
    return folder


CACHE_DIR = _cache_folder()
CACHE = CACHE_DIR is not None

import numba  # noqa: E402  (after NUMBA_CACHE_DIR is set)

if CACHE and numba.config.CACHE_DIR != CACHE_DIR:  # numba was imported before us: re-read the env
    numba.core.config.reload_config()

prange = numba.prange


def start_thread_pool() -> None:
    """Start numba's thread pool (once per process; later calls do nothing) with torch's CPU
    thread count as it was.

    numba's ``omp`` threading layer starts its pool with ``omp_set_num_threads(NUMBA_NUM_THREADS)``,
    and torch (which loads its libgomp globally) reads its count from that same setting, so a
    process that had given torch fewer threads than numba ran every later torch op on numba's count
    (a bare forward 10x slower on a loaded 2-core machine, torch at 1 thread).  Only the start does
    this: each parallel launch passes its count to its own parallel region.  So the pool is started
    here, when the first numba kernel module is imported and before any kernel runs, and torch's
    count is put back: every parallel kernel (pooling, set-mean, pairwise, steering, the resampling
    and streaming kernels) is covered, at no cost per call.  torch is not imported for this: when
    it is not loaded there is no count to keep (it reads ``OMP_NUM_THREADS`` when it starts, unless
    numba's pool started first, which then wins)."""
    torch = sys.modules.get("torch")
    n = torch.get_num_threads() if torch is not None else 0
    numba.get_num_threads()              # starts the pool, selecting the threading layer
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _unnest_openmp()


def _unnest_openmp() -> None:
    """Put OpenMP's nesting back after numba's ``omp`` pool has started.

    The start also sets every supported nesting level (``omp_set_max_active_levels``) in the libgomp
    its lookup finds first: torch's own copy when torch was loaded before, or the system's, which
    torch then shares when numba loaded it first (the soname matches).  With nesting on, every BLAS
    call inside one of torch's parallel regions (CPU flash attention runs its small GEMMs inside
    ``parallel_for``) starts a nested team: on 2 cores a tiny model's forward ran 4-8x slower for the
    rest of the process.  cape's numba kernels never nest, so every libgomp of the process goes back
    to ``OMP_MAX_ACTIVE_LEVELS`` (1 when unset)."""
    if numba.threading_layer() != "omp":
        return
    import ctypes

    try:
        levels = int(os.environ.get("OMP_MAX_ACTIVE_LEVELS", "1"))
    except ValueError:
        levels = 1
    for path in _libgomp_paths():
        try:
            ctypes.CDLL(path).omp_set_max_active_levels(levels)
        except (OSError, AttributeError):   # not an OpenMP runtime after all: nothing to undo there
            continue


def _libgomp_paths() -> list[str]:
    """Every libgomp mapped into this process (Linux), else the file of numba's OpenMP pool (whose
    symbol lookup reaches the libgomp it linked)."""
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split()[-1] for line in fh if "libgomp" in line.rsplit("/", 1)[-1]})
    except OSError:
        from numba.np.ufunc import omppool
        return [omppool.__file__]


start_thread_pool()


def njit(fn=None, **kw):
    """``numba.njit`` with the cache on when the cache folder is writable (``cache=`` in ``kw``
    is ignored: caching follows the folder)."""
    kw["cache"] = CACHE
    if fn is None:
        return numba.njit(**kw)
    return numba.njit(**kw)(fn)


def serial_copy(fn):
    """``fn`` under the name ``<name>_serial``: numba's cache keys a kernel by its name, line and
    bytecode, not by its ``parallel`` flag, so a serial twin compiled from the same function must
    be cached under its own name (else one twin would load the other's machine code)."""
    name = fn.__name__ + "_serial"
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    g = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    g.__qualname__ = name
    g.__module__ = fn.__module__
    return g


def twins(fn, **kw):
    """The kernel compiled twice: parallel (``prange`` over work items) and serial (for small
    calls, where waking the thread pool costs more than the work), each cached under its own name.
    Both do the same arithmetic in the same order per output, so results never depend on which ran
    or on the thread count."""
    return njit(fn, parallel=True, **kw), njit(serial_copy(fn), parallel=False, **kw)
