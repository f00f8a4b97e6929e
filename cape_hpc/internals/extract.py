"""Streaming extraction of model internals and the statistics of docs/METHODS.md §3.

One forward pass per left-padded batch.  Hooks pool each tap with ``cape_kernels.pooled_tap`` the
moment it is computed and keep only pooled vectors:

- ``residual``: the output of every decoder block, pooled -> ``[L, N, D]`` (kept: the pairwise
  statistics and d_rep need every prompt's vector);
- ``heads``: the input of every attention output projection ([heads * head_dim], the per-head
  outputs), pooled and summed per prompt set on the fly -> ``[L, H, head_dim]`` per set
  (only the set means are needed, so memory does not grow with the number of prompts);
- ``final``: the output of the final norm (what the unembedding reads) -> ``[N, D]``;
- ``logits``: the unembedding applied to the pooled final vectors (exact: it is linear, so the
  [S, vocab] logits of every position are never formed).

The forward pass is stopped (``StopForward`` raised from the hook) right after the last module any
tap needs: the unembedding over all positions never runs.  No activation cache exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cape_hpc.errors import DataError
from cape_hpc.internals.options import ExtractOptions
from cape_hpc.internals.prompts import PromptSet
from cape_hpc.internals.results import (BOTTLENECK_CAVEAT, COMPETING_THRESHOLD, TAPS, Bottleneck, HeadRow,
                                        HeadSummary, InternalsResult, LayerRow, PcaRow, store_name)
from cape_hpc.models.batching import StopForward, forward_kwargs, left_pad, pad_id, tokenize
from cape_hpc.schema import Provenance

__all__ = ["extract_internals", "extract_internals_pooled", "PooledStates", "participation_ratio",
           "pca_subspace_coupling", "choose_sets", "InternalsResult", "TAPS", "store_name", "tokenize",
           "left_pad", "forward_kwargs", "pad_id"]


@dataclass
class PooledStates:
    """The pooled vectors one extraction kept (not part of the result; for tests and benchmarks).

    ``residual`` [L, N, D] float32 (empty without the residual tap), ``final`` [N, D] or None,
    ``head_sums`` [2, L, H * head_dim] float64 (R and T sums) or None, ``order``: the prompt index
    of each row (R first, then T).
    """

    residual: torch.Tensor
    final: torch.Tensor | None
    head_sums: torch.Tensor | None
    order: list[int]


# ----------------------------------------------------------------------------------- maths
def _centred64(X: torch.Tensor) -> torch.Tensor:
    X = X.to(torch.float64)          # one copy, centred in place
    X -= X.mean(dim=0, keepdim=True)
    return X


def participation_ratio(X: torch.Tensor) -> float:
    """d_rep: (sum lambda)^2 / sum lambda^2 of the PCA eigenvalues of the rows of X (float64,
    docs/METHODS.md §3).  The nonzero eigenvalues of the covariance X^T X and of the Gram X X^T are
    the same, so the smaller of the two goes to the one participation-ratio implementation,
    ``cape_kernels.participation_ratio`` (covariance matrix -> (tr C)^2 / ||C||_F^2)."""
    if X.shape[0] < 2:
        return float("nan")
    X = _centred64(X)
    G = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    import cape_kernels as ck

    return ck.participation_ratio(G.numpy())


def pca_subspace_coupling(stack: torch.Tensor, m_r: torch.Tensor, m_t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """cos(P_k m_R, P_k m_T) for the top-k principal axes of the centred stack, k = 1 .. rank.

    The axes come from the eigen-decomposition of the smaller of the Gram and covariance matrices
    (no [N, D] singular-vector matrix is formed)."""
    X = _centred64(stack)
    N, D = X.shape
    if N <= D:
        lam, U = torch.linalg.eigh(X @ X.T)
        lam, U = lam.flip(0), U.flip(1)
        keep = lam > lam[0] * 1e-12 if lam.numel() and lam[0] > 0 else torch.zeros_like(lam, dtype=torch.bool)
        V = (X.T @ U[:, keep]) / torch.sqrt(lam[keep])       # [D, rank], orthonormal columns
    else:
        lam, V = torch.linalg.eigh(X.T @ X)
        lam, V = lam.flip(0), V.flip(1)
        keep = lam > lam[0] * 1e-12 if lam.numel() and lam[0] > 0 else torch.zeros_like(lam, dtype=torch.bool)
        V = V[:, keep]
    rank = int(V.shape[1])
    a = V.T @ m_r.to(torch.float64)
    b = V.T @ m_t.to(torch.float64)
    num = torch.cumsum(a * b, 0)
    den = torch.sqrt(torch.cumsum(a * a, 0) * torch.cumsum(b * b, 0))
    cos = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    return np.arange(1, rank + 1), cos.clamp(-1, 1).numpy()


def choose_sets(prompts: PromptSet) -> tuple[str, str]:
    sets = list(prompts.sets)
    if "reasoning" in sets and "truthfulness" in sets:
        return "reasoning", "truthfulness"
    if len(sets) < 2:
        raise DataError(f"{prompts.path}: coupling needs two prompt sets (field 'set'), found "
                        f"{sets or 'none'}")
    return sets[0], sets[1]


# ----------------------------------------------------------------------------------- extraction
def extract_internals(loaded, prompts: PromptSet, opts: ExtractOptions | None = None,
                      **changes: Any) -> InternalsResult:
    """Stream ``prompts`` through ``loaded`` and compute every statistic of docs/METHODS.md §3.

    ``opts`` (defaults when None), with any field overridden by keyword (``batch_size=4``: validated
    by :class:`ExtractOptions`).  Prints nothing and writes no file.  Over-long prompts are
    truncated (a ``UserWarning``).
    """
    return extract_internals_pooled(loaded, prompts, opts, **changes)[0]


def extract_internals_pooled(loaded, prompts: PromptSet, opts: ExtractOptions | None = None,
                             **changes: Any) -> tuple[InternalsResult, PooledStates]:
    """``extract_internals`` that also returns the pooled vectors it kept (:class:`PooledStates`)."""
    import cape_kernels as ck
    from cape_kernels import backends as kbackends

    opts = opts or ExtractOptions()
    if changes:
        opts = opts.replace(**changes)
    batch_size, pooling, taps, backend = opts.batch_size, opts.pooling, list(opts.taps), opts.backend
    if not taps:
        raise DataError("option '--taps': no tap selected")
    prompts = prompts.subset(opts.max_prompts)
    if len(prompts) == 0:
        raise DataError(f"{prompts.path}: no prompts")
    set_r, set_t = opts.sets or choose_sets(prompts)
    for s in (set_r, set_t):
        if not prompts.select(s):
            raise DataError(f"{prompts.path}: no prompt has set {s!r}")

    model, ad = loaded.model, loaded.adapter
    device = next(model.parameters()).device
    L, H, dh = ad.n_layers, ad.n_heads, ad.head_dim
    resolved = kbackends.resolve(backend or None, device.type)

    # rows: R first, then T, then anything else (so each set is a contiguous, contiguous-memory slice)
    order = ([i for i, p in enumerate(prompts.prompts) if p.set == set_r]
             + [i for i, p in enumerate(prompts.prompts) if p.set == set_t])
    n_r, n_t = len(prompts.select(set_r)), len(prompts.select(set_t))
    texts = [prompts.prompts[i].text for i in order]
    N = len(texts)
    ids, truncated = tokenize(loaded, texts)
    is_r = torch.zeros(N, dtype=torch.bool)
    is_r[:n_r] = True

    want_res, want_heads = "residual" in taps, "heads" in taps
    want_final = "final" in taps or "logits" in taps
    layer_buf = torch.empty((L, N, ad.d_model) if want_res else (0,), dtype=torch.float32)
    head_sum = torch.zeros((2, L, H * dh), dtype=torch.float64) if want_heads else None
    final_buf: torch.Tensor | None = None

    state: dict[str, Any] = {}
    last_layer_needed = L - 1

    def layer_hook(i):
        def hook(module, args, output):
            h = ad.hidden_of(output)
            if want_res:
                pooled = ck.pooled_tap(h, state["mask"], pooling, backend=backend)
                layer_buf[i, state["rows"]] = pooled.to("cpu", torch.float32)
            if not want_final and i == last_layer_needed:
                raise StopForward
        return hook

    def head_hook(i):
        def hook(module, args):
            x = args[0]
            pooled = ck.pooled_tap(x, state["mask"], pooling, backend=backend).to("cpu", torch.float64)
            r = state["is_r"]
            head_sum[0, i] += pooled[r].sum(0)
            head_sum[1, i] += pooled[~r].sum(0)
        return hook

    def final_hook(module, args, output):
        nonlocal final_buf
        h = ad.hidden_of(output)
        pooled = ck.pooled_tap(h, state["mask"], pooling, backend=backend).to("cpu", torch.float32)
        if final_buf is None:
            final_buf = torch.empty((N, pooled.shape[1]), dtype=torch.float32)
        final_buf[state["rows"]] = pooled
        raise StopForward

    handles = []
    try:
        for i, layer in enumerate(ad.layers):
            if want_res or (not want_final and i == last_layer_needed):
                handles.append(layer.register_forward_hook(layer_hook(i)))
            if want_heads:
                handles.append(ad.out_proj(i).register_forward_pre_hook(head_hook(i)))
        if want_final:
            handles.append(ad.final_module().register_forward_hook(final_hook))
        # batches of similar length (less padding); results go back to their rows
        by_len = sorted(range(N), key=lambda j: (len(ids[j]), j))
        pid = pad_id(loaded)
        with torch.inference_mode():
            for b0 in range(0, N, batch_size):
                rows = by_len[b0:b0 + batch_size]
                input_ids, mask, pos = left_pad([ids[j] for j in rows], pid)
                state["rows"] = torch.as_tensor(rows, dtype=torch.long)
                state["mask"] = mask.to(device)
                state["is_r"] = is_r[state["rows"]]
                try:
                    model(**forward_kwargs(loaded, input_ids, mask, pos))
                except StopForward:
                    pass
    finally:
        for h in handles:
            h.remove()
        state.clear()

    # ------------------------------------------------------------------ statistics
    nan = float("nan")
    layers = []
    for l in range(L):
        c = pm = pf = dr = nan
        if want_res:
            R, T = layer_buf[l, :n_r], layer_buf[l, n_r:n_r + n_t]
            c = float(ck.set_mean_cosine(R, T, backend=backend))
            st = ck.pairwise_cosine_stats(R, T, threshold=COMPETING_THRESHOLD, backend=backend)
            pm, pf = float(st.mean), float(st.frac_below)
            dr = participation_ratio(layer_buf[l, :n_r + n_t])
        layers.append(LayerRow(layer=l, coupling=c, pairwise_mean=pm, competing_fraction=pf,
                               competes=bool(pf > 0.5), d_rep=dr))
    if want_heads:
        sums = head_sum.view(2, L * H, dh)
        hc = ck.set_mean_cosine(sums[0][:, None, :], sums[1][:, None, :], backend=backend)
        head_c = hc.to(torch.float64).numpy().reshape(L, H)
        hsum = HeadSummary.of(head_c)
    else:
        head_c, hsum = np.full((L, H), np.nan), HeadSummary()
    heads = [HeadRow(layer=l, head=h, coupling=float(head_c[l, h])) for l in range(L) for h in range(H)]
    bottleneck = Bottleneck()
    if want_final and final_buf is not None:
        R, T = final_buf[:n_r], final_buf[n_r:n_r + n_t]
        m_r, m_t = R.to(torch.float64).mean(0), T.to(torch.float64).mean(0)
        logits = nan
        if "logits" in taps:
            with torch.inference_mode():
                lg = ad.unembed(torch.stack([m_r, m_t]).to(device)).to("cpu", torch.float64)
            logits = float(ck.set_mean_cosine(lg[0:1], lg[1:2], backend=backend))
        k, kc = pca_subspace_coupling(final_buf[:n_r + n_t], m_r, m_t)
        note = ("logit softcapping is non-linear: with mean pooling the logits coupling is of the mean state"
                if pooling == "mean" and ad.softcap and "logits" in taps else "")
        bottleneck = Bottleneck(measured=True, hidden=float(ck.set_mean_cosine(R, T, backend=backend)),
                                logits=logits, pca=[PcaRow(int(a), float(b)) for a, b in zip(k, kc)],
                                caveat=BOTTLENECK_CAVEAT, note=note)

    prov = Provenance(method="cape_hpc.internals.extract_internals", options=opts.to_dict(),
                      inputs={"prompts": prompts.sha256})
    res = InternalsResult(
        model=loaded.name, source=str(loaded.source), revision=str(loaded.revision), dtype=loaded.dtype,
        backend=resolved, pooling=pooling, taps=taps, set_r=set_r, set_t=set_t, n_prompts=N, n_r=n_r,
        n_t=n_t, n_truncated=len(truncated), prompt_set_sha256=prompts.sha256, n_layers=L, n_heads=H,
        head_dim=dh, d_model=ad.d_model, layers=layers, heads=heads, head_summary=hsum, bottleneck=bottleneck,
        provenance=prov, complete=True)
    return res, PooledStates(residual=layer_buf, final=final_buf, head_sums=head_sum, order=order)
