"""Which model to load (docs/METHODS.md §3): the options shared by ``cape internals`` and ``cape steer``.

Torch-free (declares the options only; ``ModelOptions.load()`` imports the loader).
"""
from __future__ import annotations

from dataclasses import dataclass

from cape_hpc.options import Options, option

__all__ = ["ModelOptions", "DTYPES"]

DTYPES = ("float32", "bfloat16", "float16", "float64")


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

    def load(self):
        """``cape_hpc.models.load_model`` with these options -> LoadedModel."""
        from cape_hpc.models.loading import load_model

        return load_model(self.model, revision=self.revision, dtype=self.dtype,
                          trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle or None)
