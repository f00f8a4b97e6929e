"""Which model to load (docs/METHODS.md §3): the options shared by ``cape internals`` and ``cape steer``.

Torch-free (declares the options only; ``ModelOptions.load()`` imports the loader).
"""
from __future__ import annotations

from dataclasses import dataclass

import re

from cape_hpc.errors import OptionError
from cape_hpc.options import Options, option

__all__ = ["ModelOptions", "DTYPES", "parse_max_memory"]

DTYPES = ("float32", "bfloat16", "float16", "float64")
_MEMORY = re.compile(r"^\s*(\d+|cpu)\s*=\s*(\d+(?:\.\d+)?\s*(?:[KMGT]i?B)?)\s*$", re.I)


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """``"0=70GiB,1=70GiB,cpu=200GiB"`` -> {0: "70GiB", 1: "70GiB", "cpu": "200GiB"} (accelerate's
    ``max_memory``: a GPU index or ``cpu``, then bytes or a size with its unit); None when empty."""
    if not text:
        return None
    out: dict[int | str, str] = {}
    for part in str(text).split(","):
        m = _MEMORY.match(part)
        if not m:
            raise OptionError(f"option '--max-memory': {part.strip()!r} is not DEVICE=SIZE (e.g. 0=70GiB, cpu=200GiB)")
        dev = m.group(1).lower()
        size = m.group(2).replace(" ", "")
        out["cpu" if dev == "cpu" else int(dev)] = int(size) if size.isdigit() else size
    return out


@dataclass(frozen=True)
class ModelOptions(Options):
    """A causal LM: embedded alias, tiny random model, GGUF file, local folder or HuggingFace id."""

    model: str = option("smollm2-135m", help="embedded alias (smollm2-135m, gemma3-270m), tiny-<arch>, a GGUF "
                                             "file, a local folder or a HuggingFace id", metavar="MODEL")
    revision: str | None = option(None, help="HuggingFace revision (commit, tag or branch)")
    dtype: str = option("float32", help="weights and activations dtype", choices=DTYPES)
    trust_remote_code: bool = option(False, help="allow a HuggingFace model's own Python code to run")
    allow_pickle: bool = option(False, help="load pickled weights (pytorch_model.bin, *.pt): unpickling runs "
                                            "code, so only for files you trust (default: safetensors only)")
    device_map: str | None = option(None, help="spread the model's blocks over devices (accelerate): auto/balanced, "
                                               "balanced_low_0, sequential, or one device (cuda:1); none: the CPU",
                                    metavar="MAP")
    max_memory: str | None = option(None, help="memory per device for --device-map, e.g. 0=70GiB,1=70GiB,cpu=200GiB",
                                    metavar="DEV=SIZE,...")
    offload_folder: str | None = option(None, help="folder for the blocks --device-map puts on disk", metavar="DIR")

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_max_memory(self.max_memory)           # refused here, with the flag's name

    def load(self):
        """``cape_hpc.models.load_model`` with these options -> LoadedModel."""
        from cape_hpc.models.loading import load_model

        return load_model(self.model, revision=self.revision, dtype=self.dtype,
                          trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle or None,
                          device_map=self.device_map, max_memory=parse_max_memory(self.max_memory),
                          offload_folder=self.offload_folder)
