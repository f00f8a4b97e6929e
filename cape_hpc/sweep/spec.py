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

This module reads only the file's shape (which keys exist where, mappings and lists); every value
goes to the options class that declares it, which converts, checks and holds its default (the
command line's): ``JobOptions`` (name, description, output_dir, work, the sections' ``enabled``),
``PromptFiles``, ``ModelFacts`` (name, family, params, d_model, n_layers, vocab), ``ModelOptions``
(id, revision, dtype, trust_remote_code, allow_pickle), ``ExtractOptions`` (``internals:``, a
model's ``batch_size``, ``prompts.max_prompts``) and ``SteerOptions`` (``steering:``; its backend is
``internals.backend``).  The tables ``MODEL_KEYS`` and ``SECTIONS`` say where each key goes: a new
key is a row there and a field of its options class.  ``defaults:`` sets any model key but ``id``,
``name`` and the sizes for every model; a key left out or null takes the option's default.

``work`` picks the per-model work function (``internals``, the default: load, extract, steer;
``synthetic``: a deterministic stand-in for tests; or ``module:function``); ``work_options`` go to
it (``device: auto|cpu|cuda|cuda:N``; auto = one GPU per rank when there are GPUs), and a model's
``options:`` mapping goes to it for that model (free-form: the work function reads it).
``module:function`` imports that module when the sweep runs, as Python code: a job file is a
program, run only job files you trust (like a Makefile).  The module is looked up on the Python
path first, then in the job file's folder (a ``mywork.py`` or package beside the job file), which
is on ``sys.path`` only while the module is imported (``runner.resolve_work``); ``--dry-run`` imports
it too.  The name must be dotted identifiers (no paths), and the function must be callable.

Every error names the file and the key path (``jobs/x.yaml: models[3].dtype: ...``): a wrong
shape is a ``DataError``, a refused value a ``JobValueError`` (a DataError and an OptionError).
``params`` (and optionally ``d_model``, ``n_layers``, ``vocab``) describe the model without
downloading it: they order the models (largest first) and estimate memory for ``--dry-run``;
``gpus`` (optional) the GPUs its rank uses, else the memory plan's count (``cape_hpc.sweep.gpus``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

from cape_hpc.errors import DataError, OptionError
from cape_hpc.internals.options import ExtractOptions
from cape_hpc.models.options import ModelOptions
from cape_hpc.options import Options
from cape_hpc.steering.options import SteerOptions
from cape_hpc.sweep.options import WORK_FUNCTIONS, JobOptions, ModelFacts, PromptFiles
from cape_hpc.sweep.scores import SCORES_KEYS, ScoresOptions

__all__ = ["JobSpec", "ModelEntry", "JobValueError", "parse_job", "load_job", "MODEL_KEYS", "SECTIONS",
           "WORK_FUNCTIONS", "DTYPE_BYTES", "estimate_memory_bytes", "order_models", "check_prompt_files"]

#: bytes per weight of each dtype (the memory estimate)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}

OptionField = tuple[type[Options], str]
#: where each key of a model entry goes (options class, field); ``options:`` is the work function's
MODEL_KEYS: dict[str, OptionField] = {
    "id": (ModelOptions, "model"),
    **{k: (ModelOptions, k) for k in ("revision", "dtype", "trust_remote_code", "allow_pickle")},
    "batch_size": (ExtractOptions, "batch_size"),
    **{k: (ModelFacts, k) for k in ("name", "family", "params", "d_model", "n_layers", "vocab", "gpus")},
}
#: the model keys ``defaults:`` may set for every model
DEFAULT_KEYS = ("revision", "dtype", "trust_remote_code", "allow_pickle", "batch_size")
#: extraction options a job may set under ``internals:`` (batch_size is per model, max_prompts under
#: ``prompts:``, keep_pooled would make every rank write one file)
EXTRACT_KEYS = ("pooling", "taps", "backend", "sets", "token_budget", "max_prompt_tokens", "n_blocks", "block_seed",
                "block_resamples", "ci_level", "pair_budget_mb", "d_rep_mode", "d_rep_sketch")
STEER_KEYS = ("alpha", "scale", "positions", "tau", "probe_layer", "method", "max_new_tokens", "batch_size",
              "max_prompts")
#: where each key of each section goes ("" is the file's top level)
SECTIONS: dict[str, dict[str, OptionField]] = {
    "": {k: (JobOptions, k) for k in ("name", "description", "output_dir", "work")},
    "prompts": {"contrastive": (PromptFiles, "contrastive"), "calibration": (PromptFiles, "calibration"),
                "max_prompts": (ExtractOptions, "max_prompts")},
    "internals": {"enabled": (JobOptions, "extract"), **{k: (ExtractOptions, k) for k in EXTRACT_KEYS}},
    "steering": {"enabled": (JobOptions, "steer"), **{k: (SteerOptions, k) for k in STEER_KEYS}},
    "scores": {k: (ScoresOptions, k) for k in SCORES_KEYS},    # lm-eval on each loaded model (sweep/scores.py)
}
#: top-level keys that are neither options nor sections above (each has its own reader)
OTHER_TOP_KEYS = ("defaults", "models", "work_options")


class JobValueError(DataError, OptionError):
    """A value of a job file that its options class refuses: bad input (a DataError) and a bad option (an
    OptionError), named by the file, the entry and the key."""


@dataclass
class ModelEntry:
    """One model of a sweep: what the job says about it, how to load it, how to extract its internals."""

    facts: ModelFacts              # shard name, family, params, d_model, n_layers, vocab
    load: ModelOptions             # id (``load.model``), revision, dtype, trust_remote_code, allow_pickle
    extract: ExtractOptions        # the job's extraction options with this model's batch size
    work_options: dict[str, Any] = field(default_factory=dict)   # the entry's ``options:`` (work function's)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def id(self) -> str:
        return self.load.model

    @property
    def params(self) -> float | None:
        return self.facts.params

    @property
    def family(self) -> str | None:
        return self.facts.family

    def options(self) -> dict[str, Any]:
        """The entry's options that change its results (for provenance)."""
        return {**self.load.to_dict(), "batch_size": self.extract.batch_size, "work_options": self.work_options}


@dataclass
class JobSpec:
    """A validated job file."""

    path: str
    options: JobOptions                 # name, description, output_dir, work, which sections run
    prompts: PromptFiles                # paths resolved against the job file's folder when found there
    extract: ExtractOptions             # the job's extraction options (each model's batch size: its entry)
    steer: SteerOptions | None          # None: no steering
    models: list[ModelEntry]
    work_options: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    scores: ScoresOptions | None = None  # None: no scores: section (no benchmark scores computed)

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def output_dir(self) -> str:
        return self.options.output_dir

    @property
    def work_target(self) -> str:
        return self.options.work_target

    def job_options(self) -> dict[str, Any]:
        """Options shared by every model that change results (taps, steering, work); the prompt files
        count by their content's SHA-256 (``shards.prompt_hashes``), never by how their path is spelled."""
        internals = {k: v for k, v in self.extract.to_dict().items() if k != "batch_size"}
        return {"internals": {"enabled": self.options.extract, **internals},
                "steering": {"enabled": self.steer is not None, **(self.steer.to_dict() if self.steer else {})},
                "work": self.work_target, "work_options": self.work_options,
                **({"scores": self.scores.to_dict()} if self.scores is not None else {})}

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name or m.id == name:
                return m
        raise DataError(f"{self.path}: no model named {name!r} (models: {', '.join(m.name for m in self.models)})")


def options_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# reading a job file: its shape here, its values by the options classes


class JobFileReader:
    """Reads one job file's shape (mappings, their keys, lists) and hands each value to the options class
    that declares it; every error names the file and the key path."""

    def __init__(self, path: str):
        self.path = path

    def error(self, where: str, message: str) -> DataError:
        return DataError(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")

    def mapping(self, data: Any, where: str, allowed: Collection[str] | None = None,
                required: Collection[str] = ()) -> dict:
        """``data`` as a mapping (None: empty) whose keys are ``allowed`` (None: any) and ``required``."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise self.error(where, f"must be a mapping, got {type(data).__name__}")
        for k in data:
            if allowed is not None and k not in allowed:
                raise self.error(key_path(where, k), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if data.get(k) is None:
                raise self.error(key_path(where, k), "is required")
        return data

    def values(self, data: dict, where: str, keys: dict[str, OptionField]) -> dict[type, dict[str, Any]]:
        """{options class: {field: value}} of the non-null keys of ``data``, each value converted and checked
        by its field (``Options.field_value``)."""
        out: dict[type, dict[str, Any]] = {}
        for k, value in data.items():
            if value is None or k not in keys:
                continue
            cls, name = keys[k]
            try:
                out.setdefault(cls, {})[name] = cls.field_value(name, value, label=f"{self.path}: {key_path(where, k)}")
            except OptionError as exc:
                raise JobValueError(str(exc)) from None
        return out

    def build(self, make: Callable[..., Options], kwargs: dict[str, Any], where: str) -> Any:
        """``make(**kwargs)`` (an options class, or an options object's ``replace``); the rules that
        involve several fields name ``where``."""
        try:
            return make(**kwargs)
        except OptionError as exc:
            raise JobValueError(f"{self.path}: {where}: {exc}" if where else f"{self.path}: {exc}") from None


def key_path(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def default_name(model_id: str) -> str:
    return model_id.rstrip("/").replace("/", "__")


def parse_job(data: Any, path: str = "<job>") -> JobSpec:
    """Validate a parsed YAML document; raise DataError naming ``path`` and the key."""
    reader = JobFileReader(path)
    top = reader.mapping(data, "", [*SECTIONS[""], *(s for s in SECTIONS if s), *OTHER_TOP_KEYS], ["models"])
    values = read_sections(reader, top)
    job = reader.build(JobOptions, {"name": Path(path).stem, "steer": bool(top.get("steering")),
                                    **values.get(JobOptions, {})}, "")
    if not job.output_dir:
        job = job.replace(output_dir=os.path.join("results", job.name))
    extract = reader.build(ExtractOptions, values.get(ExtractOptions, {}), "internals")
    steer = reader.build(SteerOptions, {**values.get(SteerOptions, {}), "backend": extract.backend}, "steering")
    prompts = reader.build(PromptFiles, values.get(PromptFiles, {}), "prompts")
    defaults = reader.values(reader.mapping(top.get("defaults"), "defaults", DEFAULT_KEYS), "defaults", MODEL_KEYS)
    scores = reader.build(ScoresOptions, values.get(ScoresOptions, {}), "scores")
    return JobSpec(path=path, options=job, prompts=resolve_prompt_files(prompts, Path(path).parent), extract=extract,
                   steer=steer if job.steer else None, models=read_models(reader, top["models"], defaults, extract),
                   work_options=dict(reader.mapping(top.get("work_options"), "work_options")),
                   scores=scores.resolved(Path(path).parent) if scores.tasks else None)


def read_sections(reader: JobFileReader, top: dict) -> dict[type, dict[str, Any]]:
    """The values of the top-level keys and of each section of ``SECTIONS``, by options class."""
    out: dict[type, dict[str, Any]] = {}
    for section, keys in SECTIONS.items():
        data = top if section == "" else reader.mapping(top.get(section), section, keys)
        for cls, kw in reader.values(data, section, keys).items():
            out.setdefault(cls, {}).update(kw)
    return out


def read_models(reader: JobFileReader, raw: Any, defaults: dict[type, dict[str, Any]],
                extract: ExtractOptions) -> list[ModelEntry]:
    """The ``models:`` list: each entry (a mapping, or an id alone) over ``defaults``; names unique up to
    case (shard files of names differing in case collide on case-insensitive file systems)."""
    if not isinstance(raw, list) or not raw:
        raise reader.error("models", "must be a non-empty list")
    models: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"models[{i}]"
        entry = read_model(reader, {"id": item} if isinstance(item, str) else item, where, defaults, extract)
        j = seen.setdefault(entry.name.lower(), i)
        if j != i:
            case = ", up to case" if models[j].name != entry.name else ""
            raise reader.error(f"{where}.name", f"duplicate model name {entry.name!r} (also models[{j}]{case})")
        models.append(entry)
    return models


def read_model(reader: JobFileReader, item: Any, where: str, defaults: dict[type, dict[str, Any]],
               extract: ExtractOptions) -> ModelEntry:
    """One model entry: its keys over ``defaults``, each part built by its options class."""
    m = reader.mapping(item, where, [*MODEL_KEYS, "options"], ["id"])
    own = reader.values(m, where, MODEL_KEYS)
    kw = {cls: {**defaults.get(cls, {}), **own.get(cls, {})} for cls in (ModelFacts, ModelOptions, ExtractOptions)}
    kw[ModelFacts].setdefault("name", default_name(kw[ModelOptions]["model"]))
    return ModelEntry(facts=reader.build(ModelFacts, kw[ModelFacts], where),
                      load=reader.build(ModelOptions, kw[ModelOptions], where),
                      extract=reader.build(extract.replace, kw[ExtractOptions], where),
                      work_options=dict(reader.mapping(m.get("options"), f"{where}.options")))


def resolve_prompt_files(prompts: PromptFiles, base: Path) -> PromptFiles:
    """A relative prompt path that does not exist from the current directory but does from the job
    file's folder is read from there."""
    moved = {k: str(base / p) for k, p in prompts.to_dict().items()
             if p is not None and not os.path.isabs(p) and not os.path.exists(p) and (base / p).exists()}
    return prompts.replace(**moved) if moved else prompts


def check_prompt_files(job: JobSpec) -> None:
    """The prompt files a job names exist and are files (DataError naming the job file and key)."""
    for k, p in job.prompts.to_dict().items():
        if p is None:
            continue
        if not os.path.exists(p):
            raise DataError(f"{job.path}: prompts.{k}: prompt file {p} not found")
        if not os.path.isfile(p):
            raise DataError(f"{job.path}: prompts.{k}: {p} is not a file")


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
    facts = m.facts
    if facts.params is None:
        return None
    b = DTYPE_BYTES[m.load.dtype]
    weights = facts.params * b
    d = facts.d_model or max(64, int((facts.params / 12 / max(facts.n_layers or 24, 1)) ** 0.5))
    batch = m.extract.batch_size
    act = batch * seq_len * d * 16 * b
    if job.steer is not None:
        act += batch * (facts.vocab or 50_000) * 4 * 2
    return int(weights + act + 0.4e9)


def order_models(models: list[ModelEntry]) -> list[ModelEntry]:
    """Largest first (unknown sizes last), ties by name: the master hands them out in this order."""
    return sorted(models, key=lambda m: (-(m.params if m.params is not None else -1.0), m.name))
