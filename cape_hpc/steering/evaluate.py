"""Held-out evaluation of steering on multiple-choice items (docs/METHODS.md §4.3-§4.6): k-fold
calibration on item-derived statements, per-row alpha over a grid and a layer scan in the same
forward passes, correction and damage rates with Wilson intervals, an exact McNemar test, the
fluency cost and the operating-point rule.  Prints nothing, writes nothing."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from cape_hpc.errors import DataError, OptionError
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


def evaluate_steering(loaded, items: ItemSet, opts: OutcomeOptions | None = None, *,
                      neutral: NeutralSet | None = None, **changes: Any) -> SteeringOutcomeResult:
    """Held-out multiple-choice outcome over ``opts.alphas`` x ``opts.layers`` (docs/METHODS.md §4)."""
    from cape_kernels import backends as kbackends

    from cape_hpc.steering.steer import check_probe_layer

    opts = opts or OutcomeOptions()
    if changes:
        opts = opts.replace(**changes)
    items = items.subset(opts.max_items, seed=opts.fold_seed)
    its = items.items
    n = len(its)
    if n < opts.folds:
        raise OptionError(f"--folds {opts.folds}: only {n} items (each fold needs at least one)")
    flag = "--layers" if opts.layers else "--probe-layer"
    layers = sorted(set(check_probe_layer(loaded, L, flag) for L in (opts.layers or (opts.probe_layer,))))
    alphas = sorted(set(float(a) for a in opts.alphas) | {0.0})
    steered_alphas = [a for a in alphas if a != 0]
    level = opts.level
    bs, budget, backend = opts.batch_size, opts.token_budget, opts.backend
    device = next(loaded.model.parameters()).device

    ids, n_ans, where = tokenize_rows(loaded, [it.context for it in its], [it.scored_answers for it in its],
                                      max_tokens=opts.max_prompt_tokens)
    R = len(ids)
    row_item = np.array([w[0] for w in where], dtype=np.int64)
    row_answer = np.array([w[1] for w in where], dtype=np.int64)
    is_true = np.array([j in its[i].correct for i, j in where], dtype=bool)
    correct = [it.correct for it in its]

    # 1. baseline scores and the calibration states at every candidate layer (one pass)
    base = score_rows(loaded, ids, n_ans, capture=layers, pooling=opts.pooling, batch_size=bs,
                      token_budget=budget, backend=backend)
    folds = assign_folds([it.domain for it in its], opts.folds, opts.fold_seed)
    k = opts.folds
    dirs = np.zeros((len(layers), k, loaded.adapter.d_model))
    full = np.zeros((len(layers), loaded.adapter.d_model))
    for li, L in enumerate(layers):
        for f in range(k):
            dirs[li, f] = item_directions(base.states[L], is_true, row_item, folds != f, opts.method)
        full[li] = item_directions(base.states[L], is_true, row_item, np.ones(n, dtype=bool), opts.method)
    fold_cos = np.einsum("lkd,ld->lk", dirs, full)

    # 2. every (layer, alpha != 0) x row in the same passes; each item steered by its fold's direction
    G = [(li, a) for li in range(len(layers)) for a in steered_alphas]
    lp_steer = np.zeros((len(G), R))
    if G:
        all_ids = [ids[r] for _ in G for r in range(R)]
        inj = Injection(layers=layers, directions=torch.as_tensor(dirs, dtype=torch.float32),
                        alpha=np.repeat([a for _, a in G], R), layer_index=np.repeat([li for li, _ in G], R),
                        dir_index=np.tile(folds[row_item], len(G)), scale=opts.scale, tau=opts.tau,
                        positions=opts.score_positions, backend=backend)
        out = score_rows(loaded, all_ids, list(n_ans) * len(G), inj, batch_size=bs, token_budget=budget,
                         backend=backend)
        lp_steer = out.logprob.reshape(len(G), R)

    # 3. fluency cost per (layer, alpha != 0), along the all-items direction
    kl = {g: math.nan for g in G}
    ppl = {g: math.nan for g in G}
    base_ppl, n_neutral, n_neutral_tokens = math.nan, 0, 0
    if neutral is not None and opts.max_neutral != 0:
        neutral = neutral.subset(opts.max_neutral)
        from cape_hpc.models.batching import tokenize

        nids, _ = tokenize(loaded, neutral.texts, what="neutral text")
        nids = [r for r in nids if len(r) >= 2]
        if nids:
            fl = fluency_pass(loaded, nids, G, layers, torch.as_tensor(full, dtype=torch.float32), scale=opts.scale,
                              tau=opts.tau, batch_size=bs, token_budget=budget, backend=backend)
            kl = {g: float(fl.kl[i]) for i, g in enumerate(G)}
            ppl = {g: float(math.exp(fl.nll[i])) for i, g in enumerate(G)}
            base_ppl, n_neutral, n_neutral_tokens = math.exp(fl.base_nll), len(nids), fl.n_tokens

    # 4. the dose-response table
    b_choice, b_ok, b_mc2 = choices_of(base.logprob, row_item, row_answer, n, correct)
    points: list[DosePoint] = []
    choices: list[np.ndarray] = []
    per_point: dict[tuple[int, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for li, L in enumerate(layers):
        for a in alphas:
            if a == 0:
                c, ok, m2, kl_g, ppl_g = b_choice, b_ok, b_mc2, (0.0 if n_neutral else math.nan), base_ppl
            else:
                g = G.index((li, a))
                c, ok, m2 = choices_of(lp_steer[g], row_item, row_answer, n, correct)
                kl_g, ppl_g = kl[(li, a)], ppl[(li, a)]
            per_point[(L, a)] = (c, ok, m2)
            nbw, nbr = int((~b_ok).sum()), int(b_ok.sum())
            ncor, ndam = int((~b_ok & ok).sum()), int((b_ok & ~ok).sum())
            p = DosePoint(layer=L, alpha=a, n_items=n, n_correct=int(ok.sum()), accuracy=float(ok.mean()),
                          accuracy_ci=wilson_interval(int(ok.sum()), n, level), mc2=float(m2.mean()),
                          n_base_wrong=nbw, n_corrected=ncor, correction_rate=_rate(ncor, nbw),
                          correction_ci=wilson_interval(ncor, nbw, level), n_base_right=nbr, n_damaged=ndam,
                          damage_rate=_rate(ndam, nbr), damage_ci=wilson_interval(ndam, nbr, level),
                          mcnemar_p=mcnemar_exact(ncor, ndam), kl=kl_g, perplexity=ppl_g, eligible=False)
            p.eligible = _eligible(p, opts.max_damage, opts.max_kl)
            points.append(p)
            choices.append(c)
    best = choose_point(points, opts.max_damage, opts.max_kl)
    if best is not None:
        s_choice, s_ok, s_mc2 = per_point[(best.layer, best.alpha)]
    per_item = [ItemOutcome(id=it.id, domain=it.domain, kind=it.kind, fold=int(folds[i]), n_answers=len(it.answers),
                            baseline_choice=int(b_choice[i]), baseline_correct=bool(b_ok[i]),
                            baseline_mc2=float(b_mc2[i]),
                            steered_choice=int(s_choice[i]) if best else -1,
                            steered_correct=bool(s_ok[i]) if best else False,
                            steered_mc2=float(s_mc2[i]) if best else math.nan)
                for i, it in enumerate(its)]
    resolved = kbackends.resolve(backend or None, device.type)
    prov = Provenance(method="cape_hpc.steering.evaluate_steering", options=opts.to_dict(), seed=opts.fold_seed,
                      inputs={"items": items.sha256, **({"neutral": neutral.sha256} if n_neutral else {})})
    return SteeringOutcomeResult(
        model=loaded.name, source=str(loaded.source), revision=str(loaded.revision), dtype=loaded.dtype,
        backend=resolved, items_path=items.path, items_sha256=items.sha256, n_items=n, domains=items.domains,
        neutral_path=neutral.path if n_neutral else "", neutral_sha256=neutral.sha256 if n_neutral else "",
        n_neutral=n_neutral, n_neutral_tokens=n_neutral_tokens, layers=layers, alphas=alphas, scale=opts.scale,
        positions=opts.score_positions, tau=opts.tau, method=opts.method, pooling=opts.pooling,
        calibration=CALIBRATION, n_folds=k, fold_seed=opts.fold_seed, level=level,
        baseline_accuracy=float(b_ok.mean()), baseline_accuracy_ci=wilson_interval(int(b_ok.sum()), n, level),
        baseline_mc2=float(b_mc2.mean()), points=points, choices=np.stack(choices).astype(np.int64),
        rule=RULE.format(max_damage=opts.max_damage, max_kl=opts.max_kl), max_damage=opts.max_damage,
        max_kl=opts.max_kl, chosen_layer=best.layer if best else -1, chosen_alpha=best.alpha if best else math.nan,
        directions=full, fold_directions_cos=fold_cos, per_item=per_item, provenance=prov, complete=True)
