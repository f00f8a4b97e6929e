"""Which model to load (docs/METHODS.md §3): the options shared by ``cape internals`` and ``cape steer``.

Torch-free (declares the options only; ``ModelOptions.load()`` imports the loader).
"""
from __future__ import annotations

from dataclasses import dataclass

import re

from cape_hpc.errors import OptionError
from cape_hpc.options import Options, option

__all__ = ["ModelOptions", "PlacementOptions", "DTYPES", "parse_max_memory", "parse_size"]

DTYPES = ("float32", "bfloat16", "float16", "float64")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.I)
_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_size(text: str | int | float, what: str) -> int:
    """``"80GiB"``, ``"40GB"``, ``"81920MiB"`` or a byte count -> bytes (> 0); ``what`` names the option."""
    m = _SIZE.fullmatch(str(text))
    if not m or float(m.group(1)) <= 0:
        raise OptionError(f"option '{what}': {str(text).strip()!r} is not a memory size (e.g. 80GiB, 40GB)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_max_memory(text: str | None) -> dict[int | str, int] | None:
    """``"0=70GiB,1=70GiB,cpu=200GiB"`` -> {0: bytes, 1: bytes, "cpu": bytes} (accelerate's ``max_memory``:
    a GPU index or ``cpu``, then a size); None when empty."""
    if not text:
        return None
    out: dict[int | str, int] = {}
    for part in str(text).split(","):
        dev, eq, size = part.partition("=")
        dev = dev.strip().lower()
        if not eq or not (dev == "cpu" or dev.isdigit()):
            raise OptionError(f"option '--max-memory': {part.strip()!r} is not DEVICE=SIZE (e.g. 0=70GiB, cpu=200GiB)")
        out["cpu" if dev == "cpu" else int(dev)] = parse_size(size, "--max-memory")
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
    def load(self, placement: "PlacementOptions | dict | None" = None):
        """``cape_hpc.models.load_model`` with these options and where to put the model (a
        :class:`PlacementOptions`, or load_model's placement keywords) -> LoadedModel."""
        from cape_hpc.models.loading import load_model

        place = placement if isinstance(placement, dict) else (placement or PlacementOptions()).load_kwargs()
        return load_model(self.model, revision=self.revision, dtype=self.dtype,
                          trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle or None, **place)


@dataclass(frozen=True)
class PlacementOptions(Options):
    """Where a model's blocks go (accelerate's ``device_map``).  Not part of any result's provenance:
    the numbers do not depend on it (tests/test_models_offload.py)."""

    device_map: str | None = option(None, help="spread the model's blocks over devices (accelerate): auto/balanced, "
                                               "balanced_low_0, sequential, or one device (cuda:1); none: the CPU",
                                    metavar="MAP")
    max_memory: str | None = option(None, help="memory per device for --device-map, e.g. 0=70GiB,1=70GiB,cpu=200GiB",
                                    metavar="DEV=SIZE,...")
    offload_folder: str | None = option(None, help="folder for the blocks --device-map puts on disk", metavar="DIR")

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_max_memory(self.max_memory)           # refused here, with the flag's name

    def load_kwargs(self) -> dict:
        """The keyword arguments of ``load_model``."""
        return {"device_map": self.device_map, "max_memory": parse_max_memory(self.max_memory),
                "offload_folder": self.offload_folder}
