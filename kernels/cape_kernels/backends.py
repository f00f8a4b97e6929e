"""Backend detection and choice.

Four backends: ``torch`` (plain torch, any device), ``numba`` (CPU), ``triton`` (CUDA tensors; CPU
tensors too when ``TRITON_INTERPRET=1`` is set before the first import of the Triton kernels) and
``cupy`` (CUDA tensors, kernels compiled from ``cuda/*.cu`` with NVRTC).

* An explicitly requested backend that cannot run here (not installed, no GPU, wrong device)
  raises :class:`BackendUnavailable`, naming why.
* The automatic choice (``backend=None`` or ``"auto"``) takes the first that can run:
  CUDA tensors: triton, cupy, torch; CPU tensors: numba, torch.  When it has to skip the first
  preference it logs that once per (device type, backend) at INFO level.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from functools import lru_cache
from types import ModuleType

log = logging.getLogger("cape_kernels")

BACKENDS = ("torch", "numba", "triton", "cupy")
_MODULES = {
    "torch": "cape_kernels.torch_backend",
    "numba": "cape_kernels.numba_backend",
    "triton": "cape_kernels.triton_backend",
    "cupy": "cape_kernels.cupy_backend",
}
_PREFERENCE = {"cuda": ("triton", "cupy", "torch"), "cpu": ("numba", "torch")}
_logged: set = set()


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run on this machine or for these tensors."""


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=None)
def _installed(name: str) -> str | None:
    """None if the backend's package imports, else the reason it does not."""
    if name == "torch":
        return None
    try:  # numba through numba_jit, which points numba's cache at the user folder first
        importlib.import_module("cape_kernels.numba_jit" if name == "numba" else name)
    except Exception as exc:  # ImportError, or a broken install
        return f"{name} is not importable ({type(exc).__name__}: {exc})"
    if importlib.util.find_spec(_MODULES[name]) is None:
        return f"cape_kernels has no {name} backend module in this install"
    return None


@lru_cache(maxsize=None)
def _cuda_ok() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


@lru_cache(maxsize=None)
def _cupy_gpu() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


def why_not(name: str, device_type: str) -> str | None:
    """None if backend ``name`` can run on tensors of ``device_type`` ('cpu'/'cuda'), else why."""
    if name not in BACKENDS:
        return f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"
    reason = _installed(name)
    if reason:
        return reason
    if name == "torch":
        return None
    if name == "numba":
        return None if device_type == "cpu" else f"numba runs on CPU tensors only (got {device_type})"
    if name == "triton":
        if device_type == "cuda":
            return None if _cuda_ok() else "triton needs a CUDA device"
        if device_type == "cpu":
            return None if triton_interpreting() else \
                "triton needs CUDA tensors (CPU tensors only with TRITON_INTERPRET=1)"
        return f"triton does not run on {device_type} tensors"
    if name == "cupy":
        if device_type != "cuda":
            return f"cupy runs on CUDA tensors only (got {device_type})"
        return None if _cupy_gpu() else "cupy cannot reach a CUDA device"
    return "unreachable"


def available_backends(device: str | None = None) -> tuple[str, ...]:
    """Names of the backends that can run here, for tensors on ``device`` ('cpu', 'cuda').

    With no device: those usable on any device present (CPU always, CUDA when there is one).
    """
    if device is None:
        types = ["cpu"] + (["cuda"] if _cuda_ok() else [])
    else:
        types = [str(device).split(":")[0]]
    return tuple(b for b in BACKENDS if any(why_not(b, t) is None for t in types))


def resolve(backend: str | None, device_type: str) -> str:
    """The backend name to use (raises :class:`BackendUnavailable` for an explicit one that can't)."""
    if backend in (None, "", "auto"):
        prefs = _PREFERENCE.get(device_type, ("torch",))
        for i, name in enumerate(prefs):
            reason = why_not(name, device_type)
            if reason is None:
                if i > 0:
                    key = (device_type, name)
                    if key not in _logged:
                        _logged.add(key)
                        log.info("cape_kernels: %s on %s tensors: %s; using %s", prefs[0],
                                 device_type, why_not(prefs[0], device_type), name)
                return name
        return "torch"
    reason = why_not(backend, device_type)
    if reason is not None:
        raise BackendUnavailable(f"backend {backend!r} is unavailable: {reason}")
    return backend


def module(name: str) -> ModuleType:
    return importlib.import_module(_MODULES[name])
