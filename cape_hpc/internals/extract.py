"""Streaming extraction of model internals and the statistics of docs/METHODS.md §3.

One forward pass per length-bucketed, left-padded batch, through the one tracing primitive
(``cape_hpc.models.tracing.Trace``; points ``block.i``, ``heads.i``, ``final``), stopped after the
last point a tap needs.  Each block and head point pools its tap into the batch's [layers, B, width]
buffer; the last point then reduces every layer at once into the device-resident streaming state of
``cape_hpc.internals.accumulators`` (docs/METHODS.md §3.7) with ``cape_kernels.pool_accumulate_``
(normalise + accumulate per (layer, set, block) slot), one batched moment update and
``cape_kernels.count_pairs_below`` (the pairs below -0.5, per block pair); nothing in the pass
synchronises with the host.  The state does not depend on the number of prompts (the exact pair
count's resident unit vectors are bounded by ``pair_budget_mb``; beyond it a seeded reservoir per
set).  Under a ``device_map`` each device its
blocks run on holds its blocks' state (``layer_devices``).  One transfer to the host at the end;
then every statistic and its block-bootstrap interval (§3.8) are computed from the sums, the
:class:`~cape_hpc.internals.results.BlockStats`, by the pure functions of
``cape_hpc.internals.statistics``.

Prompts are tokenised and batched in windows of ``WINDOW`` prompts (length buckets within a window),
so host memory does not grow with the prompt count either.  ``keep_pooled`` (opt-in) writes every
pooled vector to an HDF5 file batch by batch (``cape_hpc.internals.pooled_store``).
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cape_hpc import progress
from cape_hpc.errors import DataError
from cape_hpc.internals.accumulators import (PairState, StreamState, covariance, sketch_matrix, streaming_ops,
                                             unit_rows, update_moments)
from cape_hpc.internals.blocks import assign_blocks
from cape_hpc.internals.options import ExtractOptions
from cape_hpc.internals.prompts import PromptSet
from cape_hpc.internals.results import COMPETING_THRESHOLD, TAPS, BlockStats, Bottleneck, InternalsResult, store_name
from cape_hpc.internals.statistics import (bottleneck, d_rep_per_layer, empty_head_rows, empty_layer_rows,
                                           head_rows, layer_rows, pca_curve)
from cape_hpc.io.provenance import thread_inputs
from cape_hpc.models.batching import TokenRows, forward_kwargs, left_pad, pad_id, token_limit, tokenize
from cape_hpc.models.tracing import Trace, layer_devices, on_device, on_its_device, point_order
from cape_hpc.schema import Provenance
from cape_kernels.reference import acc_dtype

__all__ = ["extract_internals", "extract_internals_pooled", "PooledStates", "participation_ratio",
           "pca_curve", "choose_sets", "InternalsResult", "TAPS", "store_name", "tokenize",
           "left_pad", "forward_kwargs", "pad_id", "WINDOW"]

#: prompts tokenised and length-bucketed together (bounds the host's token lists; the batches, hence the
#: reservoir's draws, depend on it: changing it changes reservoir-mode numbers)
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


def choose_sets(prompts: PromptSet) -> tuple[str, str]:
    sets = list(prompts.sets)
    if "reasoning" in sets and "truthfulness" in sets:
        return "reasoning", "truthfulness"
    if len(sets) < 2:
        raise DataError(f"{prompts.path}: coupling needs two prompt sets (field 'set'), found "
                        f"{sets or 'none'}")
    return sets[0], sets[1]


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
        if len(prompts) == 0:
            raise DataError(f"{prompts.path}: no prompts")
        set_r, set_t = opts.sets or choose_sets(prompts)
        prompts = prompts.measured((set_r, set_t), opts.max_prompts)   # the budget goes to the two sets measured
        self.prompts = prompts
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
        self._place_state()

        self.writer = None
        if opts.keep_pooled:
            from cape_hpc.internals.pooled_store import PooledWriter

            P = self.prompts.prompts
            self.writer = PooledWriter(
                opts.keep_pooled, n_rows=self.N, n_layers=self.L, d_model=self.D, residual=self.want_res,
                final=self.want_final, order=self.order, ids=[P[i].id for i in self.order],
                sets=[P[i].set for i in self.order], blocks=self.block, force=self.overwrite,
                attrs={"model": str(self.loaded.name), "pooling": opts.pooling, "set_r": self.set_r,
                       "set_t": self.set_t, "n_r": self.n_r, "n_t": self.n_t})

    def _place_state(self) -> None:
        """One :class:`StreamState` per device the blocks run on (``layer_devices``: the model's
        device map), holding its blocks' rows (``local[i]``: block i's row there); the final state
        with the last block's.  One device (no device map): one state, as before."""
        self.layer_dev = layer_devices(self.loaded, self.device)
        self.final_dev = self.layer_dev[-1] if self.layer_dev else self.device
        devs = list(dict.fromkeys(self.layer_dev + [self.final_dev]))
        self.local = [self.layer_dev[:i].count(d) for i, d in enumerate(self.layer_dev)]
        self.states = {d: self._new_state(d, self.layer_dev.count(d), d == self.final_dev) for d in devs}
        self.dev_ops = {d: self.ops if d == self.device else streaming_ops(self.opts.backend or None, d)
                        for d in devs}

    def _new_state(self, dev, L: int, final: bool) -> StreamState:
        """The streaming state of ``L`` blocks (and of the final point when ``final``) on ``dev``."""
        opts, G, D, f64 = self.opts, self.G, self.D, torch.float64
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
                                        opts.block_seed, dev, COMPETING_THRESHOLD, budget_layers=self.L)
        if self.want_heads:
            st.head_sums = torch.zeros((L, 2 * G, self.H * self.dh), dtype=f64, device=dev)
        if self.want_final and final:
            st.final_sums = torch.zeros((2 * G, D), dtype=f64, device=dev)
            st.final_shift = torch.zeros(D, dtype=f64, device=dev)
            st.final_m1 = torch.zeros(D, dtype=f64, device=dev)
            st.final_m2 = torch.zeros((D, D), dtype=f64, device=dev)
        return st

    def _to_dev(self, a, dev) -> torch.Tensor:
        t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64)
        if dev.type == "cuda":
            return t.pin_memory().to(dev, non_blocking=True)
        return t.to(dev)

    # ------------------------------------------------------------------ callbacks
    def _callbacks(self):
        """Trace callbacks.  Block and head points only pool their tensor into the batch's buffer on
        the device of their state (``batch.extra["dev"][device]``; a tensor elsewhere is copied
        there, ``on_device``); the last point in forward order then reduces every layer's pooled
        rows of the batch at once (:meth:`_reduce_batch`)."""
        cbs, devs = {}, {}

        def pool_cb(i, buffer):
            dev, j = self.layer_dev[i], self.local[i]
            ops = self.dev_ops[dev]

            def fn(x, batch):
                self._pool_into(batch.extra["dev"][dev], buffer, j, x, ops)
            return fn

        dev_f = self.final_dev
        st_f, ops_f = self.states[dev_f], self.dev_ops[dev_f]

        def final_cb(x, batch):
            e, d = batch.extra, batch.extra["dev"][dev_f]
            pooled = ops_f.pool_accumulate_(x, d["mask"], self.opts.pooling, d["slot"], st_f.final_sums, None)
            update_moments(pooled, st_f.final_shift, st_f.final_m1, st_f.final_m2, e["first"])
            if "keep" in e:
                e["keep"]["final"] = pooled
            return None

        for i in range(self.L):
            if self.want_heads:
                cbs[f"heads.{i}"], devs[f"heads.{i}"] = pool_cb(i, "heads"), self.layer_dev[i]
            if self.want_res:
                cbs[f"block.{i}"], devs[f"block.{i}"] = pool_cb(i, "residual"), self.layer_dev[i]
        if self.want_final:
            cbs["final"], devs["final"] = final_cb, dev_f
        out = {name: on_device(fn, devs[name]) for name, fn in cbs.items()}
        last = max(out, key=lambda n: point_order(n, self.L))
        reduce = self._reduce_batch
        out[last] = [out[last], lambda x, batch: reduce(batch)]
        return out

    def _pool_into(self, d: dict, buffer: str, j: int, x: torch.Tensor, ops) -> None:
        """Layer j's pooled rows [B, width] of tensor ``x`` [B, S, width] into the batch's buffer
        ``d[buffer]`` [layers on this device, B, width] (allocated at the batch's first point, in the
        accumulation dtype of x): the last position of the left-padded batch (every row's last
        token), or the masked mean."""
        out = d.get(buffer)
        if out is None:
            out = d[buffer] = torch.empty((d["n_layers"], x.shape[0], x.shape[-1]), dtype=acc_dtype(x.dtype),
                                          device=x.device)
        if self.opts.pooling == "last":
            out[j].copy_(x[:, -1])
        else:
            out[j].copy_(ops.pool(x, d["mask"], "mean"))

    def _reduce_batch(self, batch) -> None:
        """The batch's pooled rows of every layer (the points' buffers [L_dev, B, width]) into the
        state of each device: one ``pool_accumulate_`` per tap (each (layer, set, block) its own
        slot), the moments of all layers in one batched product, the unit vectors at once, then the
        pair counts layer by layer.  No host synchronisation."""
        e = batch.extra
        for dev, st in self.states.items():
            d, ops = e["dev"][dev], self.dev_ops[dev]
            with on_its_device(dev):
                if "residual" in d:
                    self._reduce_residual(dev, st, ops, d, e)
                if "heads" in d:
                    h = d["heads"]
                    ops.pool_accumulate_(h.view(-1, 1, h.shape[-1]), None, "last", d["slots"],
                                         st.head_sums.view(-1, h.shape[-1]), None)

    def _reduce_residual(self, dev, st: StreamState, ops, d: dict, e: dict) -> None:
        """The residual buffer [L_dev, B, D] of one device into its state: sums and unit sums, the
        moments (or their sketch), the resident unit vectors and pair counts, the kept rows."""
        buf = d["residual"]
        n_l, B, D = buf.shape
        pooled = ops.pool_accumulate_(buf.view(n_l * B, 1, D), None, "last", d["slots"],
                                      st.layer_sums.view(-1, D), st.layer_units.view(-1, D)).view(n_l, B, D)
        y = pooled if st.omega is None else pooled.to(torch.float64) @ st.omega
        st.stage.add(y, st.shift, st.m1, st.m2, e["first"])
        u = unit_rows(pooled.view(n_l * B, D)).view(n_l, B, D)
        u_r, u_t = u.index_select(1, d["r_pos"]), u.index_select(1, d["t_pos"])
        for j in range(n_l):
            st.pairs.update(j, u_r[j], u_t[j], d["pairs"], ops.count_pairs_below)
        if "keep" in e:
            for i in (i for i, ld in enumerate(self.layer_dev) if ld == dev):
                e["keep"]["residual"][i] = pooled[self.local[i]]

    def _prepare(self, batch, rows: np.ndarray, first: bool) -> None:
        """Host-side integers of one batch (all known before the pass), moved to each state's
        device (``batch.extra["dev"][device]``)."""
        e = batch.extra
        e["first"] = first
        if self.writer is not None:
            e["keep"] = {"residual": [None] * self.L, "final": None}
        is_r = rows < self.n_r
        r_pos, t_pos = np.flatnonzero(is_r), np.flatnonzero(~is_r)
        e["dev"] = {dev: self._prepare_on(dev, st, batch.attention_mask, rows, r_pos, t_pos)
                    for dev, st in self.states.items()}

    def _prepare_on(self, dev, st: StreamState, mask: torch.Tensor, rows, r_pos, t_pos) -> dict:
        """One batch's slots, R / T positions, pair indices and attention mask on ``dev``, and each
        row's state slot in the points' buffers (``slots`` [layers on dev * B]: layer j's rows go to
        j * 2G + slot)."""
        def to_dev(a):
            return self._to_dev(a, dev)

        slot = self.slot[rows]
        n_l = self.layer_dev.count(dev)
        d = {"slot": to_dev(slot), "n_layers": n_l,
             "mask": mask if mask.device == dev else mask.to(dev, non_blocking=dev.type == "cuda")}
        if n_l and (self.want_res or self.want_heads):
            d["slots"] = to_dev((np.arange(n_l)[:, None] * (2 * self.G) + slot[None, :]).ravel())
        if self.want_res:
            d["r_pos"], d["t_pos"] = to_dev(r_pos), to_dev(t_pos)
            d["pairs"] = st.pairs.prepare(self.block[rows[r_pos]], self.block[rows[t_pos]], to_dev)
        return d

    # ------------------------------------------------------------------ the pass
    def run(self) -> InternalsResult:
        """The extraction.  (numba's kernels keep torch's CPU thread count: ``cape_kernels.numba_jit``
        starts numba's pool once per process and puts torch's count back.)"""
        self._setup()
        n_trunc = 0
        ok = False
        try:
            with Trace(self.loaded, self._callbacks()) as tr, \
                    progress.task("extracting internals", total=self.N, unit="prompt") as advance:
                self._first = True
                for w0 in range(0, self.N, WINDOW):
                    n_trunc += self._window(tr, w0, min(self.N, w0 + WINDOW), advance)
            for dev, st in self.states.items():
                if st.m2 is not None:
                    with on_its_device(dev):
                        st.stage.flush(st.shift, st.m1, st.m2)
            ok = True
        finally:
            if self.writer is not None:
                self.writer.close(ok)
        if n_trunc:
            limit = token_limit(self.loaded, self.opts.max_prompt_tokens)
            warnings.warn(limit.message(n_trunc, "prompt"), UserWarning, stacklevel=3)
        return self._finish(n_trunc)

    def _window(self, tr: Trace, w0: int, w1: int, advance) -> int:
        """Tokenise prompts ``order[w0:w1]`` (held as :class:`TokenRows`) and run their length-bucketed
        batches; returns how many were truncated.  Nothing of the window outlives it (token rows,
        batches), and ``advance`` gets each batch's size, a host-known count (no device
        synchronisation)."""
        P, opts = self.prompts.prompts, self.opts
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ids, truncated = tokenize(self.loaded, [P[i].text for i in self.order[w0:w1]],
                                      max_tokens=opts.max_prompt_tokens)
        ids = TokenRows(ids)              # the window's rows in two arrays, not one list per prompt
        for w in caught:          # the truncation warning is re-issued once for all windows by run()
            if not issubclass(w.category, UserWarning) or "truncated" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for batch in tr.batches(ids, batch_size=opts.batch_size, token_budget=opts.token_budget):
            rows = w0 + batch.rows.numpy()
            self._prepare(batch, rows, self._first)
            self._first = False
            tr.forward(batch)
            if self.writer is not None:
                k = batch.extra["keep"]
                res = _stack_host(k["residual"]) if self.want_res else None
                fin = k["final"].cpu().numpy() if k["final"] is not None else None
                self.writer.write(rows, res, fin)
            advance(batch.size)
            batch.extra.clear()           # the batch's device indices and kept tensors go now
        tr.batch = None
        return len(truncated)

    # ------------------------------------------------------------------ statistics
    def _block_stats(self) -> tuple[BlockStats, np.ndarray, str, int]:
        """The streaming state on the host (the one transfer) as :class:`BlockStats`, with the pair
        count's SE per layer [L], its mode and reservoir size."""
        opts, G, L = self.opts, self.G, self.L
        blocks = BlockStats(n_blocks=G, seed=int(opts.block_seed), n_nonempty=int((self.counts.sum(0) > 0).sum()),
                            counts=self.counts.copy(), n_resamples=int(opts.block_resamples),
                            level=float(opts.ci_level))
        pairs_se, pairs_mode, reservoir = np.zeros(L), "exact", 0
        if self.want_res:
            blocks.layer_sums = self._gathered("layer_sums").reshape(L, 2, G, self.D)
            blocks.layer_unit_sums = self._gathered("layer_units").reshape(L, 2, G, self.D)
            got = []
            for dev, j in zip(self.layer_dev, self.local):
                with on_its_device(dev):
                    got.append(self.states[dev].pairs.finish(j, self.dev_ops[dev].count_pairs_below,
                                                             self.n_r, self.n_t))
            blocks.pairs_below = np.stack([g[0] for g in got]).astype(np.int64)
            blocks.pair_counts = got[0][2]
            pairs_se = np.array([g[1] for g in got])
            pairs = self.states[self.final_dev].pairs
            if pairs.mode == "reservoir":
                pairs_mode, reservoir = "reservoir", int(max(pairs.capacity))
        if self.want_heads:
            blocks.head_sums = self._gathered("head_sums").reshape(L, 2, G, self.H * self.dh)
        if self.want_final:
            blocks.final_sums = _host(self.states[self.final_dev].final_sums).reshape(2, G, self.D)
        return blocks, pairs_se, pairs_mode, reservoir

    def _gathered(self, name: str) -> np.ndarray:
        """The per-block state tensor ``name`` of every device on the host, blocks in model order
        [L, ...] (the one reduction of the per-device state; one device: its tensor as is)."""
        parts = {dev: _host(getattr(st, name)) for dev, st in self.states.items()}
        if len(parts) == 1:
            return next(iter(parts.values()))
        return np.stack([parts[dev][j] for dev, j in zip(self.layer_dev, self.local)])

    def _unembed(self, means: np.ndarray) -> np.ndarray:
        """The model's unembedding of [2, D] mean final states -> [2, V] float64."""
        with torch.inference_mode():
            mm = torch.as_tensor(means, device=self.device)
            return self.loaded.adapter.unembed(mm).to("cpu", torch.float64).numpy()

    def _finish(self, n_trunc: int) -> InternalsResult:
        """Every statistic from the block statistics (``cape_hpc.internals.statistics``), and the result."""
        opts, L, H = self.opts, self.L, self.H
        st = self.states[self.final_dev]
        state_bytes = sum(s.nbytes for s in self.states.values())
        blocks, pairs_se, pairs_mode, reservoir = self._block_stats()
        layers = empty_layer_rows(L)
        if self.want_res:
            d_rep, d_se = d_rep_per_layer(self._gathered("m1"), self._gathered("m2"), self.N, opts.d_rep_mode)
            layers = layer_rows(blocks, d_rep, d_se, pairs_se)
        heads, hsum = head_rows(blocks, H) if self.want_heads else empty_head_rows(L, H)
        neck = Bottleneck()
        if self.want_final:
            logits = "logits" in opts.taps
            note = ("logit softcapping is non-linear: with mean pooling the logits coupling is of the mean state"
                    if opts.pooling == "mean" and self.loaded.adapter.softcap and logits else "")
            neck = bottleneck(blocks, covariance(st.final_m1, st.final_m2, self.N).numpy(),
                              self._unembed if logits else None, note)
        prov = Provenance(method="cape_hpc.internals.extract_internals", options=opts.to_dict(),
                          inputs={"prompts": self.prompts.sha256, **thread_inputs()}, seed=int(opts.block_seed),
                          n_resamples=int(opts.block_resamples))
        lm = self.loaded
        return InternalsResult(
            model=lm.name, source=str(lm.source), revision=str(lm.revision), dtype=lm.dtype,
            backend=self.backend, pooling=opts.pooling, taps=list(opts.taps), set_r=self.set_r, set_t=self.set_t,
            n_prompts=self.N, n_r=self.n_r, n_t=self.n_t, n_truncated=n_trunc, prompt_set_sha256=self.prompts.sha256,
            n_layers=L, n_heads=H, head_dim=self.dh, d_model=self.D, layers=layers, heads=heads, head_summary=hsum,
            bottleneck=neck, provenance=prov, complete=True, blocks=blocks, pairs_mode=pairs_mode,
            reservoir_size=reservoir, d_rep_mode=opts.d_rep_mode,
            d_rep_sketch=int(opts.d_rep_sketch) if opts.d_rep_mode == "sketch" else 0, state_bytes=state_bytes)


def _host(t: torch.Tensor) -> np.ndarray:
    """A state tensor on the host (numpy, its dtype)."""
    return t.to("cpu").numpy()


def _stack_host(rows: list[torch.Tensor]) -> np.ndarray:
    """Per-block tensors (on one device or several) stacked on the host [L, ...]."""
    if len({t.device for t in rows}) == 1:
        return torch.stack(rows).cpu().numpy()
    return torch.stack([t.cpu() for t in rows]).numpy()
