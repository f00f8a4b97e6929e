"""Testing helpers: float64 oracles and dtype-aware tolerances.

The tolerance rule is this package's own.  The per-dtype resolutions of float16, bfloat16 and
float32 are those of FlagGems' ``flag_gems.testing.RESOLUTION`` table, but FlagGems uses them as a
relative tolerance with an absolute one of 1e-4 x the reduction length; here the tolerance is
absolute (results are normalised, |x| <= 1), four units of the *accumulation* dtype's resolution
times (1 + log2 n) for a reduction over n terms (the kernels sum in blocks/trees, whose error grows
like log n), plus two units of the input dtype's resolution when a backend rounds an intermediate
to it; float64 uses 1e-12.  Inputs are rounded to the tested dtype first and the oracle runs in
float64 on those rounded values, so the tolerance only covers the kernel's own arithmetic.
"""
from __future__ import annotations

import math
import numpy as np
import torch

# resolution of each dtype (16/32-bit: FlagGems' table); accumulation is fp32 for the 16-bit types
RES = {torch.float16: 1e-3, torch.bfloat16: 1.6e-2, torch.float32: 1.3e-6, torch.float64: 1e-12}
ACC_RES = {torch.float16: 1.3e-6, torch.bfloat16: 1.3e-6, torch.float32: 1.3e-6, torch.float64: 1e-12}


def atol(dtype: torch.dtype, n: int, rounds_to_dtype: bool = False) -> float:
    """Absolute tolerance for a normalised result (|x| <= 1) reduced over n terms.

    ``rounds_to_dtype``: the backend rounds an intermediate to the input dtype (GPU tensor-core
    paths for fp16/bf16), which adds a few units of that dtype's resolution.
    """
    t = 4 * ACC_RES[dtype] * (1 + math.log2(max(n, 1)))
    if rounds_to_dtype:
        t += 2 * RES[dtype]
    return t


def rand(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x.to(dtype).to(device)


def f64(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


# ------------------------------------------------------------------ float64 numpy oracles
def np_cos(a: np.ndarray, b: np.ndarray) -> float:
    den = np.linalg.norm(a) * np.linalg.norm(b)
    if np.isnan(den) or np.isnan(a @ b):
        return float("nan")
    return float(np.clip(a @ b / den, -1, 1)) if den > 0 else 0.0


def np_unit(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, X / np.where(n > 0, n, 1), np.where(np.isnan(n), np.nan, 0.0))


def np_pairwise_cos(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """[B, P, Q] float64 cosines."""
    return np.clip(np.einsum("bpd,bqd->bpq", np_unit(R), np_unit(T)), -1, 1)


def np_pool(h: np.ndarray, m: np.ndarray, mode: str) -> np.ndarray:
    N, S, D = h.shape
    out = np.zeros((N, D))
    for n in range(N):
        idx = np.nonzero(m[n])[0]
        if len(idx) == 0:
            continue
        out[n] = h[n, idx[-1]] if mode == "last" else h[n, idx].mean(axis=0)
    return out
