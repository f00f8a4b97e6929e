"""Streaming extraction of model internals and the statistics of docs/METHODS.md §3.

One forward pass per length-bucketed, left-padded batch, through the one tracing primitive
(``cape_hpc.models.tracing.Trace``; points ``block.i``, ``heads.i``, ``final``), stopped after the
last point a tap needs.  The callbacks reduce each tap into the device-resident streaming state of
``cape_hpc.internals.accumulators`` (docs/METHODS.md §3.7) with ``cape_kernels.pool_accumulate_``
(pool + normalise + accumulate per (set, block) slot) and ``cape_kernels.count_pairs_below`` (the
pairs below -0.5, per block pair); nothing in the pass synchronises with the host.  The state does
not depend on the number of prompts (the exact pair count's resident unit vectors are bounded by
``pair_budget_mb``; beyond it a seeded reservoir per set).  One transfer to the host at the end;
then every statistic, its block-bootstrap interval (§3.8, ``cape_hpc.internals.blocks``) and the
:class:`~cape_hpc.internals.results.BlockStats` are computed from the sums.

Prompts are tokenised and batched in windows of ``WINDOW`` prompts (length buckets within a window),
so host memory does not grow with the prompt count either.  ``keep_pooled`` (opt-in) writes every
pooled vector to an HDF5 file batch by batch (``cape_hpc.internals.pooled_store``).
"""
from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cape_hpc.errors import DataError
from cape_hpc.internals.accumulators import (PairState, StreamState, covariance, sketch_matrix, sketch_participation_ratio,
                                             streaming_ops, unit_rows, update_moments)
from cape_hpc.internals.blocks import BlockBootstrap, assign_blocks, weighted_cosine
from cape_hpc.internals.options import ExtractOptions
from cape_hpc.internals.prompts import PromptSet
from cape_hpc.internals.results import (BOTTLENECK_CAVEAT, COMPETING_THRESHOLD, TAPS, BlockStats, Bottleneck,
                                        HeadRow, HeadSummary, InternalsResult, LayerRow, PcaRow, store_name)
from cape_hpc.models.batching import forward_kwargs, left_pad, pad_id, token_limit, tokenize
from cape_hpc.models.tracing import Trace, on_device
from cape_hpc.schema import ConfidenceInterval, Provenance

__all__ = ["extract_internals", "extract_internals_pooled", "PooledStates", "participation_ratio",
           "pca_curve", "choose_sets", "InternalsResult", "TAPS", "store_name", "tokenize",
           "left_pad", "forward_kwargs", "pad_id", "WINDOW"]

#: prompts tokenised and length-bucketed together (bounds the host's token lists)
WINDOW = 4096


@dataclass
class PooledStates:
    """The pooled vectors of one extraction, read back from its ``keep_pooled`` file (tests,
    benchmarks): ``residual`` [L, N, D] float32 (empty without the residual tap), ``final`` [N, D]
    or None, ``head_sums`` [2, L, H * head_dim] float64 (R and T sums) or None, ``order``: the
    prompt index of each row (R first, then T)."""

    residual: torch.Tensor
    final: torch.Tensor | None
    head_sums: torch.Tensor | None
    order: list[int]


# ----------------------------------------------------------------------------------- maths
def participation_ratio(X: torch.Tensor) -> float:
    """d_rep of the rows of X (float64, docs/METHODS.md §3.6) through the smaller of the Gram and
    covariance matrices and ``cape_kernels.participation_ratio``.  (The extraction itself uses the
    streamed second moments; this is the direct form.)"""
    if X.shape[0] < 2:
        return float("nan")
    X = X.to(torch.float64)
    X = X - X.mean(dim=0, keepdim=True)
    G = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    import cape_kernels as ck

    return ck.participation_ratio(G.numpy())


def pca_curve(C: np.ndarray, n: int, m_r: np.ndarray, m_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos(P_k m_R, P_k m_T), k = 1 .. rank, with P_k the projection on the top-k eigenvectors of
    the centred scatter C [D, D] of n stacked vectors (rank <= n - 1; eigenvalues below 1e-12 of
    the largest are dropped).  docs/METHODS.md §3.5."""
    lam, V = np.linalg.eigh(C)
    lam, V = lam[::-1], V[:, ::-1]
    cap = max(0, min(int(n) - 1, C.shape[0]))
    keep = np.zeros(lam.shape, dtype=bool)
    if lam.size and lam[0] > 0:
        keep[:cap] = lam[:cap] > lam[0] * 1e-12
    V = V[:, keep]
    a, b = V.T @ m_r, V.T @ m_t
    num = np.cumsum(a * b)
    den = np.sqrt(np.cumsum(a * a) * np.cumsum(b * b))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.arange(1, V.shape[1] + 1), np.clip(cos, -1, 1)


def choose_sets(prompts: PromptSet) -> tuple[str, str]:
    sets = list(prompts.sets)
    if "reasoning" in sets and "truthfulness" in sets:
        return "reasoning", "truthfulness"
    if len(sets) < 2:
        raise DataError(f"{prompts.path}: coupling needs two prompt sets (field 'set'), found "
                        f"{sets or 'none'}")
    return sets[0], sets[1]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(weighted_cosine(np.asarray(a, np.float64), np.asarray(b, np.float64)))


# ----------------------------------------------------------------------------------- extraction
def extract_internals(loaded, prompts: PromptSet, opts: ExtractOptions | None = None, *,
                      overwrite: bool = False, **changes: Any) -> InternalsResult:
    """Stream ``prompts`` through ``loaded`` and compute every statistic of docs/METHODS.md §3.

    ``opts`` (defaults when None), with any field overridden by keyword (``batch_size=4``: validated
    by :class:`ExtractOptions`).  Prints nothing and writes no file (except ``keep_pooled``, which
    refuses an existing file unless ``overwrite``).  Over-long prompts are truncated (a
    ``UserWarning``).
    """
    opts = opts or ExtractOptions()
    if changes:
        opts = opts.replace(**changes)
    return _Extraction(loaded, prompts, opts, overwrite).run()


def extract_internals_pooled(loaded, prompts: PromptSet, opts: ExtractOptions | None = None,
                             **changes: Any) -> tuple[InternalsResult, PooledStates]:
    """``extract_internals`` with ``keep_pooled`` to a temporary file, read back as
    :class:`PooledStates` (tests and benchmarks; the result is the same)."""
    from cape_hpc.internals.pooled_store import read_pooled

    opts = opts or ExtractOptions()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pooled.h5"
        res = extract_internals(loaded, prompts, opts, **{**changes, "keep_pooled": str(path)})
        data = read_pooled(path)
    hs = None
    if "heads" in res.taps:
        hs = torch.as_tensor(res.blocks.head_sums.sum(axis=2).transpose(1, 0, 2).copy())   # [2, L, H*dh]
    residual = torch.as_tensor(data["residual"]) if "residual" in data else torch.empty(0)
    final = torch.as_tensor(data["final"]) if "final" in data else None
    return res, PooledStates(residual=residual, final=final, head_sums=hs, order=[int(i) for i in data["order"]])


class _Extraction:
    def __init__(self, loaded, prompts: PromptSet, opts: ExtractOptions, overwrite: bool):
        self.loaded, self.opts, self.overwrite = loaded, opts, overwrite
        prompts = prompts.subset(opts.max_prompts)
        if len(prompts) == 0:
            raise DataError(f"{prompts.path}: no prompts")
        self.prompts = prompts
        set_r, set_t = opts.sets or choose_sets(prompts)
        for s in (set_r, set_t):
            if not prompts.select(s):
                raise DataError(f"{prompts.path}: no prompt has set {s!r}")
        self.set_r, self.set_t = set_r, set_t

    # ------------------------------------------------------------------ set-up
    def _setup(self):
        opts, ad = self.opts, self.loaded.adapter
        P = self.prompts.prompts
        self.order = ([i for i, p in enumerate(P) if p.set == self.set_r]
                      + [i for i, p in enumerate(P) if p.set == self.set_t])
        self.n_r = sum(1 for p in P if p.set == self.set_r)
        self.n_t = len(self.order) - self.n_r
        self.N = len(self.order)
        self.G = G = int(opts.n_blocks)
        self.block = assign_blocks([P[i].id for i in self.order], G, opts.block_seed)
        self.set_of = np.zeros(self.N, dtype=np.int64)
        self.set_of[self.n_r:] = 1
        self.slot = self.set_of * G + self.block
        self.counts = np.zeros((2, G), dtype=np.int64)
        np.add.at(self.counts, (self.set_of, self.block), 1)

        self.device = next(self.loaded.model.parameters()).device
        self.L, self.H, self.dh, self.D = ad.n_layers, ad.n_heads, ad.head_dim, ad.d_model
        taps = list(opts.taps)
        self.want_res, self.want_heads = "residual" in taps, "heads" in taps
        self.want_final = "final" in taps or "logits" in taps
        self.ops = streaming_ops(opts.backend or None, self.device)
        self.backend = self.ops.name

        L, D, dev, f64 = self.L, self.D, self.device, torch.float64
        st = StreamState(G=G)
        if self.want_res:
            st.layer_sums = torch.zeros((L, 2 * G, D), dtype=f64, device=dev)
            st.layer_units = torch.zeros((L, 2 * G, D), dtype=f64, device=dev)
            k = D
            if opts.d_rep_mode == "sketch":
                k = int(opts.d_rep_sketch)
                st.omega = sketch_matrix(D, k, opts.block_seed, dev)
            st.shift = torch.zeros((L, k), dtype=f64, device=dev)
            st.m1 = torch.zeros((L, k), dtype=f64, device=dev)
            st.m2 = torch.zeros((L, k, k), dtype=f64, device=dev)
            st.pairs = PairState.create(L, D, self.n_r, self.n_t, G, int(opts.pair_budget_mb * 2 ** 20),
                                        opts.block_seed, dev, COMPETING_THRESHOLD)
        if self.want_heads:
            st.head_sums = torch.zeros((L, 2 * G, self.H * self.dh), dtype=f64, device=dev)
        if self.want_final:
            st.final_sums = torch.zeros((2 * G, D), dtype=f64, device=dev)
            st.final_shift = torch.zeros(D, dtype=f64, device=dev)
            st.final_m1 = torch.zeros(D, dtype=f64, device=dev)
            st.final_m2 = torch.zeros((D, D), dtype=f64, device=dev)
        self.state = st

        self.writer = None
        if opts.keep_pooled:
            from cape_hpc.internals.pooled_store import PooledWriter

            P = self.prompts.prompts
            self.writer = PooledWriter(
                opts.keep_pooled, n_rows=self.N, n_layers=L, d_model=D, residual=self.want_res,
                final=self.want_final, order=self.order, ids=[P[i].id for i in self.order],
                sets=[P[i].set for i in self.order], blocks=self.block, force=self.overwrite,
                attrs={"model": str(self.loaded.name), "pooling": opts.pooling, "set_r": self.set_r,
                       "set_t": self.set_t, "n_r": self.n_r, "n_t": self.n_t})

    def _to_dev(self, a) -> torch.Tensor:
        t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    # ------------------------------------------------------------------ callbacks
    def _callbacks(self):
        st, opts = self.state, self.opts
        pooling, ops = opts.pooling, self.ops
        cbs = {}

        def block_cb(i):
            def fn(x, batch):
                e = batch.extra
                pooled = ops.pool_accumulate_(x, batch.attention_mask, pooling, e["slot"], st.layer_sums[i], st.layer_units[i])
                y = pooled if st.omega is None else pooled.to(torch.float64) @ st.omega
                update_moments(y, st.shift[i], st.m1[i], st.m2[i], e["first"])
                u = unit_rows(pooled)
                st.pairs.update(i, u.index_select(0, e["r_pos"]), u.index_select(0, e["t_pos"]), e["pairs"], ops.count_pairs_below)
                if "keep" in e:
                    e["keep"]["residual"][i] = pooled
                return None
            return fn

        def head_cb(i):
            def fn(x, batch):
                ops.pool_accumulate_(x, batch.attention_mask, pooling, batch.extra["slot"], st.head_sums[i], None)
                return None
            return fn

        def final_cb(x, batch):
            e = batch.extra
            pooled = ops.pool_accumulate_(x, batch.attention_mask, pooling, e["slot"], st.final_sums, None)
            update_moments(pooled, st.final_shift, st.final_m1, st.final_m2, e["first"])
            if "keep" in e:
                e["keep"]["final"] = pooled
            return None

        for i in range(self.L):
            if self.want_heads:
                cbs[f"heads.{i}"] = head_cb(i)
            if self.want_res:
                cbs[f"block.{i}"] = block_cb(i)
        if self.want_final:
            cbs["final"] = final_cb
        # a block of a device_map'd model may run elsewhere: its tensor comes to the state's device
        return {name: on_device(fn, self.device) for name, fn in cbs.items()}

    def _prepare(self, batch, rows: np.ndarray, first: bool) -> None:
        """Host-side integers of one batch (all known before the pass), moved to the device."""
        st, e = self.state, batch.extra
        e["first"] = first
        e["slot"] = self._to_dev(self.slot[rows])
        if self.writer is not None:
            e["keep"] = {"residual": [None] * self.L, "final": None}
        if not self.want_res:
            return
        is_r = rows < self.n_r
        r_pos, t_pos = np.flatnonzero(is_r), np.flatnonzero(~is_r)
        e["r_pos"], e["t_pos"] = self._to_dev(r_pos), self._to_dev(t_pos)
        e["pairs"] = st.pairs.prepare(self.block[rows[r_pos]], self.block[rows[t_pos]], self._to_dev)

    # ------------------------------------------------------------------ the pass
    def run(self) -> InternalsResult:
        self._setup()
        opts, P = self.opts, self.prompts.prompts
        n_trunc = 0
        ok = False
        try:
            with Trace(self.loaded, self._callbacks()) as tr:
                first = True
                for w0 in range(0, self.N, WINDOW):
                    w1 = min(self.N, w0 + WINDOW)
                    texts = [P[i].text for i in self.order[w0:w1]]
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        ids, truncated = tokenize(self.loaded, texts, max_tokens=opts.max_prompt_tokens)
                    n_trunc += len(truncated)
                    for w in caught:          # re-issued once for all windows below
                        if not issubclass(w.category, UserWarning) or "truncated" not in str(w.message):
                            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    for batch in tr.batches(ids, batch_size=opts.batch_size, token_budget=opts.token_budget):
                        rows = w0 + batch.rows.numpy()
                        self._prepare(batch, rows, first)
                        first = False
                        tr.forward(batch)
                        if self.writer is not None:
                            k = batch.extra["keep"]
                            res = torch.stack(k["residual"]).cpu().numpy() if self.want_res else None
                            fin = k["final"].cpu().numpy() if k["final"] is not None else None
                            self.writer.write(rows, res, fin)
            ok = True
        finally:
            if self.writer is not None:
                self.writer.close(ok)
        if n_trunc:
            limit = token_limit(self.loaded, self.opts.max_prompt_tokens)
            warnings.warn(limit.message(n_trunc, "prompt"), UserWarning, stacklevel=3)
        return self._finish(n_trunc)

    # ------------------------------------------------------------------ statistics
    def _finish(self, n_trunc: int) -> InternalsResult:
        st, opts, G, L, H, dh, D = self.state, self.opts, self.G, self.L, self.H, self.dh, self.D
        n_r, n_t, N = self.n_r, self.n_t, self.N
        nan = math.nan
        state_bytes = st.nbytes
        cpu = lambda t: None if t is None else t.to("cpu").numpy()   # noqa: E731 - the one transfer
        layer_sums, layer_units, head_sums = cpu(st.layer_sums), cpu(st.layer_units), cpu(st.head_sums)
        final_sums = cpu(st.final_sums)
        boot = BlockBootstrap(self.counts, int(opts.block_resamples), int(opts.block_seed), float(opts.ci_level))
        undefined = ConfidenceInterval.undefined(float(opts.ci_level))

        def cis(samples, k):
            if boot.n_resamples == 0:
                return [undefined] * k, np.zeros(k, dtype=np.int64)
            return boot.intervals(samples)

        blocks = BlockStats(n_blocks=G, seed=int(opts.block_seed), n_nonempty=int((self.counts.sum(0) > 0).sum()),
                            counts=self.counts.copy(), n_resamples=boot.n_resamples, level=float(opts.ci_level))
        layers = []
        pairs_mode, res_size = "exact", 0
        if self.want_res:
            ls = layer_sums.reshape(L, 2, G, D)
            us = layer_units.reshape(L, 2, G, D)
            ps = st.pairs
            got = [ps.finish(l, self.ops.count_pairs_below, n_r, n_t) for l in range(L)]
            below = np.stack([g[0] for g in got])
            se = np.array([g[1] for g in got])
            pair_counts = got[0][2]
            if ps.mode == "reservoir":
                pairs_mode, res_size = "reservoir", int(max(ps.capacity))
            blocks.layer_sums, blocks.layer_unit_sums = ls, us
            blocks.pairs_below, blocks.pair_counts = below.astype(np.int64), pair_counts
            SR, ST = ls[:, 0].sum(1), ls[:, 1].sum(1)
            UR, UT = us[:, 0].sum(1), us[:, 1].sum(1)
            coupling = weighted_cosine(SR, ST)
            pmean = np.einsum("ld,ld->l", UR, UT) / (n_r * n_t)
            npairs = float(pair_counts[0].sum() * pair_counts[1].sum())
            frac = below.reshape(L, -1).sum(1) / npairs
            m1, m2 = cpu(st.m1), cpu(st.m2)
            d_rep, d_se = np.full(L, nan), np.full(L, nan)
            import cape_kernels as ck

            for l in range(L):
                if N < 2:
                    continue
                C = covariance(torch.as_tensor(m1[l]), torch.as_tensor(m2[l]), N).numpy()
                if opts.d_rep_mode == "exact":
                    d_rep[l], d_se[l] = ck.participation_ratio(C), 0.0
                else:
                    d_rep[l], d_se[l] = sketch_participation_ratio(C)
            if boot.n_resamples:
                c_ci, c_n = cis(boot.coupling(ls), L)
                p_ci, _ = cis(boot.pairwise_mean(us), L)
                f_ci, _ = cis(boot.fraction_below(below, pair_counts), L)
            else:
                c_ci, c_n = cis(None, L)
                p_ci = f_ci = c_ci
            for l in range(L):
                layers.append(LayerRow(layer=l, coupling=float(coupling[l]), pairwise_mean=float(pmean[l]),
                                       competing_fraction=float(frac[l]), competes=bool(frac[l] > 0.5),
                                       d_rep=float(d_rep[l]), coupling_ci=c_ci[l], pairwise_mean_ci=p_ci[l],
                                       competing_fraction_ci=f_ci[l], ci_n_valid=int(c_n[l]),
                                       competing_fraction_se=float(se[l]), d_rep_se=float(d_se[l])))
        else:
            layers = [LayerRow(layer=l, coupling=nan, pairwise_mean=nan, competing_fraction=nan, competes=False,
                               d_rep=nan) for l in range(L)]
        if self.want_heads:
            hs = head_sums.reshape(L, 2, G, H * dh)
            blocks.head_sums = hs
            per = hs.reshape(L, 2, G, H, dh)
            head_c = weighted_cosine(per[:, 0].sum(1), per[:, 1].sum(1))            # [L, H]
            hsum = HeadSummary.of(head_c)
            stacked = per.transpose(0, 3, 1, 2, 4).reshape(L * H, 2, G, dh)
            h_ci, h_n = cis(boot.coupling(stacked) if boot.n_resamples else None, L * H)
            heads = [HeadRow(layer=l, head=h, coupling=float(head_c[l, h]), coupling_ci=h_ci[l * H + h],
                             ci_n_valid=int(h_n[l * H + h])) for l in range(L) for h in range(H)]
        else:
            hsum = HeadSummary()
            heads = [HeadRow(layer=l, head=h, coupling=nan) for l in range(L) for h in range(H)]
        bottleneck = Bottleneck()
        if self.want_final:
            fs = final_sums.reshape(2, G, D)
            blocks.final_sums = fs
            m_r, m_t = fs[0].sum(0) / n_r, fs[1].sum(0) / n_t
            logits = nan
            if "logits" in opts.taps:
                with torch.inference_mode():
                    mm = torch.as_tensor(np.stack([m_r, m_t]), device=self.device)
                    lg = self.loaded.adapter.unembed(mm).to("cpu", torch.float64).numpy()
                logits = _cos(lg[0], lg[1])
            C = covariance(st.final_m1, st.final_m2, N).numpy()
            k, kc = pca_curve(C, N, m_r, m_t)
            ad = self.loaded.adapter
            note = ("logit softcapping is non-linear: with mean pooling the logits coupling is of the mean state"
                    if opts.pooling == "mean" and ad.softcap and "logits" in opts.taps else "")
            bottleneck = Bottleneck(measured=True, hidden=_cos(m_r, m_t), logits=logits,
                                    pca=[PcaRow(int(a), float(b)) for a, b in zip(k, kc)],
                                    caveat=BOTTLENECK_CAVEAT, note=note)

        prov = Provenance(method="cape_hpc.internals.extract_internals", options=opts.to_dict(),
                          inputs={"prompts": self.prompts.sha256}, seed=int(opts.block_seed),
                          n_resamples=int(opts.block_resamples))
        lm = self.loaded
        return InternalsResult(
            model=lm.name, source=str(lm.source), revision=str(lm.revision), dtype=lm.dtype,
            backend=self.backend, pooling=opts.pooling, taps=list(opts.taps), set_r=self.set_r, set_t=self.set_t,
            n_prompts=N, n_r=n_r, n_t=n_t, n_truncated=n_trunc, prompt_set_sha256=self.prompts.sha256,
            n_layers=L, n_heads=H, head_dim=dh, d_model=D, layers=layers, heads=heads, head_summary=hsum,
            bottleneck=bottleneck, provenance=prov, complete=True, blocks=blocks, pairs_mode=pairs_mode,
            reservoir_size=res_size, d_rep_mode=opts.d_rep_mode,
            d_rep_sketch=int(opts.d_rep_sketch) if opts.d_rep_mode == "sketch" else 0, state_bytes=state_bytes)
