"""Sweep job specs: YAML in, a validated ``JobSpec`` out.

A job file names the models to run, the prompt sets, the extraction options (taps, pooling,
backend), optional steering, and the output directory::

    name: smoke
    output_dir: results/smoke          # relative to the current directory; --out-dir overrides
    defaults: {dtype: float32, batch_size: 8}
    prompts: {contrastive: null, calibration: null, max_prompts: 16}
    internals: {pooling: last, taps: null, backend: null}
    steering: {enabled: true, alpha: 0.5, scale: relative, max_new_tokens: 8}
    models:
      - {id: gemma3-270m, params: 268e6, d_model: 640, n_layers: 18}
      - {id: EleutherAI/pythia-70m, name: Pythia-70M, revision: main, params: 70e6}

``work`` picks the per-model work function (``internals``, the default: load, extract, steer;
``synthetic``: a deterministic stand-in for tests; or ``module:function``); ``work_options`` go to
it (``device: auto|cpu|cuda|cuda:N``; auto = one GPU per rank when there are GPUs).
``module:function`` imports that module when the sweep runs, as Python code: a job file is a
program, run only job files you trust (like a Makefile).  Only modules of cape_hpc or of a
package importable from the job file's folder or the Python path are found; the name must be
dotted identifiers (no paths), and the function must be callable.

Every error names the file and the key path (``jobs/x.yaml: models[3].dtype: ...``).
``params`` (and optionally ``d_model``, ``n_layers``, ``vocab``) describe the model without
downloading it: they order the models (largest first) and estimate memory for ``--dry-run``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cape_hpc.errors import DataError, OptionError
from cape_hpc.internals.results import POOLINGS
from cape_hpc.steering.results import SCALES as STEER_SCALES

DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
WORK_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
#: short names of the work functions (``work:`` key); anything else must be ``module:function``
WORK_FUNCTIONS = {
    "internals": "cape_hpc.sweep.work:process_model",
    "synthetic": "cape_hpc.sweep.work:synthetic_model",
}


@dataclass
class ModelEntry:
    """One model of a sweep."""

    id: str                      # HF id, local dir, or alias (smollm2-135m, gemma3-270m, tiny-llama...)
    name: str                    # shard / HDF5 group name (unique within the job)
    revision: str | None = None
    dtype: str = "float32"
    batch_size: int = 8
    trust_remote_code: bool = False
    params: float | None = None  # parameter count (for ordering and memory estimate)
    d_model: int | None = None
    n_layers: int | None = None
    vocab: int | None = None
    family: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form options passed to the work function

    def options(self) -> dict[str, Any]:
        """The entry's options that change its results (for provenance)."""
        return {"id": self.id, "revision": self.revision, "dtype": self.dtype,
                "batch_size": self.batch_size, "trust_remote_code": self.trust_remote_code,
                "extra": self.extra}


@dataclass
class JobSpec:
    path: str
    name: str
    output_dir: str
    models: list[ModelEntry]
    prompts: dict[str, Any]
    internals: dict[str, Any]
    steering: dict[str, Any]
    work: str = "internals"
    work_options: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def work_target(self) -> str:
        return WORK_FUNCTIONS.get(self.work, self.work)

    def job_options(self) -> dict[str, Any]:
        """Options shared by every model that change results (prompt sets, taps, steering, work)."""
        return {"prompts": self.prompts, "internals": self.internals, "steering": self.steering,
                "work": self.work_target, "work_options": self.work_options}

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name or m.id == name:
                return m
        raise DataError(f"{self.path}: no model named {name!r} (models: {', '.join(m.name for m in self.models)})")


def options_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# validation helpers


class _V:
    def __init__(self, path: str):
        self.path = path

    def err(self, key: str, msg: str) -> DataError:
        return DataError(f"{self.path}: {key}: {msg}" if key else f"{self.path}: {msg}")

    def mapping(self, d: Any, key: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise self.err(key, f"must be a mapping, got {type(d).__name__}")
        for k in d:
            if k not in allowed:
                raise self.err(f"{key}.{k}" if key else str(k),
                               f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if k not in d or d[k] is None:
                raise self.err(f"{key}.{k}" if key else k, "is required")
        return d

    def typed(self, d: dict, key: str, k: str, types: tuple, default: Any = None, *, choices=None,
              minimum=None) -> Any:
        v = d.get(k, default)
        where = f"{key}.{k}" if key else k
        if v is None:
            return default
        if float in types and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if float in types and isinstance(v, str):  # YAML reads 70e6 as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) and bool not in types:
            raise self.err(where, f"must be {'/'.join(t.__name__ for t in types)}, got bool")
        if not isinstance(v, types):
            raise self.err(where, f"must be {'/'.join(t.__name__ for t in types)}, got {type(v).__name__} ({v!r})")
        if choices is not None and v not in choices:
            raise self.err(where, f"must be one of {', '.join(map(str, choices))}, got {v!r}")
        if minimum is not None and v < minimum:
            raise self.err(where, f"must be >= {minimum}, got {v!r}")
        return v


_MODEL_KEYS = {"id", "name", "revision", "dtype", "batch_size", "trust_remote_code", "params", "d_model",
               "n_layers", "vocab", "family", "options"}
_DEFAULT_KEYS = {"revision", "dtype", "batch_size", "trust_remote_code"}
_PROMPT_KEYS = {"contrastive", "calibration", "max_prompts"}
#: extraction options a job may set under ``internals:`` (validated by ExtractOptions; batch_size is per
#: model, max_prompts under ``prompts:``, keep_pooled would make every rank write one file)
_EXTRACT_KEYS = {"pooling", "taps", "backend", "sets", "token_budget", "max_prompt_tokens", "n_blocks", "block_seed",
                 "block_resamples", "ci_level", "pair_budget_mb", "d_rep_mode", "d_rep_sketch"}
_INTERNALS_KEYS = _EXTRACT_KEYS | {"enabled"}
_STEERING_KEYS = {"enabled", "alpha", "scale", "positions", "tau", "probe_layer", "method",
                  "max_new_tokens", "batch_size", "max_prompts"}
_TOP_KEYS = {"name", "description", "output_dir", "defaults", "prompts", "internals", "steering",
             "models", "work", "work_options"}


def _name_of(m: Any) -> str:
    if isinstance(m, str):
        return default_name(m)
    return str(m.get("name") or default_name(str(m.get("id", ""))))


def check_prompt_files(job: "JobSpec") -> None:
    """The prompt files a job names exist and are files (DataError naming the job file and key)."""
    for k in ("contrastive", "calibration"):
        p = job.prompts.get(k)
        if p is None:
            continue
        if not os.path.exists(p):
            raise DataError(f"{job.path}: prompts.{k}: prompt file {p} not found")
        if not os.path.isfile(p):
            raise DataError(f"{job.path}: prompts.{k}: {p} is not a file")


def default_name(model_id: str) -> str:
    return model_id.rstrip("/").replace("/", "__")


def parse_job(data: Any, path: str = "<job>") -> JobSpec:
    """Validate a parsed YAML document; raise DataError naming ``path`` and the key."""
    v = _V(path)
    top = v.mapping(data, "", _TOP_KEYS, {"models"})
    job_name = v.typed(top, "", "name", (str,), Path(path).stem)
    output_dir = v.typed(top, "", "output_dir", (str,), os.path.join("results", job_name))
    work = v.typed(top, "", "work", (str,), "internals")
    if work not in WORK_FUNCTIONS and not WORK_RE.fullmatch(work):
        raise v.err("work", f"must be one of {', '.join(WORK_FUNCTIONS)} or 'module:function' (dotted Python "
                            f"names), got {work!r}")
    work_options = v.mapping(top.get("work_options"), "work_options", set(top.get("work_options") or {}))

    dflt = v.mapping(top.get("defaults"), "defaults", _DEFAULT_KEYS)
    d_dtype = v.typed(dflt, "defaults", "dtype", (str,), "float32", choices=tuple(DTYPES))
    d_bs = v.typed(dflt, "defaults", "batch_size", (int,), 8, minimum=1)
    d_rev = v.typed(dflt, "defaults", "revision", (str,), None)
    d_trust = v.typed(dflt, "defaults", "trust_remote_code", (bool,), False)

    pr = v.mapping(top.get("prompts"), "prompts", _PROMPT_KEYS)
    prompts = {"contrastive": v.typed(pr, "prompts", "contrastive", (str,), None),
               "calibration": v.typed(pr, "prompts", "calibration", (str,), None),
               "max_prompts": v.typed(pr, "prompts", "max_prompts", (int,), None, minimum=2)}
    base = Path(path).parent
    for k in ("contrastive", "calibration"):
        p = prompts[k]
        if p is not None and not os.path.isabs(p) and not os.path.exists(p) and (base / p).exists():
            prompts[k] = str(base / p)

    it = v.mapping(top.get("internals"), "internals", _INTERNALS_KEYS)
    taps = it.get("taps")
    if taps is not None and not (isinstance(taps, list) and all(isinstance(t, str) for t in taps)):
        raise v.err("internals.taps", f"must be a list of strings, got {taps!r}")
    internals = {"enabled": v.typed(it, "internals", "enabled", (bool,), True),
                 "pooling": v.typed(it, "internals", "pooling", (str,), "last", choices=POOLINGS),
                 "taps": taps,
                 "backend": v.typed(it, "internals", "backend", (str,), None)}
    # the other extraction keys pass through unchanged; ExtractOptions validates them below
    internals.update({k: it[k] for k in sorted(_EXTRACT_KEYS - set(internals)) if it.get(k) is not None})

    st = v.mapping(top.get("steering"), "steering", _STEERING_KEYS)
    steering = {"enabled": v.typed(st, "steering", "enabled", (bool,), bool(st))}
    if steering["enabled"]:
        # None = the steering library's default (cape steer's defaults)
        steering.update(
            alpha=v.typed(st, "steering", "alpha", (float,), None),
            scale=v.typed(st, "steering", "scale", (str,), None, choices=STEER_SCALES),
            positions=v.typed(st, "steering", "positions", (str,), None),
            tau=v.typed(st, "steering", "tau", (float,), None),
            probe_layer=v.typed(st, "steering", "probe_layer", (int,), None),
            method=v.typed(st, "steering", "method", (str,), None),
            max_new_tokens=v.typed(st, "steering", "max_new_tokens", (int,), None, minimum=1),
            batch_size=v.typed(st, "steering", "batch_size", (int,), None, minimum=1),
            max_prompts=v.typed(st, "steering", "max_prompts", (int,), None, minimum=1),
        )

    models_raw = top["models"]
    if not isinstance(models_raw, list) or not models_raw:
        raise v.err("models", "must be a non-empty list")
    models: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for i, m in enumerate(models_raw):
        key = f"models[{i}]"
        if isinstance(m, str):
            m = {"id": m}
        m = v.mapping(m, key, _MODEL_KEYS, {"id"})
        mid = v.typed(m, key, "id", (str,))
        name = v.typed(m, key, "name", (str,), default_name(mid))
        if not NAME_RE.match(name):
            raise v.err(f"{key}.name", f"{name!r} is not a valid shard name (letters, digits, . _ + -)")
        if name.lower() in seen:  # shard files of names differing in case collide on case-insensitive file systems
            j = seen[name.lower()]
            raise v.err(f"{key}.name", f"duplicate model name {name!r} (also models[{j}]"
                                       f"{', up to case' if models_raw and name != _name_of(models_raw[j]) else ''})")
        seen[name.lower()] = i
        extra = m.get("options") or {}
        if not isinstance(extra, dict):
            raise v.err(f"{key}.options", "must be a mapping")
        models.append(ModelEntry(
            id=mid, name=name,
            revision=v.typed(m, key, "revision", (str,), d_rev),
            dtype=v.typed(m, key, "dtype", (str,), d_dtype, choices=tuple(DTYPES)),
            batch_size=v.typed(m, key, "batch_size", (int,), d_bs, minimum=1),
            trust_remote_code=v.typed(m, key, "trust_remote_code", (bool,), d_trust),
            params=v.typed(m, key, "params", (float,), None, minimum=0),
            d_model=v.typed(m, key, "d_model", (int,), None, minimum=1),
            n_layers=v.typed(m, key, "n_layers", (int,), None, minimum=1),
            vocab=v.typed(m, key, "vocab", (int,), None, minimum=1),
            family=v.typed(m, key, "family", (str,), None),
            extra=extra,
        ))
    job = JobSpec(path=path, name=job_name,
                  output_dir=output_dir, models=models, prompts=prompts, internals=internals,
                  steering=steering, work=work, work_options=dict(work_options))
    # the options the work functions pass on are validated here, by the classes that declare them
    from cape_hpc.sweep.work import extract_options, steer_options

    for key, build in (("internals", extract_options), ("steering", steer_options)):
        if key == "steering" and not steering["enabled"]:
            continue
        try:
            build(job)
        except OptionError as exc:
            raise v.err(key, str(exc)) from None
    return job


def load_job(path: str | os.PathLike) -> JobSpec:
    """Read and validate a YAML job file."""
    import yaml

    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read job file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DataError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    job = parse_job(data, path)
    job.sha256 = hashlib.sha256(text.encode()).hexdigest()
    return job


# ---------------------------------------------------------------------------------------------
# sizes, order and memory


def estimate_memory_bytes(m: ModelEntry, job: JobSpec, seq_len: int = 128) -> int | None:
    """Peak memory of one model's work: weights + one batch of activations + runtime overhead.

    Weights: params x bytes per dtype.  Activations (no cache: the hooks pool and drop each layer's
    output): about 16 x d_model floats per token for one layer's working set, plus the embedding
    output, for one batch of ``seq_len`` tokens; the LM head is only evaluated for steering's
    generation (last token).  Runtime (torch, tokenizer): 0.4 GB.  None if params are unknown.
    """
    if m.params is None:
        return None
    b = DTYPES[m.dtype]
    weights = m.params * b
    d = m.d_model or max(64, int((m.params / 12 / max(m.n_layers or 24, 1)) ** 0.5))
    act = m.batch_size * seq_len * d * 16 * b
    if job.steering.get("enabled"):
        act += m.batch_size * (m.vocab or 50_000) * 4 * 2
    return int(weights + act + 0.4e9)


def order_models(models: list[ModelEntry]) -> list[ModelEntry]:
    """Largest first (unknown sizes last), ties by name: the master hands them out in this order."""
    return sorted(models, key=lambda m: (-(m.params if m.params is not None else -1.0), m.name))


def as_dict(job: JobSpec) -> dict[str, Any]:
    return dataclasses.asdict(job)
