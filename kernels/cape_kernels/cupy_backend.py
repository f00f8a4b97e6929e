"""The ``cupy`` backend: CUDA tensors, kernels written in CUDA C (``cuda/*.cu``), compiled with
NVRTC through ``cupy.RawModule`` on first use and launched on torch's current stream.

Each source is compiled as ``cuda/common.cu`` (conversions, reductions; no headers, so NVRTC
needs no include path) followed by the op's file.  :func:`sources` gives those texts and
:func:`compile_ptx` compiles them to PTX without a GPU (NVRTC through cupy's low-level bindings, or
``nvcc -ptx``), which is how CI checks them.  Tensors cross to CuPy without copies: a raw
pointer wrapped as an unowned ``cupy.ndarray``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from cape_kernels.reference import acc_dtype

CUDA_DIR = Path(__file__).with_name("cuda")
OPS = ("pooled_tap", "set_mean_cosine", "pairwise", "steer")
_SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def sources() -> dict[str, str]:
    """op name -> the full CUDA C text compiled for it (prelude + op file)."""
    common = (CUDA_DIR / "common.cu").read_text()
    return {op: common + "\n" + (CUDA_DIR / f"{op}.cu").read_text() for op in OPS}


def compile_ptx(source: str, name: str = "kernel.cu", arch: str = "compute_80",
                method: str = "auto") -> str:
    """Compile CUDA C to PTX without a GPU; raises RuntimeError with the compiler log on error.

    ``method``: "nvrtc" (cupy.cuda.nvrtc), "nvcc" (``nvcc -ptx``) or "auto" (nvrtc, else nvcc).
    """
    errors = []
    if method in ("auto", "nvrtc"):
        try:
            from cupy.cuda import nvrtc

            nvrtc.getVersion()
        except Exception as exc:
            errors.append(f"nvrtc unavailable: {exc}".splitlines()[0])
            if method == "nvrtc":
                raise RuntimeError(errors[-1]) from exc
        else:
            prog = nvrtc.createProgram(source, name, [], [])
            try:
                nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", "--std=c++17"])
            except nvrtc.NVRTCError as exc:
                raise RuntimeError(f"NVRTC failed on {name}:\n{nvrtc.getProgramLog(prog)}") from exc
            ptx = nvrtc.getPTX(prog)
            return ptx.decode() if isinstance(ptx, bytes) else ptx
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("no CUDA compiler: " + "; ".join(errors + ["nvcc not on PATH"]))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, name)
        Path(src).write_text(source)
        out = os.path.join(tmp, "out.ptx")
        res = subprocess.run([nvcc, "-ptx", f"-arch={arch}", "-std=c++17", src, "-o", out],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"nvcc failed on {name}:\n{res.stderr}")
        return Path(out).read_text()


# ------------------------------------------------------------------ launching
@lru_cache(maxsize=None)
def _module(op: str, device_index: int):
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=sources()[op], options=("--std=c++17",))


def _fn(op: str, name: str, device: torch.device):
    return _module(op, device.index if device.index is not None else torch.cuda.current_device()).get_function(name)


_CP_DTYPE = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "uint16",
             torch.uint8: "uint8", torch.int32: "int32", torch.bool: "uint8", torch.float64: "float64"}


def _cp(t: torch.Tensor):
    """A cupy.ndarray over the tensor's memory (no copy); bf16 appears as uint16."""
    import cupy

    mem = cupy.cuda.UnownedMemory(t.data_ptr(), t.numel() * t.element_size(), t,
                                  t.device.index if t.device.index is not None else 0)
    return cupy.ndarray((t.numel(),), dtype=_CP_DTYPE[t.dtype], memptr=cupy.cuda.MemoryPointer(mem, 0))


def _launch(op, name, device, grid, block, args):
    import cupy
    import numpy as np

    conv = []
    for a in args:
        if isinstance(a, torch.Tensor):
            conv.append(_cp(a))
        elif isinstance(a, bool):
            conv.append(np.int32(a))
        else:
            conv.append(a)
    fn = _fn(op, name, device)
    with cupy.cuda.Device(device.index or 0), \
            cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
        fn(grid, block, tuple(conv))


def _work(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in _SUFFIX else x.to(torch.float32)


def pooled_tap(hidden, mask, mode):
    import numpy as np

    N, S, D = hidden.shape
    adt = acc_dtype(hidden.dtype)
    out = torch.empty(N, D, dtype=torch.float32, device=hidden.device)
    if N == 0 or D == 0:
        return out.to(adt)
    if S == 0:
        return out.zero_().to(adt)
    h = _work(hidden)
    m = (torch.ones(N, S, dtype=torch.uint8, device=hidden.device) if mask is None
         else (mask != 0).to(torch.uint8))
    block = 128 if D >= 128 else 32
    _launch("pooled_tap", f"pooled_tap_{_SUFFIX[h.dtype]}", hidden.device,
            ((D + block - 1) // block, N), (block,),
            (h, m, out, np.int32(S), np.int32(D), np.int32(mode == "mean")))
    return out.to(adt)


def set_mean_cosine(R, T):
    import numpy as np

    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, D = R.shape
    Q = T.shape[1]
    dev = R.device
    if P == 0 or Q == 0:
        return torch.full((B,), float("nan"), dtype=adt, device=dev)
    if B == 0 or D == 0:
        return torch.zeros(B, dtype=adt, device=dev)
    if R.dtype != T.dtype or R.dtype not in _SUFFIX:
        R, T = R.to(torch.float32), T.to(torch.float32)
    block = 256 if D >= 256 else (128 if D >= 128 else 32)
    nd = (D + block - 1) // block
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    # about four blocks per SM in stage 1
    nsplit = max(1, min((max(P, Q) + 15) // 16, (4 * sms + B * nd - 1) // (B * nd)))
    rows_r = (P + nsplit - 1) // nsplit
    rows_t = (Q + nsplit - 1) // nsplit
    part = torch.empty(B, nsplit, 2, D, dtype=torch.float32, device=dev)
    _launch("set_mean_cosine", f"set_partial_{_SUFFIX[R.dtype]}", dev, (nd, nsplit, B), (block,),
            (R, T, part, np.int32(P), np.int32(Q), np.int32(D), np.int32(rows_r), np.int32(rows_t),
             np.int32(nsplit)))
    out = torch.empty(B, dtype=torch.float32, device=dev)
    if nsplit <= 4:
        nt = min(1024, max(32, (D + 31) // 32 * 32))
        _launch("set_mean_cosine", "set_finish", dev, (B,), (nt,), (part, out, np.int32(D), np.int32(nsplit)))
    else:  # many splits (small B): spread the finishing over blocks of 32 features
        nf = (D + 31) // 32
        fin = torch.empty(B, nf, 3, dtype=torch.float32, device=dev)
        _launch("set_mean_cosine", "set_reduce", dev, (nf, B), (32, 8), (part, fin, np.int32(D), np.int32(nsplit)))
        _launch("set_mean_cosine", "set_final", dev, (B,), (32,), (fin, out, np.int32(nf)))
    return out.to(adt)


def _unit(X):
    import numpy as np

    rows = X.shape[0] * X.shape[1]
    D = X.shape[2]
    X = _work(X)
    out = torch.empty(X.shape, dtype=torch.float32, device=X.device)
    if rows and D:
        block = 256 if D >= 256 else 32
        _launch("pairwise", f"unit_rows_{_SUFFIX[X.dtype]}", X.device, (rows,), (block,), (X, out, np.int32(D)))
    return out


def pairwise(R, T, threshold, return_full):
    import numpy as np

    adt = acc_dtype(torch.promote_types(R.dtype, T.dtype))
    B, P, D = R.shape
    Q = T.shape[1]
    dev = R.device
    if P == 0 or Q == 0:
        nan = torch.full((B,), float("nan"), dtype=adt, device=dev)
        return nan, nan.clone(), (torch.empty(B, P, Q, dtype=adt, device=dev) if return_full else None)
    Rn, Tn = _unit(R), _unit(T)
    full = torch.empty(B, P, Q, dtype=torch.float32, device=dev) if return_full else None
    gq, gp = (Q + 63) // 64, (P + 63) // 64
    sums = torch.empty(gp * gq * B, dtype=torch.float32, device=dev)
    cnts = torch.empty(gp * gq * B, dtype=torch.int32, device=dev)
    _launch("pairwise", "pair_tile", dev, (gq, gp, B), (256,),
            (Rn, Tn, full if full is not None else Rn, sums, cnts, np.int32(B), np.int32(P),
             np.int32(Q), np.int32(D), np.float32(threshold), np.int32(return_full)))
    mean = sums.view(-1, B).to(torch.float64).sum(dim=0) / (P * Q)
    frac = cnts.view(-1, B).to(torch.float64).sum(dim=0) / (P * Q)
    frac = torch.where(torch.isnan(mean), mean, frac)
    return mean.to(adt), frac.to(adt), (full.to(adt) if full is not None else None)


def steer_(h, v, alpha, relative, tau):
    import numpy as np

    Tn, D = h.shape
    adt = acc_dtype(h.dtype)
    proj = torch.empty(Tn, dtype=torch.float32, device=h.device)
    if Tn == 0:
        return proj.to(adt)
    if D == 0:
        return proj.zero_().to(adt)
    work = _work(h)
    suf = _SUFFIX[work.dtype]
    if v.dtype == work.dtype:
        vw = v
    else:
        vw = v.to(torch.float32)
        if work.dtype != torch.float32:
            suf += "_vf32"
    a = alpha.to(torch.float32).contiguous()
    flags = (np.int32(relative), np.int32(tau is not None), np.float32(0.0 if tau is None else tau))
    vstride = np.int64(D if v.dim() == 2 else 0)
    if D <= 1024:  # a warp per row
        _launch("steer", f"steer_warp_{suf}", h.device, ((Tn + 7) // 8,), (256,),
                (work, vw, a, proj, np.int32(Tn), np.int32(D), vstride) + flags)
    else:  # a block per row
        _launch("steer", f"steer_{suf}", h.device, (Tn,), (256,),
                (work, vw, a, proj, np.int32(D), vstride) + flags)
    if work is not h:
        h.copy_(work)
    return proj.to(adt)
