"""The ``cupy`` backend of the streaming ops: CUDA C in ``cuda/streaming.cu`` (after the
``cuda/common.cu`` prelude), compiled with NVRTC on first use and launched on torch's current
stream, tensors passed by pointer (no copies).  Definitions in ``cape_kernels.streaming``; the
kernels are described at the top of ``streaming.cu``.  ``source()`` gives the text that is
compiled (``cupy_backend.compile_ptx`` compiles it without a GPU, as CI does).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from cape_kernels.cupy_backend import CUDA_DIR, _cp
from cape_kernels.reference import acc_dtype

_IN = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64"}
_SUMS = {torch.float32: "s32", torch.float64: "s64"}
_PAIR_IN = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
KERNELS = ([f"pool_acc_{i}_{s}" for i in _IN.values() for s in _SUMS.values()]
           + [f"count_pairs_{i}" for i in _PAIR_IN.values()])


def source() -> str:
    return (CUDA_DIR / "common.cu").read_text() + "\n" + (CUDA_DIR / "streaming.cu").read_text()


@lru_cache(maxsize=None)
def _module(device_index: int):
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=source(), options=("--std=c++17",))


def _launch(name, device, grid, block, args):
    import cupy
    import numpy as np

    idx = device.index if device.index is not None else torch.cuda.current_device()
    conv = []
    for a in args:
        if isinstance(a, torch.Tensor):
            # int64 (slots, groups, counts) crosses as float64 storage, viewed back as int64
            conv.append(_cp(a.view(torch.float64)).view(np.int64) if a.dtype == torch.int64 else _cp(a))
        else:
            conv.append(a)
    fn = _module(idx).get_function(name)
    with cupy.cuda.Device(idx), cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
        fn(grid, block, tuple(conv))


def pool_accumulate_(hidden, mask, mode, slot, sums, unit_sums):
    import numpy as np

    B, S, D = hidden.shape
    out = torch.empty(B, D, dtype=acc_dtype(hidden.dtype), device=hidden.device)
    if B == 0 or D == 0:
        return out
    if S == 0:
        return out.zero_()
    m = None
    if mask is not None:
        m = (mask if mask.dtype == torch.bool else (mask != 0)).view(torch.uint8)
    units = unit_sums if unit_sums is not None else sums
    block = 256 if D >= 256 else (128 if D >= 128 else 32)
    _launch(f"pool_acc_{_IN[hidden.dtype]}_{_SUMS[sums.dtype]}", hidden.device, (B,), (block,),
            (hidden, m if m is not None else slot.view(torch.uint8), np.int32(m is not None), slot, sums,
             units, np.int32(unit_sums is not None), out, np.int32(S), np.int32(D),
             np.int64(sums.shape[0]), np.int32(mode == "mean")))
    return out


def count_pairs_below(A, B, threshold, a_groups, b_groups, n_groups):
    import numpy as np

    G = n_groups
    dev = A.device
    counts = torch.zeros(G, G, dtype=torch.int64, device=dev)
    n, m = A.shape[0], B.shape[0]
    if n == 0 or m == 0:
        return counts
    if A.dtype != B.dtype or A.dtype not in _PAIR_IN:
        A, B = A.to(torch.float32), B.to(torch.float32)
    grouped = a_groups is not None or b_groups is not None
    ga = a_groups if a_groups is not None else torch.zeros(max(n, 1), dtype=torch.int64, device=dev)
    gb = b_groups if b_groups is not None else torch.zeros(max(m, 1), dtype=torch.int64, device=dev)
    grid = ((m + 63) // 64, (n + 63) // 64)
    _launch(f"count_pairs_{_PAIR_IN[A.dtype]}", dev, grid, (256,),
            (A, B, ga, gb, np.int32(grouped), counts, np.int32(n), np.int32(m), np.int32(A.shape[1]),
             np.int64(G), np.float32(threshold)))
    return counts
