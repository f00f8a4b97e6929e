"""The held-out steering outcome (docs/METHODS.md §4.3-§4.6): per-row alpha scoring invariants, a
planted-direction model whose correction counts are known by hand, the calibration direction
against a float64 hand computation, folds, McNemar against scipy, the operating-point rule and the
result's round trip."""
import json
import math
import re

import numpy as np
import pytest
import torch

from cape_hpc.models import load_model
from cape_hpc.steering import (Injection, ItemSet, SteeringOutcomeResult, assign_folds, evaluate_steering,
                               load_items, score_rows, tokenize_rows)
from cape_hpc.steering.items import Item


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def rows(tiny):
    its = load_items().subset(6, seed=1).items
    ids, n_ans, where = tokenize_rows(tiny, [it.context for it in its], [it.scored_answers for it in its])
    return ids, n_ans, where


def _direction(D, seed=0):
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _inj(R, alpha, layer=1, dirs=None, tau=None, D=64, positions="answer"):
    d = dirs if dirs is not None else _direction(D)[None, None, :]
    return Injection(layers=[layer], directions=d, alpha=np.broadcast_to(np.asarray(alpha, float), (R,)).copy(),
                     layer_index=np.zeros(R, dtype=np.int64), dir_index=np.zeros(R, dtype=np.int64), tau=tau,
                     positions=positions, backend="torch")


def test_alpha_zero_rows_of_a_mixed_batch_are_the_unsteered_model(tiny, rows):
    """Every alpha = 0 row of a mixed-alpha batch has exactly the unsteered log-prob (same batches),
    and the unsteered scores equal a plain forward pass of each row alone (float32 tolerance)."""
    ids, n_ans, _ = rows
    R = len(ids)
    alpha = np.where(np.arange(R) % 3 == 0, 0.0, np.where(np.arange(R) % 3 == 1, 0.7, -1.5))
    base = score_rows(tiny, ids, n_ans, batch_size=64, backend="torch")
    mixed = score_rows(tiny, ids, n_ans, _inj(R, alpha), batch_size=64, backend="torch")
    zero = alpha == 0
    assert np.array_equal(mixed.logprob[zero], base.logprob[zero])
    assert np.all(np.abs(mixed.logprob[~zero] - base.logprob[~zero]) > 1e-6)       # the others did change
    with torch.no_grad():
        for r in (0, 5, R - 1):
            lp = tiny.model(torch.tensor([ids[r]])).logits[0].double().log_softmax(-1)
            n, L = n_ans[r], len(ids[r])
            ref = np.mean([lp[L - 1 - n + j, ids[r][L - n + j]].item() for j in range(n)])
            assert base.logprob[r] == pytest.approx(ref, abs=2e-5)


def test_mixed_batch_equals_separate_runs_and_tau_minus_one_changes_nothing(tiny, rows):
    ids, n_ans, _ = rows
    R = len(ids)
    grid = [0.0, 0.3, -0.8, 1.5]
    alpha = np.array([grid[r % len(grid)] for r in range(R)])
    mixed = score_rows(tiny, ids, n_ans, _inj(R, alpha), batch_size=7, backend="torch")
    for a in grid:
        alone = score_rows(tiny, ids, n_ans, _inj(R, a), batch_size=7, backend="torch")
        sel = alpha == a
        np.testing.assert_allclose(mixed.logprob[sel], alone.logprob[sel], rtol=0, atol=1e-6)
    base = score_rows(tiny, ids, n_ans, batch_size=7, backend="torch")
    gated = score_rows(tiny, ids, n_ans, _inj(R, 2.0, tau=-1.0), batch_size=7, backend="torch")
    assert np.array_equal(gated.logprob, base.logprob) and gated.n_injected == 0
    # the injection count of an ungated pass: answer positions (last context token + answer tokens)
    full = score_rows(tiny, ids, n_ans, _inj(R, 0.5), batch_size=7, backend="torch")
    assert full.n_injected == sum(n + 1 for n in n_ans)


# ------------------------------------------------------------------------- the planted model
LETTERS = "abcdefghijklmnopqrst"
BETA = np.array([0.3, 0.2, 0.1, -0.05, -0.15, -0.25, -0.35, 0.4, -0.6, 0.5])


def planted():
    """tiny-llama made into a bigram model whose answer provably depends on the direction v:
    every block's output projections are zero (each block is the identity), the final norm weight
    is 1, and the unembedding is untied.  Item i asks for letter c_i (correct) or w_i:
    emb(c_i) = v + n_i, emb(w_i) = -v + n_i (so the item-derived mean difference is exactly 2v),
    emb(' ') = u with u orthogonal to v, and the unembedding row of c_i is s (v + beta_i u/|u|),
    every other row 0.  At the space position (which predicts the letter) under h <- h + alpha |h| v:
    logit(c_i) - logit(w_i) = s sqrt(D) (alpha + beta_i) / sqrt(1 + alpha^2), so item i is answered
    correctly iff alpha > -beta_i."""
    lm = load_model("tiny-llama")
    m = lm.model
    D = lm.adapter.d_model
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        m.model.norm.weight.fill_(1.0)
        v = _direction(D, 7)
        u = torch.randn(D, generator=g)
        u = u - (u @ v) * v
        emb = m.model.embed_tokens.weight
        head = torch.zeros_like(emb)
        tok = lm.tokenizer
        tid = lambda s: tok(s, add_special_tokens=False)["input_ids"][-1]
        emb[tid(" ")] = u
        for i, beta in enumerate(BETA):
            c, w = tid(LETTERS[2 * i]), tid(LETTERS[2 * i + 1])
            n_i = 0.3 * torch.randn(D, generator=g)
            n_i = n_i - (n_i @ v) * v
            emb[c], emb[w] = v + n_i, -v + n_i
            head[c] = 0.3 * (v + float(beta) * u / u.norm())
        m.lm_head.weight = torch.nn.Parameter(head)
    items = ItemSet([Item(id=f"p{i}", domain=("factual", "reasoning")[i % 2], kind="mc", text=f"item {i}",
                          answers=(LETTERS[2 * i], LETTERS[2 * i + 1]), correct=(0,)) for i in range(len(BETA))],
                    path="planted.jsonl", sha256="0" * 64)
    return lm, items, v


def test_planted_direction_correction_rate_matches_the_hand_count():
    lm, items, v = planted()
    alphas = (-0.45, -0.25, 0.12, 0.22, 0.3, 0.45, 0.7)
    res = evaluate_steering(lm, items, alphas=alphas, layers=(1,), folds=2, max_damage=0.0, max_kl=1.0,
                            backend="torch", batch_size=8)
    # the calibration finds v: mean(c states) - mean(w states) = 2v exactly, in every fold
    np.testing.assert_allclose(res.directions[0], v.numpy(), atol=1e-5)
    np.testing.assert_allclose(res.fold_directions_cos, 1.0, atol=1e-6)
    base_ok = BETA > 0
    assert res.baseline_accuracy == base_ok.mean()
    assert [o.baseline_correct for o in res.per_item] == base_ok.tolist()
    for a in alphas:
        ok = a + BETA > 0                        # the closed form of the docstring
        p = res.point(1, a)
        assert (p.n_base_wrong, p.n_base_right) == (int((~base_ok).sum()), int(base_ok.sum()))
        assert p.n_corrected == int((~base_ok & ok).sum()), a
        assert p.n_damaged == int((base_ok & ~ok).sum()), a
        assert p.correction_rate == pytest.approx((~base_ok & ok).sum() / (~base_ok).sum())
        assert p.accuracy == ok.mean()
    # by hand: alpha 0.3 corrects beta -0.05, -0.15, -0.25; alpha -0.25 damages beta 0.1, 0.2
    assert res.point(1, 0.3).n_corrected == 3 and res.point(1, -0.25).n_damaged == 2
    # the rule (no damage allowed): the largest correction rate, alpha 0.7, which corrects all five
    assert (res.chosen_layer, res.chosen_alpha) == (1, 0.7)
    assert res.chosen.n_corrected == 5 and res.chosen.n_damaged == 0 and res.chosen.correction_rate == 1.0
    assert all(o.steered_correct == (0.7 + b > 0) for o, b in zip(res.per_item, BETA))
    # steering along v raises every correct answer's log-prob
    ids, n_ans, where = tokenize_rows(lm, [it.context for it in items.items], [it.scored_answers for it in items.items])
    R = len(ids)
    first = np.array([j == 0 for _, j in where])
    lps = [score_rows(lm, ids, n_ans, _inj(R, a, dirs=v[None, None, :]), backend="torch").logprob[first]
           for a in (0.0, 0.2, 0.5)]
    assert np.all(lps[1] > lps[0]) and np.all(lps[2] > lps[1])


def test_mean_difference_direction_equals_a_float64_hand_computation(tiny):
    """The stored all-items direction and the folds' directions against states captured by a plain
    forward hook, averaged in float64 by hand."""
    items = load_items().subset(9, seed=4)
    res = evaluate_steering(tiny, items, alphas=(0.5,), layers=(0, 2), folds=3, backend="torch", generate=False)
    its = items.items
    texts, labels, item_of = [], [], []
    tok = tiny.tokenizer
    for i, it in enumerate(its):
        for j, a in enumerate(it.scored_answers):
            texts.append(tok(it.context)["input_ids"] + tok(a, add_special_tokens=False)["input_ids"])
            labels.append(j in it.correct)
            item_of.append(i)
    labels, item_of = np.array(labels), np.array(item_of)
    folds = np.array([o.fold for o in res.per_item])
    seen = {0: [], 2: []}
    hooks = [tiny.adapter.layers[L].register_forward_hook(
        lambda m, a, o, L=L: seen[L].append(o[0] if isinstance(o, tuple) else o)) for L in seen]
    try:
        with torch.no_grad():
            for t in texts:
                tiny.model(torch.tensor([t]))
    finally:
        for h in hooks:
            h.remove()
    for li, L in enumerate((0, 2)):
        X = np.stack([s[0, -1].double().numpy() for s in seen[L]])
        d = X[labels].mean(0) - X[~labels].mean(0)
        np.testing.assert_allclose(res.directions[li], d / np.linalg.norm(d), atol=1e-5)
        for f in range(3):
            tr = np.isin(item_of, np.flatnonzero(folds != f))
            df = X[tr & labels].mean(0) - X[tr & ~labels].mean(0)
            assert res.fold_directions_cos[li, f] == pytest.approx(df @ d / np.linalg.norm(df) / np.linalg.norm(d), abs=1e-5)


def test_folds_never_put_an_item_in_both_splits():
    doms = ["factual"] * 23 + ["reasoning"] * 17 + ["ethical"] * 9
    f = assign_folds(doms, 5, seed=11)
    assert sorted(set(f.tolist())) == [0, 1, 2, 3, 4]
    assert np.bincount(f).max() - np.bincount(f).min() <= 1
    for k in range(5):
        train, test = set(np.flatnonzero(f != k)), set(np.flatnonzero(f == k))
        assert not train & test and len(train | test) == len(doms)
    assert np.array_equal(f, assign_folds(doms, 5, seed=11)) and not np.array_equal(f, assign_folds(doms, 5, seed=12))
    for d in set(doms):                           # each domain spread over the folds
        idx = [i for i, x in enumerate(doms) if x == d]
        assert len(set(f[idx].tolist())) == min(5, len(idx))


def test_outcome_result_round_trips_and_rule_is_stated(tiny, tmp_path):
    from roundtrip import assert_roundtrip

    from cape_hpc.steering import load_neutral

    res = evaluate_steering(tiny, load_items(), neutral=load_neutral(), max_items=10, max_neutral=3, folds=2,
                            alphas=(-0.3, 0.3), backend="torch", generate=False)
    assert res.alphas == [-0.3, 0.0, 0.3] and len(res.points) == 3 and res.choices.shape == (3, 10)
    assert res.n_neutral == 3 and res.point(res.layers[0], 0.0).kl == 0.0
    assert all(p.kl > 0 and p.perplexity > 1 for p in res.points if p.alpha != 0)
    assert "damage rate <= 0.05, fluency KL <= 0.1 nats and at least one correction" in res.rule and res.provenance.options["max_items"] == 10
    for p in res.points:                          # eligibility follows the stated bounds
        assert p.eligible == (p.alpha != 0 and (math.isnan(p.damage_rate) or p.damage_rate <= 0.05)
                              and p.kl <= 0.1 and p.n_corrected > 0)
    back = assert_roundtrip(res, tmp_path, res.group)
    assert back.group == "/steering/tiny-llama/outcome_mc_items"
    json.loads(res.to_json())


# ------------------------------------------------------------------------- the item file
def _write(tmp_path, lines):
    p = tmp_path / "items.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("line,msg", [
    ('{"id": "a", "domain": "factual", "question": "Q?", "answers": ["x"], "correct": [0]}', "field 'answers'"),
    ('{"id": "a", "domain": "factual", "question": "Q?", "answers": ["x", "y"], "correct": [2]}', "field 'correct': index 2"),
    ('{"id": "a", "domain": "factual", "question": "Q?", "answers": ["x", "y"], "correct": [0, 1]}', "every answer"),
    ('{"id": "a", "domain": "factual", "question": "Q?", "answers": ["x", "x"], "correct": [0]}', "duplicate answer"),
    ('{"id": "a", "domain": "factual", "question": "", "answers": ["x", "y"], "correct": [0]}', "field 'question'"),
    ('{"id": "a", "domain": "factual", "question": "Q?", "answer": ["x", "y"], "correct": [0]}', "unknown field 'answer'"),
    ('{"id": "a", "domain": "factual", "statement": "S.", "true": "yes"}', "field 'true'"),
    ('{"id": "a", "statement": "S.", "true": true}', "missing field 'domain'"),
    ('{"id": "a", "domain": "factual"}', "missing field 'question'"),
    ('{"id": "z", "domain": "factual", "statement": "S.", "true": true}', "duplicate id 'z' \\(first on line 1\\)"),
    ('not json', "not valid JSON"),
])
def test_item_file_validation_names_file_line_and_field(tmp_path, line, msg):
    from cape_hpc.errors import DataError

    p = _write(tmp_path, ['{"id": "z", "domain": "ethical", "statement": "Be kind.", "true": true}', line])
    with pytest.raises(DataError, match=re.escape(f"{p}: line 2: ") + ".*" + msg):
        load_items(p)


def test_shipped_items():
    s = load_items()
    mc = [it for it in s.items if it.kind == "mc"]
    assert len(mc) >= 150 and {it.domain for it in mc} == {"factual", "reasoning", "ethical"}
    assert sum(it.kind == "tf" for it in s.items) >= 30
    assert all(2 <= len(it.answers) <= 5 for it in mc) and any(len(it.correct) > 1 for it in mc)
    assert len({it.correct[0] for it in mc}) >= 3             # the correct answer is not always first
    sub = s.subset(30, seed=0)
    assert len(sub) == 30 and set(sub.domains) == set(s.domains)
