"""Held-out evaluation of steering on multiple-choice items (docs/METHODS.md §4.3-§4.6): k-fold
calibration on item-derived statements, per-row alpha over a grid and a layer scan in the same
forward passes, correction and damage rates with Wilson intervals, an exact McNemar test, the
fluency cost and the operating-point rule.  Prints nothing, writes nothing."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from cape_hpc.errors import OptionError
from cape_hpc.schema import Provenance
from cape_hpc.stats.intervals import wilson_interval
from cape_hpc.stats.mcnemar import mcnemar_exact
from cape_hpc.steering.directions import unit_direction
from cape_hpc.steering.folds import assign_folds
from cape_hpc.steering.items import ItemSet, NeutralSet
from cape_hpc.steering.options import OutcomeOptions
from cape_hpc.steering.results import RULE, DosePoint, ItemOutcome, SteeringOutcomeResult
from cape_hpc.steering.scoring import Injection, fluency_pass, score_rows, tokenize_rows

__all__ = ["evaluate_steering", "item_directions", "choose_point", "choices_of",
           "CALIBRATION"]

#: most bytes of stored block outputs the baseline keeps for the steered pass to resume from (an upper
#: bound: every row's tokens x kept layers x d_model x the model's element size); above it the steered
#: pass computes every block (the same numbers).  The project's 186 items on SmolLM2 keep ~14 MB a layer.
RESUME_STATE_BYTES = 256 << 20

CALIBRATION = ("item-derived statements of the training folds: each (question, answer) text, true when the "
               "answer is marked correct (docs/METHODS.md §4.1)")


def item_directions(states: np.ndarray, is_true: np.ndarray, row_item: np.ndarray, train_items: np.ndarray,
                    method: str = "mean-diff") -> np.ndarray:
    """Unit direction from the pooled states of the training items' rows (float64): mean(true rows) -
    mean(false rows) (``mean-diff``), or the first principal component of the per-item differences
    (mean of an item's true rows - mean of its false rows; ``pca``, oriented along the mean difference)."""
    X = np.asarray(states, dtype=np.float64)
    keep = np.isin(row_item, np.flatnonzero(train_items))
    t, f = keep & is_true, keep & ~is_true
    pairs = None
    if method == "pca" and t.any() and f.any():
        pairs = np.stack([X[(row_item == i) & is_true].mean(0) - X[(row_item == i) & ~is_true].mean(0)
                          for i in np.unique(row_item[keep])])
    return unit_direction(X[t], X[f], method, paired_differences=pairs,
                          where="calibration on the training items' answers")


def choices_of(lp: np.ndarray, row_item: np.ndarray, row_answer: np.ndarray, n_items: int,
               correct: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: the chosen answer (argmax of the normalised log-prob, ties to the first), whether it
    is correct, and the MC2 score (softmax mass of the normalised log-probs on the true answers)."""
    choice = np.zeros(n_items, dtype=np.int64)
    ok = np.zeros(n_items, dtype=bool)
    mc2 = np.zeros(n_items)
    for i in range(n_items):
        sel = row_item == i
        s = lp[sel][np.argsort(row_answer[sel], kind="stable")]
        choice[i] = int(np.argmax(s))
        ok[i] = choice[i] in correct[i]
        w = np.exp(s - s.max())
        mc2[i] = w[list(correct[i])].sum() / w.sum()
    return choice, ok, mc2


def choose_point(points: list[DosePoint], max_damage: float, max_kl: float) -> DosePoint | None:
    """The operating point (docs/METHODS.md §4.6; rule text: ``results.RULE``)."""
    cands = [p for p in points if p.eligible]
    if not cands:
        return None
    return max(cands, key=lambda p: (p.correction_rate if math.isfinite(p.correction_rate) else -1.0,
                                     p.n_corrected - p.n_damaged, -abs(p.alpha)))


def _eligible(p: DosePoint, max_damage: float, max_kl: float) -> bool:
    dmg = p.damage_rate if math.isfinite(p.damage_rate) else 0.0
    kl_ok = (not math.isfinite(p.kl)) or p.kl <= max_kl    # no neutral set: the KL bound is not applied
    return p.alpha != 0 and dmg <= max_damage and kl_ok and p.n_corrected > 0


def _rate(k: int, n: int) -> float:
    return k / n if n else math.nan


@dataclass
class _Rows:
    """The scored rows of the items: token ids [R], answer lengths [R], the item and answer of each
    row, whether the answer is true, and each item's correct answers."""

    ids: list[list[int]]
    n_ans: list[int]
    item: np.ndarray
    answer: np.ndarray
    is_true: np.ndarray
    correct: list

    @classmethod
    def of(cls, loaded, its: Sequence, max_tokens: int | None) -> "_Rows":
        ids, n_ans, where = tokenize_rows(loaded, [it.context for it in its], [it.scored_answers for it in its],
                                          max_tokens=max_tokens,
                                          labels=[it.where or f"item {it.id!r}" for it in its])
        return cls(ids, n_ans, np.array([w[0] for w in where], dtype=np.int64),
                   np.array([w[1] for w in where], dtype=np.int64),
                   np.array([j in its[i].correct for i, j in where], dtype=bool), [it.correct for it in its])

    def choices(self, logprob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return choices_of(logprob, self.item, self.answer, len(self.correct), self.correct)


def _calibrate(states: dict[int, np.ndarray], layers: list[int], rows: _Rows, folds: np.ndarray, k: int,
               method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: the k training-fold directions [len(layers), k, D] and the all-items one
    [len(layers), D] (step 1, docs/METHODS.md §4.4)."""
    D = next(iter(states.values())).shape[1]
    dirs, full = np.zeros((len(layers), k, D)), np.zeros((len(layers), D))
    n = len(rows.correct)
    for li, L in enumerate(layers):
        for f in range(k):
            dirs[li, f] = item_directions(states[L], rows.is_true, rows.item, folds != f, method)
        full[li] = item_directions(states[L], rows.is_true, rows.item, np.ones(n, dtype=bool), method)
    return dirs, full


def _resume_layers(loaded, rows: _Rows, layers: list[int], opts: OutcomeOptions) -> list[int]:
    """The candidate layers whose block outputs the baseline keeps (``steering.resume``): those below the
    last block, when the baseline runs the shared-prefix path (``pooling last``) and their states fit in
    ``RESUME_STATE_BYTES``; else none."""
    keep = [L for L in layers if L < loaded.adapter.n_layers - 1]
    dtype = next(loaded.model.parameters()).dtype
    size = sum(len(r) for r in rows.ids) * len(keep) * loaded.adapter.d_model * dtype.itemsize
    return keep if opts.pooling == "last" and size <= RESUME_STATE_BYTES else []


def _steered_logprobs(loaded, rows: _Rows, grid: list[tuple[int, float]], layers: list[int], dirs: np.ndarray,
                      folds: np.ndarray, opts: OutcomeOptions, resume=None) -> np.ndarray:
    """[len(grid), R] scores of every (layer index, alpha != 0) x row in the same passes, each item
    steered by its fold's direction (step 2); ``resume``: the baseline's block states (the rows steered
    at layer L skip blocks 0..L, ``steering.resume``)."""
    R = len(rows.ids)
    if not grid:
        return np.zeros((0, R))
    inj = Injection(layers=layers, directions=torch.as_tensor(dirs, dtype=torch.float32),
                    alpha=np.repeat([a for _, a in grid], R), layer_index=np.repeat([li for li, _ in grid], R),
                    dir_index=np.tile(folds[rows.item], len(grid)), scale=opts.scale, tau=opts.tau,
                    positions=opts.score_positions, backend=opts.backend)
    out = score_rows(loaded, [rows.ids[r] for _ in grid for r in range(R)], list(rows.n_ans) * len(grid), inj,
                     batch_size=opts.batch_size, token_budget=opts.token_budget, backend=opts.backend,
                     resume=resume, desc=f"steered scoring ({len(grid)} grid points)")
    return out.logprob.reshape(len(grid), R)


@dataclass
class _Fluency:
    """Step 3: KL and perplexity per grid point (NaN without neutral texts), the unsteered perplexity."""

    kl: dict
    ppl: dict
    base_ppl: float = math.nan
    neutral: NeutralSet | None = None
    n_tokens: int = 0

    @property
    def n_texts(self) -> int:
        return 0 if self.neutral is None else len(self.neutral.texts)


def _fluency(loaded, neutral: NeutralSet | None, grid: list[tuple[int, float]], layers: list[int],
             full: np.ndarray, opts: OutcomeOptions) -> _Fluency:
    """The fluency cost of each (layer index, alpha != 0) along the all-items direction (§4.6)."""
    from cape_hpc.models.batching import tokenize

    none = _Fluency({g: math.nan for g in grid}, {g: math.nan for g in grid})
    if neutral is None or opts.max_neutral == 0:
        return none
    neutral = neutral.subset(opts.max_neutral)
    nids, _ = tokenize(loaded, neutral.texts, what="neutral text")
    keep = [i for i, r in enumerate(nids) if len(r) >= 2]
    if not keep:
        return none
    fl = fluency_pass(loaded, [nids[i] for i in keep], grid, layers, torch.as_tensor(full, dtype=torch.float32),
                      scale=opts.scale, tau=opts.tau, batch_size=opts.batch_size, token_budget=opts.token_budget,
                      backend=opts.backend)
    used = NeutralSet([neutral.texts[i] for i in keep], neutral.path, neutral.sha256)
    return _Fluency({g: float(fl.kl[i]) for i, g in enumerate(grid)},
                    {g: float(math.exp(fl.nll[i])) for i, g in enumerate(grid)},
                    math.exp(fl.base_nll), used, fl.n_tokens)


def _dose_point(layer: int, alpha: float, b_ok: np.ndarray, ok: np.ndarray, mc2: np.ndarray, kl: float,
                ppl: float, opts: OutcomeOptions) -> DosePoint:
    """One row of the dose-response table (§4.4, §4.5): accuracy, correction and damage counts and
    rates with Wilson intervals, McNemar, the fluency cost, eligibility."""
    n, level = len(ok), opts.level
    nbw, nbr = int((~b_ok).sum()), int(b_ok.sum())
    ncor, ndam = int((~b_ok & ok).sum()), int((b_ok & ~ok).sum())
    p = DosePoint(layer=layer, alpha=alpha, n_items=n, n_correct=int(ok.sum()), accuracy=float(ok.mean()),
                  accuracy_ci=wilson_interval(int(ok.sum()), n, level), mc2=float(mc2.mean()),
                  n_base_wrong=nbw, n_corrected=ncor, correction_rate=_rate(ncor, nbw),
                  correction_ci=wilson_interval(ncor, nbw, level), n_base_right=nbr, n_damaged=ndam,
                  damage_rate=_rate(ndam, nbr), damage_ci=wilson_interval(ndam, nbr, level),
                  mcnemar_p=mcnemar_exact(ncor, ndam), kl=kl, perplexity=ppl, eligible=False)
    p.eligible = _eligible(p, opts.max_damage, opts.max_kl)
    return p


def _dose_response(rows: _Rows, base_lp: np.ndarray, lp_steer: np.ndarray, layers: list[int], alphas: list[float],
                   grid: list[tuple[int, float]], fl: _Fluency, opts: OutcomeOptions):
    """Step 4: the table over layers x alphas (alpha 0: the baseline), each point's choices [n_items]
    and its (choice, correct, MC2) per item, keyed (layer, alpha)."""
    base = rows.choices(base_lp)
    points, choices, per_point = [], [], {}
    for li, L in enumerate(layers):
        for a in alphas:
            if a == 0:
                got, kl, ppl = base, (0.0 if fl.n_texts else math.nan), fl.base_ppl
            else:
                got, kl, ppl = rows.choices(lp_steer[grid.index((li, a))]), fl.kl[(li, a)], fl.ppl[(li, a)]
            per_point[(L, a)] = got
            points.append(_dose_point(L, a, base[1], got[1], got[2], kl, ppl, opts))
            choices.append(got[0])
    return points, choices, per_point, base


def _per_item(its: Sequence, folds: np.ndarray, base, steered) -> list[ItemOutcome]:
    """Each item's fold, baseline choice and choice at the operating point (``steered`` None: none)."""
    b_choice, b_ok, b_mc2 = base
    return [ItemOutcome(id=it.id, domain=it.domain, kind=it.kind, fold=int(folds[i]), n_answers=len(it.answers),
                        baseline_choice=int(b_choice[i]), baseline_correct=bool(b_ok[i]),
                        baseline_mc2=float(b_mc2[i]),
                        steered_choice=int(steered[0][i]) if steered else -1,
                        steered_correct=bool(steered[1][i]) if steered else False,
                        steered_mc2=float(steered[2][i]) if steered else math.nan)
            for i, it in enumerate(its)]


def _layers_and_alphas(loaded, opts: OutcomeOptions) -> tuple[list[int], list[float]]:
    """The candidate layers (checked against the model) and the alpha grid with 0 added, sorted."""
    from cape_hpc.steering.steer import check_probe_layer

    flag = "--layers" if opts.layers else "--probe-layer"
    layers = sorted(set(check_probe_layer(loaded, L, flag) for L in (opts.layers or (opts.probe_layer,))))
    return layers, sorted(set(float(a) for a in opts.alphas) | {0.0})


def evaluate_steering(loaded, items: ItemSet, opts: OutcomeOptions | None = None, *,
                      neutral: NeutralSet | None = None, **changes: Any) -> SteeringOutcomeResult:
    """Held-out multiple-choice outcome over ``opts.alphas`` x ``opts.layers`` (docs/METHODS.md §4)."""
    from cape_kernels import backends as kbackends

    opts = opts or OutcomeOptions()
    if changes:
        opts = opts.replace(**changes)
    items = items.subset(opts.max_items, seed=opts.fold_seed)
    its, n = items.items, len(items.items)
    if n < opts.folds:
        raise OptionError(f"--folds {opts.folds}: only {n} items (each fold needs at least one)")
    layers, alphas = _layers_and_alphas(loaded, opts)
    rows = _Rows.of(loaded, its, opts.max_prompt_tokens)
    # 1. baseline scores, the calibration states at every candidate layer and every token's block output
    #    there (the steered pass resumes from it), one pass; directions
    base = score_rows(loaded, rows.ids, rows.n_ans, capture=layers, pooling=opts.pooling, batch_size=opts.batch_size,
                      token_budget=opts.token_budget, backend=opts.backend,
                      keep_states=_resume_layers(loaded, rows, layers, opts), desc="baseline scoring")
    folds = assign_folds([it.domain for it in its], opts.folds, opts.fold_seed)
    dirs, full = _calibrate(base.states, layers, rows, folds, opts.folds, opts.method)
    # 2. every (layer, alpha != 0) x row; 3. the fluency cost; 4. the dose-response table
    grid = [(li, a) for li in range(len(layers)) for a in alphas if a != 0]
    lp_steer = _steered_logprobs(loaded, rows, grid, layers, dirs, folds, opts, base.block_states)
    base.block_states.clear()                                      # the stored states are not needed again
    fl = _fluency(loaded, neutral, grid, layers, full, opts)
    points, choices, per_point, b = _dose_response(rows, base.logprob, lp_steer, layers, alphas, grid, fl, opts)
    best = choose_point(points, opts.max_damage, opts.max_kl)
    per_item = _per_item(its, folds, b, per_point[(best.layer, best.alpha)] if best else None)
    device = next(loaded.model.parameters()).device
    nf = fl.neutral
    prov = Provenance(method="cape_hpc.steering.evaluate_steering", options=opts.to_dict(), seed=opts.fold_seed,
                      inputs={"items": items.sha256, **({"neutral": nf.sha256} if nf else {})})
    return SteeringOutcomeResult(
        model=loaded.name, source=str(loaded.source), revision=str(loaded.revision), dtype=loaded.dtype,
        backend=kbackends.resolve(opts.backend or None, device.type), items_path=items.path,
        items_sha256=items.sha256, n_items=n, domains=items.domains, neutral_path=nf.path if nf else "",
        neutral_sha256=nf.sha256 if nf else "", n_neutral=fl.n_texts, n_neutral_tokens=fl.n_tokens,
        layers=layers, alphas=alphas, scale=opts.scale, positions=opts.score_positions, tau=opts.tau,
        method=opts.method, pooling=opts.pooling, calibration=CALIBRATION, n_folds=opts.folds,
        fold_seed=opts.fold_seed, level=opts.level, baseline_accuracy=float(b[1].mean()),
        baseline_accuracy_ci=wilson_interval(int(b[1].sum()), n, opts.level), baseline_mc2=float(b[2].mean()),
        points=points, choices=np.stack(choices).astype(np.int64),
        rule=RULE.format(max_damage=opts.max_damage, max_kl=opts.max_kl), max_damage=opts.max_damage,
        max_kl=opts.max_kl, chosen_layer=best.layer if best else -1, chosen_alpha=best.alpha if best else math.nan,
        directions=full, fold_directions_cos=np.einsum("lkd,ld->lk", dirs, full), per_item=per_item,
        provenance=prov, complete=True)
