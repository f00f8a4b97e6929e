"""Streaming internals (docs/METHODS.md §3.7, §3.8): every statistic of the device-resident
accumulators equals a float64 numpy reference built from ``output_hidden_states`` of unpadded,
one-prompt forward passes over all prompts at once (SmolLM2-135M real weights and every tiny
architecture, batch sizes 1, 7 and 32); the block bootstrap equals a direct bootstrap of stacked
vectors resampled by the same blocks; the reservoir estimate lies within its standard error of a
known answer; the state does not grow with the prompt count; keep_pooled; options."""
import math

import numpy as np
import pytest
import torch

from cape_hpc.errors import DataError, OptionError
from cape_hpc.internals import extract_internals, load_prompts
from cape_hpc.internals.prompts import Prompt, PromptSet
from cape_hpc.models import load_model
from cape_hpc.models.tiny import TINY_ARCHS

# ------------------------------------------------------------------ the reference (no cape code)


def _reference_vectors(lm, ps):
    """Per prompt, alone and unpadded: block outputs [N, L, D] (hidden_states[l + 1]; the last block
    by a plain forward hook, since hidden_states[L] is after the final norm), the final-norm output
    [N, D], the out_proj inputs [N, L, H*dh] and last-position logits [N, V], float64."""
    ad, tok, model = lm.adapter, lm.tokenizer, lm.model
    L = ad.n_layers
    cap = {}
    hooks = [ad.out_proj(l).register_forward_pre_hook(
        (lambda l: lambda m, a: cap.__setitem__(("h", l), a[0][0, -1].double().numpy()))(l)) for l in range(L)]
    hooks.append(ad.layers[L - 1].register_forward_hook(
        lambda m, a, o: cap.__setitem__("last", ad.hidden_of(o)[0, -1].double().numpy())))
    hooks.append(ad.final_module().register_forward_hook(
        lambda m, a, o: cap.__setitem__("final", ad.hidden_of(o)[0, -1].double().numpy())))
    X, F, Hd, lg = [], [], [], []
    try:
        for p in ps.prompts:
            ids = tok(p.text, return_tensors="pt")
            with torch.no_grad():
                out = model(input_ids=ids["input_ids"], output_hidden_states=True)
            X.append(np.stack([out.hidden_states[l + 1][0, -1].double().numpy() for l in range(L - 1)]
                              + [cap["last"]]))
            F.append(cap["final"])
            Hd.append(np.stack([cap[("h", l)] for l in range(L)]))
            lg.append(out.logits[0, -1].double().numpy())
    finally:
        for h in hooks:
            h.remove()
    return np.stack(X), np.stack(F), np.stack(Hd), np.stack(lg)


def _cos(a, b):
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _pairs(R, T):
    C = (R / np.linalg.norm(R, axis=1, keepdims=True)) @ (T / np.linalg.norm(T, axis=1, keepdims=True)).T
    return C.mean(), (C < -0.5).mean()


def _pr(X):
    Xc = X - X.mean(0)
    lam = np.clip(np.linalg.eigvalsh(Xc.T @ Xc), 0, None)
    return lam.sum() ** 2 / (lam ** 2).sum()


def _check(res, ref, is_r, H, dh, tol=2e-5):
    X, F, Hd, lg = ref
    L = X.shape[1]
    for l in range(L):
        R, T = X[is_r, l], X[~is_r, l]
        assert res.layer_coupling[l] == pytest.approx(_cos(R.mean(0), T.mean(0)), abs=tol), l
        m, f = _pairs(R, T)
        assert res.layer_pairwise_mean[l] == pytest.approx(m, abs=tol), l
        assert res.layer_competing_fraction[l] == pytest.approx(f, abs=1e-12), l
        assert res.d_rep[l] == pytest.approx(_pr(np.concatenate([R, T])), rel=5e-4), l
    b = res.bottleneck
    assert b.hidden == pytest.approx(_cos(F[is_r].mean(0), F[~is_r].mean(0)), abs=tol)
    assert b.logits == pytest.approx(_cos(lg[is_r].mean(0), lg[~is_r].mean(0)), abs=tol)
    Fs = np.concatenate([F[is_r], F[~is_r]])
    _, s, Vt = np.linalg.svd(Fs - Fs.mean(0), full_matrices=False)
    rank = int((s > s[0] * 1e-6).sum())
    a, bb = Vt @ F[is_r].mean(0), Vt @ F[~is_r].mean(0)
    pca = np.cumsum(a * bb) / np.sqrt(np.cumsum(a * a) * np.cumsum(bb * bb))
    k = min(rank, len(b.pca))
    assert k >= min(5, rank)
    np.testing.assert_allclose(b.pca_coupling[:k], pca[:k], atol=2e-3)
    hd = Hd.reshape(len(Hd), L, H, dh)
    mr, mt = hd[is_r].mean(0), hd[~is_r].mean(0)
    ref_h = (mr * mt).sum(-1) / np.sqrt((mr * mr).sum(-1) * (mt * mt).sum(-1))
    np.testing.assert_allclose(res.head_coupling, ref_h, atol=5e-5)


def _set(n_per, seed=0):
    ps = load_prompts()
    keep = ps.select("reasoning")[:n_per] + ps.select("truthfulness")[:n_per]
    return PromptSet(keep, path=ps.path, sha256=ps.sha256)


# ------------------------------------------------------------------ real model
@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def smol_ref(smol):
    ps = _set(6)                                                    # 12 prompts (forward passes are slow here)
    return ps, _reference_vectors(smol, ps)


@pytest.mark.realmodel
@pytest.mark.parametrize("bs", [pytest.param(1, marks=pytest.mark.slow), 7, pytest.param(32, marks=pytest.mark.slow)])
def test_smollm2_every_statistic_equals_the_float64_reference(smol, smol_ref, bs):
    """Batch 7 by default (padded, uneven batches); 1 and 32 with --runslow (the tiny models run all three)."""
    ps, ref = smol_ref
    is_r = np.array([p.set == "reasoning" for p in ps.prompts])
    ad = smol.adapter
    res = extract_internals(smol, ps, batch_size=bs, block_resamples=0)
    assert res.pairs_mode == "exact" and res.d_rep_mode == "exact"
    _check(res, ref, is_r, ad.n_heads, ad.head_dim)


# ------------------------------------------------------------------ every tiny architecture
@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_tiny_every_statistic_equals_the_float64_reference(arch):
    lm = load_model(f"tiny-{arch}")
    ps = _set(5)
    ref = _reference_vectors(lm, ps)
    is_r = np.array([p.set == "reasoning" for p in ps.prompts])
    for bs in (1, 7, 32):
        res = extract_internals(lm, ps, batch_size=bs, block_resamples=0, backend="torch" if bs == 1 else None)
        _check(res, ref, is_r, lm.adapter.n_heads, lm.adapter.head_dim)


def test_token_budget_and_window_do_not_change_the_numbers(monkeypatch):
    from cape_hpc.internals import extract as ex

    lm = load_model("tiny-qwen2")
    ps = load_prompts().subset(16)
    a = extract_internals(lm, ps, batch_size=8, block_resamples=20)
    monkeypatch.setattr(ex, "WINDOW", 7)                            # tokenised / bucketed in windows of 7
    b = extract_internals(lm, ps, batch_size=32, token_budget=40, block_resamples=20)
    for x, y in ((a.layer_coupling, b.layer_coupling), (a.layer_pairwise_mean, b.layer_pairwise_mean),
                 (a.d_rep, b.d_rep), (a.head_coupling, b.head_coupling)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.blocks.pairs_below, b.blocks.pairs_below)
    np.testing.assert_array_equal(a.blocks.counts, b.blocks.counts)


def test_moment_stage_equals_the_moments_of_all_rows():
    """Batches of 3, 5, 7, 2, 11 and 4 rows through a 9-row stage (flushes mid-stream; the 11-row
    batch goes straight in): after the flush m1 and m2 equal the float64 sums of every row shifted by
    the first batch's mean, and before the first flush nothing has been added."""
    from cape_hpc.internals.accumulators import MomentStage

    rng = np.random.default_rng(4)
    L, k = 2, 6
    batches = [rng.normal(size=(L, n, k)).astype(np.float32) + 3.0 for n in (3, 5, 7, 2, 11, 4)]
    stage = MomentStage(rows=9)
    shift, m1, m2 = (torch.zeros(L, k, dtype=torch.float64), torch.zeros(L, k, dtype=torch.float64),
                     torch.zeros(L, k, k, dtype=torch.float64))
    for i, b in enumerate(batches):
        stage.add(torch.from_numpy(b), shift, m1, m2, i == 0)
        if i == 1:
            assert stage.fill == 8 and not m2.any()
    stage.flush(shift, m1, m2)
    assert stage.fill == 0
    c = batches[0].astype(np.float64).mean(axis=1)
    Xc = np.concatenate(batches, axis=1).astype(np.float64) - c[:, None]
    np.testing.assert_allclose(shift.numpy(), c, rtol=1e-15)
    np.testing.assert_allclose(m1.numpy(), Xc.sum(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m2.numpy(), np.einsum("lni,lnj->lij", Xc, Xc), rtol=1e-12, atol=1e-12)


def test_max_prompt_tokens_truncates_from_the_left_with_a_warning():
    lm = load_model("tiny-llama")
    ps = PromptSet([Prompt(str(i), "word " * (5 + 3 * i), "ab"[i % 2]) for i in range(6)], path="<t>", sha256="0")
    with pytest.warns(UserWarning, match="maximum prompt length of 8 tokens"):
        res = extract_internals(lm, ps, max_prompt_tokens=8, batch_size=4)
    ids = [lm.tokenizer(p.text)["input_ids"] for p in ps.prompts]
    assert res.n_truncated == sum(len(i) > 8 for i in ids) > 0
    short = PromptSet([Prompt(p.id, p.text, p.set) for p in ps.prompts], path="<t>", sha256="0")
    assert extract_internals(lm, short, batch_size=4).n_truncated == 0


# ------------------------------------------------------------------ blocks and the block bootstrap
def test_blocks_are_a_seeded_hash_of_the_id():
    import hashlib

    from cape_hpc.internals.blocks import assign_blocks

    ids = [f"p{i}" for i in range(50)]
    got = assign_blocks(ids, 7, seed=3)
    want = [int(hashlib.sha256(f"3:{i}".encode()).hexdigest(), 16) % 7 for i in ids]
    assert got.tolist() == want
    assert assign_blocks(ids[::-1], 7, seed=3).tolist() == want[::-1]      # position-free
    assert assign_blocks(ids, 7, seed=4).tolist() != want


def _direct_bootstrap(R, T, bR, bT, G, B, seed):
    """Stack the stored vectors of the drawn blocks (with repetition) and recompute."""
    from cape_kernels.resample import resample_indices

    idx = resample_indices(None, B, seed, n=G)
    out = np.full((B, 3), np.nan)
    for r in range(B):
        rr = np.concatenate([np.flatnonzero(bR == g) for g in idx[r]])
        tt = np.concatenate([np.flatnonzero(bT == g) for g in idx[r]])
        if len(rr) and len(tt):
            Rs, Ts = R[rr], T[tt]
            m, f = _pairs(Rs, Ts)
            out[r] = _cos(Rs.mean(0), Ts.mean(0)), m, f
    return out


@pytest.mark.parametrize("D, gram_bytes", [(5, None), (16, None), (16, 0)],
                         ids=["weighted-sums", "gram", "gram-over-budget"])
def test_block_bootstrap_equals_a_direct_bootstrap_of_stacked_vectors(D, gram_bytes, monkeypatch):
    """Constructed vectors with many pairs below -0.5: the weighted-sum statistics of every
    resample equal the statistics of the stacked vectors of the drawn blocks -- through the weighted
    sums (G > D, or Grams over ``GRAM_BYTES``) and through the [G, G] Gram matrices (G <= D)."""
    from cape_hpc.internals import blocks as blocks_mod
    from cape_hpc.internals.blocks import BlockBootstrap
    from cape_hpc.stats import percentile_interval

    if gram_bytes is not None:
        monkeypatch.setattr(blocks_mod, "GRAM_BYTES", gram_bytes)
    rng = np.random.default_rng(5)
    G, B, seed = 6, 120, 11
    v = rng.normal(size=D)
    R = v + rng.normal(size=(40, D)) * 1.2
    T = -v + rng.normal(size=(33, D)) * 1.2
    bR, bT = rng.integers(0, G, 40), rng.integers(0, G, 33)
    counts = np.stack([np.bincount(bR, minlength=G), np.bincount(bT, minlength=G)])
    sums = np.zeros((1, 2, G, D))
    units = np.zeros((1, 2, G, D))
    below = np.zeros((1, G, G), dtype=np.int64)
    for s, (X, b) in enumerate(((R, bR), (T, bT))):
        np.add.at(sums[0, s], b, X)
        np.add.at(units[0, s], b, X / np.linalg.norm(X, axis=1, keepdims=True))
    C = (R / np.linalg.norm(R, axis=1, keepdims=True)) @ (T / np.linalg.norm(T, axis=1, keepdims=True)).T
    np.add.at(below[0], (bR[:, None].repeat(33, 1), bT[None, :].repeat(40, 0)), (C < -0.5).astype(np.int64))
    assert 0.2 < (C < -0.5).mean() < 0.9
    bb = BlockBootstrap(counts, B, seed, 0.9)
    got = np.column_stack([bb.coupling(sums)[:, 0], bb.pairwise_mean(units)[:, 0],
                           bb.fraction_below(below, counts)[:, 0]])
    want = _direct_bootstrap(R, T, bR, bT, G, B, seed)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    cis, n_valid = bb.intervals(got)
    for j in range(3):
        ok = np.isfinite(want[:, j])
        assert n_valid[j] == ok.sum()
        ref = percentile_interval(want[ok, j], 0.9)
        assert (cis[j].low, cis[j].high) == pytest.approx((ref.low, ref.high), rel=1e-10)


def test_extraction_block_intervals_equal_the_direct_bootstrap_of_kept_vectors(tmp_path):
    """End to end: the intervals in the result equal the direct bootstrap over the pooled vectors
    written by keep_pooled, resampling the same blocks with the same streams."""
    from cape_hpc.internals.pooled_store import read_pooled
    from cape_hpc.stats import percentile_interval

    lm = load_model("tiny-gpt_neox")
    ps = load_prompts().subset(24)
    out = tmp_path / "pooled.h5"
    res = extract_internals(lm, ps, n_blocks=5, block_seed=2, block_resamples=80, keep_pooled=str(out),
                            ci_level=0.9)
    kept = read_pooled(out)
    X = kept["residual"].astype(np.float64)                         # [L, N, D], rows R then T
    n_r = res.n_r
    blk = kept["block"]
    assert res.blocks.n_nonempty == len(set(blk.tolist())) and res.blocks.counts.sum() == res.n_prompts
    for l in range(res.n_layers):
        want = _direct_bootstrap(X[l, :n_r], X[l, n_r:], blk[:n_r], blk[n_r:], 5, 80, 2)
        row = res.layers[l]
        for j, ci in enumerate((row.coupling_ci, row.pairwise_mean_ci, row.competing_fraction_ci)):
            ok = np.isfinite(want[:, j])
            ref = percentile_interval(want[ok, j], 0.9)
            assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high), abs=2e-6), (l, j)
            assert row.ci_n_valid == ok.sum()
    # per-block sums are the kept vectors summed by block
    np.testing.assert_allclose(res.blocks.layer_sums[:, 0].sum(1), X[:, :n_r].sum(1), rtol=1e-6, atol=1e-5)
    assert all(h.coupling_ci.defined and h.ci_n_valid == 80 for h in res.heads)


# ------------------------------------------------------------------ reservoir and sketch
def test_reservoir_estimate_lies_within_its_standard_error_of_the_known_fraction():
    """Unit vectors with a known share of pairs below -0.5 streamed through the pair state in
    batches: exact mode counts them exactly; a reservoir of 60 per set (of 400 and 300) estimates
    the share within a few of its reported standard errors, over several seeds."""
    from cape_kernels.streaming import count_pairs_below

    from cape_hpc.internals.accumulators import PairState

    rng = np.random.default_rng(0)
    D, G = 4, 4
    v = np.eye(D)[0]
    R = v + rng.normal(size=(400, D)) * 0.9
    T = np.where(rng.random((300, 1)) < 0.5, -v, v) + rng.normal(size=(300, D)) * 0.9
    unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)   # noqa: E731
    truth = float((unit(R) @ unit(T).T < -0.5).mean())
    assert 0.15 < truth < 0.6
    bR, bT = rng.integers(0, G, 400), rng.integers(0, G, 300)
    to_dev = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64)   # noqa: E731

    def stream(budget, seed):
        ps = PairState.create(1, D, 400, 300, G, budget, seed, "cpu")
        for k in range(0, 400, 37):                                 # batches mix R and T rows
            r = np.arange(k, min(k + 37, 400))
            t = np.arange(k * 3 // 4, min((k + 37) * 3 // 4, 300))
            ctx = ps.prepare(bR[r], bT[t], to_dev)
            ps.update(0, torch.as_tensor(unit(R[r]), dtype=torch.float32),
                      torch.as_tensor(unit(T[t]), dtype=torch.float32), ctx, count_pairs_below)
        return ps, ps.finish(0, count_pairs_below, 400, 300)

    ps, (below, se, pc) = stream(10 ** 9, 0)
    assert ps.mode == "exact" and se == 0.0
    assert below.sum() / (400 * 300) == pytest.approx(truth, abs=1e-12)
    np.testing.assert_array_equal(pc, np.stack([np.bincount(bR, minlength=G), np.bincount(bT, minlength=G)]))
    z = []
    for seed in range(8):
        ps, (below, se, pc) = stream(2 * 60 * D * 4, seed)
        assert ps.mode == "reservoir" and ps.capacity == (60, 60) and pc.sum() == 120
        est = below.sum() / (60 * 60)
        assert 0 < se < 0.2
        z.append((est - truth) / se)
    z = np.abs(np.array(z))
    assert z.max() < 4 and z.mean() < 1.6, z


def test_reservoir_is_algorithm_r():
    """Each item ends in the reservoir with probability capacity / n (checked over many seeds)."""
    from cape_hpc.internals.accumulators import reservoir_slots

    n, cap, runs = 30, 5, 3000
    hits = np.zeros(n)
    for s in range(runs):
        rng = np.random.default_rng(s)
        res = -np.ones(cap, dtype=int)
        seen = 0
        for b in (7, 1, 12, 10):                                   # batches of uneven size
            slots = reservoir_slots(rng, seen, b, cap)
            for k, sl in enumerate(slots):
                if sl >= 0:
                    res[sl] = seen + k
            seen += b
        hits[res] += 1
    p = hits / runs
    assert np.abs(p - cap / n).max() < 4 * math.sqrt(cap / n * (1 - cap / n) / runs)


def test_d_rep_sketch_lies_within_its_standard_error():
    from cape_hpc.internals.accumulators import sketch_matrix, sketch_participation_ratio

    rng = np.random.default_rng(1)
    D = 300
    lam = 1.0 / np.arange(1, D + 1) ** 0.7
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    C = (Q * lam) @ Q.T
    truth = lam.sum() ** 2 / (lam ** 2).sum()
    z = []
    for seed in range(6):
        Om = sketch_matrix(D, 128, seed, "cpu").numpy()
        est, se = sketch_participation_ratio(Om.T @ C @ Om)
        assert 0 < se < 0.5 * truth
        z.append((est - truth) / se)
    assert np.abs(z).max() < 4, z


def test_sketch_mode_in_an_extraction_is_close_to_exact():
    lm = load_model("tiny-llama")
    ps = load_prompts().subset(40)
    ex = extract_internals(lm, ps, block_resamples=0)
    sk = extract_internals(lm, ps, block_resamples=0, d_rep_mode="sketch", d_rep_sketch=16)
    assert sk.d_rep_mode == "sketch" and sk.d_rep_sketch == 16
    se = np.array([r.d_rep_se for r in sk.layers])
    assert (se > 0).all() and (np.abs(sk.d_rep - ex.d_rep) < 5 * se).all(), (sk.d_rep, ex.d_rep, se)
    np.testing.assert_allclose(sk.layer_coupling, ex.layer_coupling, atol=1e-12)


# ------------------------------------------------------------------ memory
def _many(n):
    return PromptSet([Prompt(str(i), f"prompt number {i} " * (1 + i % 3), "ab"[i % 2]) for i in range(n)],
                     path="<mem>", sha256="0")


def test_state_size_does_not_depend_on_the_prompt_count():
    lm = load_model("tiny-llama")
    a = extract_internals(lm, _many(64), pair_budget_mb=0.01, block_resamples=0, batch_size=32)
    b = extract_internals(lm, _many(512), pair_budget_mb=0.01, block_resamples=0, batch_size=32)
    assert a.pairs_mode == b.pairs_mode == "reservoir" and a.reservoir_size == b.reservoir_size
    assert a.state_bytes == b.state_bytes > 0
    # exact mode: the resident vectors are within the budget
    c = extract_internals(lm, _many(64), block_resamples=0)
    L, D = c.n_layers, c.d_model
    assert c.pairs_mode == "exact" and c.state_bytes - a.state_bytes < 64 * L * D * 4 + 2 ** 20


# ------------------------------------------------------------------ keep_pooled, options, CLI
def test_keep_pooled_writes_chunked_hdf5_and_refuses_to_overwrite(tmp_path):
    import h5py

    lm = load_model("tiny-gpt2")
    ps = load_prompts().subset(12)
    out = tmp_path / "p.h5"
    res = extract_internals(lm, ps, keep_pooled=str(out), batch_size=5)
    with h5py.File(out) as f:
        d = f["residual"]
        assert d.shape == (res.n_layers, res.n_prompts, res.d_model) and d.chunks is not None
        assert d.maxshape[1] is None and f["final"].shape == (res.n_prompts, res.d_model)
        X = d[()]
        order = f["order"][()]
    ref = _reference_vectors(lm, PromptSet([ps.prompts[i] for i in order], path=ps.path, sha256=ps.sha256))
    np.testing.assert_allclose(X.transpose(1, 0, 2), ref[0], atol=2e-5 * np.abs(ref[0]).max())
    with pytest.raises(DataError, match="p.h5: exists.*--keep-pooled"):
        extract_internals(lm, ps, keep_pooled=str(out))
    extract_internals(lm, ps, keep_pooled=str(out), overwrite=True)


def test_empty_taps_is_an_option_error_naming_taps(capsys):
    from cape_hpc.cli import main

    with pytest.raises(OptionError, match="--taps"):
        extract_internals(load_model("tiny-gpt2"), load_prompts().subset(4), taps=",")
    assert main(["internals", "--model", "tiny-gpt2", "--taps", ","]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--taps" in err


def test_cli_shows_intervals_and_modes(capsys):
    from cape_hpc.cli import main

    assert main(["internals", "--model", "tiny-olmo", "--max-prompts", "16", "--blocks", "4",
                 "--block-resamples", "50", "--token-budget", "64", "--pair-budget-mb", "0.001"]) == 0
    text = capsys.readouterr().out
    assert "reservoir" in text and "coupling 95% CI" in text and "blocks: 4" in text


def test_result_with_block_stats_round_trips(tmp_path):
    from roundtrip import assert_roundtrip

    lm = load_model("tiny-phi")
    res = extract_internals(lm, load_prompts().subset(10), n_blocks=3, block_resamples=30, pair_budget_mb=0.001)
    back = assert_roundtrip(res, tmp_path, res.group)
    np.testing.assert_array_equal(back.blocks.layer_sums, res.blocks.layer_sums)
    np.testing.assert_array_equal(back.blocks.pairs_below, res.blocks.pairs_below)
    assert back.layers[1].coupling_ci == res.layers[1].coupling_ci and back.pairs_mode == "reservoir"
    part = extract_internals(lm, load_prompts().subset(10), taps=["heads"], block_resamples=0)
    back = assert_roundtrip(part, tmp_path / "b", part.group)
    assert back.blocks.layer_sums.shape[0] == 0 and np.isnan(back.layer_coupling).all()
