"""``keep_pooled``: the pooled vectors of an extraction, written to an HDF5 file batch by batch and
never held whole in memory (docs/METHODS.md §3.7).

Layout of the file (one extraction per file):

- ``residual`` [L, N, D] float32 (chunked (1, <=256, D), resizable along N), when the residual tap ran;
- ``final`` [N, D] float32, when the final (or logits) tap ran;
- ``order`` [N] int64: row n holds the prompt with this index in the prompt set (R first, then T);
- ``ids``, ``sets`` [N] text; ``block`` [N] int64 (the prompt's block, §3.8);
- attributes ``model``, ``pooling``, ``set_r``, ``set_t``, ``n_r``, ``n_t``.

Each batch's rows are written with one call per dataset (rows sorted, as HDF5 selections must be).
Writing them costs one device-to-host copy per batch: ``keep_pooled`` is opt-in.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cape_hpc.errors import DataError

__all__ = ["PooledWriter", "read_pooled"]

_CHUNK_ROWS = 256


class PooledWriter:
    """Open ``path`` for writing (refuses an existing file unless ``force``)."""

    def __init__(self, path, *, n_rows: int, n_layers: int, d_model: int, residual: bool, final: bool,
                 order: Sequence[int], ids: Sequence[str], sets: Sequence[str], blocks: np.ndarray,
                 attrs: dict, force: bool = False):
        import h5py

        self.path = Path(path)
        if self.path.exists() and not force:
            raise DataError(f"{self.path}: exists (option '--keep-pooled'; pass --force to overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.f = h5py.File(self._tmp, "w")
        N, L, D = int(n_rows), int(n_layers), int(d_model)
        rows = max(1, min(_CHUNK_ROWS, N))
        self.residual = (self.f.create_dataset("residual", shape=(L, N, D), maxshape=(L, None, D), dtype="f4",
                                               chunks=(1, rows, D)) if residual else None)
        self.final = (self.f.create_dataset("final", shape=(N, D), maxshape=(None, D), dtype="f4",
                                            chunks=(rows, D)) if final else None)
        self.f.create_dataset("order", data=np.asarray(order, dtype=np.int64))
        str_t = h5py.string_dtype()
        self.f.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=str_t)
        self.f.create_dataset("sets", data=np.array(list(sets), dtype=object), dtype=str_t)
        self.f.create_dataset("block", data=np.asarray(blocks, dtype=np.int64))
        for k, v in attrs.items():
            self.f.attrs[k] = v

    def write(self, rows: np.ndarray, residual=None, final=None) -> None:
        """rows [B] (rows of the datasets), residual [L, B, D] / final [B, D] (numpy or CPU tensors)."""
        rows = np.asarray(rows, dtype=np.int64)
        srt = np.argsort(rows, kind="stable")
        sel = rows[srt]
        if self.residual is not None and residual is not None:
            self.residual[:, sel, :] = np.asarray(residual, dtype=np.float32)[:, srt, :]
        if self.final is not None and final is not None:
            self.final[sel, :] = np.asarray(final, dtype=np.float32)[srt, :]

    def close(self, ok: bool = True) -> None:
        if self.f is None:
            return
        self.f.close()
        self.f = None
        if ok:
            os.replace(self._tmp, self.path)
        else:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass


def read_pooled(path) -> dict:
    """Every dataset of a keep_pooled file as numpy arrays (for tests and small files)."""
    import h5py

    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f}
        out["attrs"] = dict(f.attrs)
    for k in ("ids", "sets"):
        if k in out:
            out[k] = [x.decode() if isinstance(x, bytes) else str(x) for x in out[k]]
    return out
