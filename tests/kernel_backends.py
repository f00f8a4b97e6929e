"""The backend x device cases every kernel test runs (imported by the kernel test files).

Importing this module first sets TRITON_INTERPRET=1 on a machine without CUDA, so the Triton
kernels, defined at their first import, run in the interpreter on CPU tensors."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def has(mod: str) -> bool:
    """True when ``mod`` is installed (found without importing it)."""
    return importlib.util.find_spec(mod) is not None


BACKENDS = [
    pytest.param("torch", "cpu", id="torch-cpu"),
    pytest.param("numba", "cpu", id="numba-cpu"),
    pytest.param("triton", "cpu", id="triton-interp",
                 marks=pytest.mark.skipif(torch.cuda.is_available() or not has("triton"),
                                          reason="interpreter case: CPU-only machines")),
    pytest.param("torch", "cuda", id="torch-cuda", marks=pytest.mark.gpu),
    pytest.param("triton", "cuda", id="triton-cuda", marks=pytest.mark.gpu),
    pytest.param("cupy", "cuda", id="cupy-cuda", marks=pytest.mark.gpu),
]
