"""Steering (docs/METHODS.md §4.1, §4.7): calibrate a direction at the probe layer, then the
qualitative view: batched greedy generation with and without the fused injection
``cape_kernels.steer_inject_`` (a ``Trace`` callback, ``steering.generate``).  The outcome is
measured by ``steering.evaluate``.

Nothing is printed and no file is written here; ``cape steer`` does the I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from cape_hpc import progress
from cape_hpc.errors import DataError, OptionError
from cape_hpc.internals.prompts import PromptSet
from cape_hpc.models.batching import plan_batches, tokenize
from cape_hpc.models.tracing import Trace
from cape_hpc.schema import Provenance
from cape_hpc.stats.intervals import wilson_interval
from cape_hpc.steering.directions import unit_direction
from cape_hpc.steering.generate import Steering, greedy_generate
from cape_hpc.steering.hooks import pooled_capture
from cape_hpc.steering.options import SteerOptions
from cape_hpc.steering.results import METHODS, POSITIONS, SCALES, PromptOutcome, SteeringResult

__all__ = ["Direction", "Steering", "calibrate_direction", "greedy_generate", "run_steering",
           "select_prompts", "pooled_layer_states", "check_probe_layer", "chat_texts", "SteeringResult",
           "METHODS", "SCALES", "POSITIONS"]


# ----------------------------------------------------------------------------------- helpers
def check_probe_layer(loaded, probe_layer: int | None, flag: str = "--probe-layer") -> int:
    L = loaded.adapter.n_layers
    if probe_layer is None:
        return L // 4
    if not isinstance(probe_layer, (int, np.integer)) or not 0 <= int(probe_layer) < L:
        raise OptionError(f"{flag} {probe_layer} is out of range: {loaded.name} has layers 0..{L - 1}")
    return int(probe_layer)


def pooled_layer_states(loaded, texts: Sequence[str], layer: int, *, pooling: str = "last",
                        batch_size: int = 16, backend: str | None = None) -> torch.Tensor:
    """Pooled output of decoder block ``layer`` for each text -> [N, D] float32 (through ``Trace``,
    the pass stopped there; one transfer at the end)."""
    ids, _ = tokenize(loaded, texts, what="calibration statement")
    device = next(loaded.model.parameters()).device
    out = torch.empty(len(texts), loaded.adapter.d_model, dtype=torch.float32, device=device)
    with Trace(loaded, {f"block.{layer}": pooled_capture(out, pooling, backend)}) as tr:
        for batch in tr.batches(ids, batch_size=batch_size):
            tr.forward(batch)
    return out.cpu()


@dataclass
class Direction:
    vector: np.ndarray       # [D], unit length
    probe_layer: int
    method: str
    n_true: int
    n_false: int
    calibration_sha256: str


def calibrate_direction(loaded, calibration: PromptSet, *, probe_layer: int | None = None,
                        method: str = "mean-diff", pooling: str = "last", batch_size: int = 16,
                        backend: str | None = None) -> Direction:
    """Unit direction at the probe layer: mean(true) - mean(false) of pooled states, or the first
    principal component of the paired differences (oriented along the mean difference)."""
    if method not in METHODS:       # before the model runs (unit_direction checks it too)
        raise OptionError(f"--direction: {method!r} is not one of {', '.join(METHODS)}")
    layer = check_probe_layer(loaded, probe_layer)
    trues = [p.text for p in calibration.prompts if p.true is True]
    falses = [p.text for p in calibration.prompts if p.true is False]
    if not trues or not falses:
        raise DataError(f"{calibration.path}: calibration needs statements with \"true\": true and \"true\": false")
    X = pooled_layer_states(loaded, trues + falses, layer, pooling=pooling, batch_size=batch_size,
                            backend=backend).numpy()
    v = unit_direction(X[:len(trues)], X[len(trues):], method, where=f"{calibration.path}: layer {layer}")
    return Direction(vector=v, probe_layer=layer, method=method, n_true=len(trues), n_false=len(falses),
                     calibration_sha256=calibration.sha256)


def chat_texts(loaded, texts: Sequence[str]) -> list[str]:
    """Wrap each prompt as one user turn with the tokenizer's chat template (generation prompt added)."""
    tok = loaded.tokenizer
    if not getattr(tok, "chat_template", None):
        raise OptionError(f"--chat-template: {loaded.name}'s tokenizer has no chat template")
    return [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts]


# ----------------------------------------------------------------------------------- runs
def select_prompts(prompts: PromptSet, opts: SteerOptions) -> PromptSet:
    """The prompts a run generates from: ``opts.prompt_set`` ('auto': the 'truthfulness' set when
    present, else all; 'all'; or a set name), then the first ``opts.max_prompts``."""
    name = opts.prompt_set
    if name == "auto":
        name = "truthfulness" if "truthfulness" in prompts.sets else "all"
    chosen = list(prompts.prompts) if name == "all" else prompts.select(name)
    if not chosen and name != "all":
        raise OptionError(f"option '--set': {name!r}: no prompt of {prompts.path} has that set "
                          f"(sets: {', '.join(prompts.sets)})")
    if opts.max_prompts is not None:
        chosen = chosen[:opts.max_prompts]
    return PromptSet(chosen, path=prompts.path, sha256=prompts.sha256)


def run_steering(loaded, calibration: PromptSet, prompts: PromptSet, opts: SteerOptions | None = None, *,
                 direction: Direction | None = None, **changes: Any) -> SteeringResult:
    """Calibrate (unless ``direction`` is given) and compare greedy generation with and without the
    injection for every selected prompt (``select_prompts``).  ``opts`` (defaults when None), any
    field overridden by keyword (validated by :class:`SteerOptions`).  Prints nothing, writes nothing."""
    from cape_kernels import backends as kbackends

    opts = opts or SteerOptions()
    if changes:
        opts = opts.replace(**changes)
    prompts = select_prompts(prompts, opts)
    if len(prompts) == 0:
        raise DataError(f"{prompts.path}: no prompts")
    backend, batch_size, max_new_tokens = opts.backend, opts.batch_size, opts.max_new_tokens
    layer = check_probe_layer(loaded, opts.probe_layer if direction is None else direction.probe_layer)
    if direction is None:
        direction = calibrate_direction(loaded, calibration, probe_layer=layer, method=opts.method,
                                        pooling=opts.pooling, batch_size=batch_size, backend=backend)
    tok = loaded.tokenizer
    chat = opts.chat_template == "on" or (opts.chat_template == "auto" and bool(getattr(tok, "chat_template", None)))
    device = next(loaded.model.parameters()).device
    v = torch.as_tensor(direction.vector, dtype=torch.float32, device=device)
    texts = prompts.texts
    ids, truncated = tokenize(loaded, chat_texts(loaded, texts) if chat else texts, add_special_tokens=not chat)
    n_injected = 0
    results: dict[int, PromptOutcome] = {}
    with progress.task("generating", total=len(ids), unit="prompt") as advance:
        for rows in plan_batches([len(r) for r in ids], batch_size=batch_size):
            batch = [ids[j] for j in rows]
            n = len(rows)
            # baseline and steered rows in one batch: alpha 0 for the first n rows (docs/METHODS.md §4.7)
            steering = Steering(layer, v, torch.cat([torch.zeros(n), torch.full((n,), float(opts.alpha))]),
                                scale=opts.scale, positions=opts.positions, tau=opts.tau, backend=backend)
            both = greedy_generate(loaded, batch + batch, max_new_tokens, steering)
            base, steered = both[:n], both[n:]
            n_injected += steering.n_injected
            cos = steering.last_cos.to("cpu", torch.float64)[n:]
            for k, j in enumerate(rows):
                results[j] = PromptOutcome(
                    id=str(prompts.prompts[j].id), prompt=texts[j],
                    baseline=tok.decode(base[k], skip_special_tokens=True),
                    steered=tok.decode(steered[k], skip_special_tokens=True), changed=bool(base[k] != steered[k]),
                    cos=float(cos[k]), n_baseline_tokens=len(base[k]), n_steered_tokens=len(steered[k]))
            advance(n)
    per_prompt = [results[j] for j in range(len(ids))]
    n_changed = sum(r.changed for r in per_prompt)
    resolved = kbackends.resolve(backend or None, device.type)
    prov = Provenance(method="cape_hpc.steering.run_steering", options=opts.to_dict(),
                      inputs={"calibration": direction.calibration_sha256, "prompts": prompts.sha256})
    return SteeringResult(
        model=loaded.name, source=str(loaded.source), revision=str(loaded.revision), dtype=loaded.dtype,
        backend=resolved, probe_layer=layer, method=direction.method, alpha=float(opts.alpha), scale=opts.scale,
        positions=opts.positions, tau=opts.tau, pooling=opts.pooling, max_new_tokens=max_new_tokens,
        batch_size=batch_size, chat_template=chat, direction=np.asarray(direction.vector, dtype=np.float64),
        calibration_sha256=direction.calibration_sha256, prompt_set_sha256=prompts.sha256,
        n_prompts=len(per_prompt), n_changed=n_changed, rate=n_changed / len(per_prompt),
        rate_ci=wilson_interval(n_changed, len(per_prompt), 0.95), n_injected=n_injected, per_prompt=per_prompt,
        provenance=prov, complete=True)
