"""Streaming extraction of model internals and the statistics of SPEC section 3.

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

The forward pass is stopped (an exception raised from the hook) right after the last module any
tap needs: the unembedding over all positions never runs.  No activation cache exists.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from cape_hpc.errors import DataError, OptionError
from cape_hpc.internals.prompts import PromptSet
from cape_hpc.schema import Provenance

TAPS = ("residual", "heads", "final", "logits")
POOLINGS = ("last", "mean")
BOTTLENECK_CAVEAT = ("k = 1 gives +-1 by construction (two scalars on one axis); subspaces beyond "
                     "k = (number of prompts - 1) cannot change the value (the centred stack has at "
                     "most that rank).")


class _StopForward(Exception):
    """Raised from a hook once the last needed module has run."""


# ----------------------------------------------------------------------------------- batching
def tokenize(loaded, texts: Sequence[str], *, what: str = "prompt", add_special_tokens: bool = True) -> tuple[list[list[int]], list[int]]:
    """Token ids of each text (special tokens as the tokenizer adds them), truncated from the left to
    the model's context with a warning.  Returns (ids, indices of truncated texts)."""
    tok = loaded.tokenizer
    ctx = loaded.adapter.context_length
    ids = [list(tok(t, add_special_tokens=add_special_tokens)["input_ids"]) for t in texts]
    truncated = []
    for i, row in enumerate(ids):
        if not row:
            raise DataError(f"{what} {i}: tokenises to nothing")
        if ctx and len(row) > ctx:
            truncated.append(i)
            ids[i] = row[-ctx:]
    if truncated:
        warnings.warn(f"{len(truncated)} {what}(s) longer than the model's context of {ctx} tokens were "
                      f"truncated to their last {ctx} tokens (first: #{truncated[0]})", stacklevel=3)
    return ids, truncated


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) of a left-padded batch."""
    S = max(len(r) for r in rows)
    ids = torch.full((len(rows), S), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), S), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, S - len(r):] = torch.as_tensor(r, dtype=torch.long)
            mask[i, S - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids, mask, pos


def forward_kwargs(loaded, ids, mask, pos) -> dict[str, Any]:
    device = next(loaded.model.parameters()).device
    kw: dict[str, Any] = dict(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    if loaded.adapter.accepts_position_ids:
        kw["position_ids"] = pos.to(device)
    return kw


def pad_id(loaded) -> int:
    tok = loaded.tokenizer
    for v in (tok.pad_token_id, tok.eos_token_id, 0):
        if v is not None:
            return int(v)
    return 0


# ----------------------------------------------------------------------------------- result
@dataclass
class InternalsResult:
    model: str
    source: str
    revision: str
    dtype: str
    backend: str
    pooling: str
    taps: list[str]
    set_r: str
    set_t: str
    n_prompts: int
    n_r: int
    n_t: int
    n_truncated: int
    prompt_set_sha256: str
    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int
    # per layer (residual stream after each block)
    layer_coupling: np.ndarray            # [L] cos(mean R, mean T)
    layer_pairwise_mean: np.ndarray       # [L] mean of the |R| x |T| cosines
    layer_competing_fraction: np.ndarray  # [L] fraction of pairs with cos < -0.5
    layer_competes: np.ndarray            # [L] fraction > 0.5
    d_rep: np.ndarray                     # [L] participation ratio of the PCA eigenvalues
    # per head (attention output before the output projection)
    head_coupling: np.ndarray             # [L, H]
    head_summary: dict[str, float]
    # projection bottleneck
    bottleneck: dict[str, Any]
    complete: bool = True
    provenance: Provenance | None = None

    @property
    def group(self) -> str:
        return f"/internals/{store_name(self.model)}"

    def to_store_tree(self) -> dict[str, Any]:
        """The tree stored under ``/internals/<model>/`` (attrs source, revision, dtype,
        prompt_set_sha256, backend, complete; arrays as datasets)."""
        from cape_hpc.schema import to_tree

        tree = to_tree(self)
        tree["provenance"] = {**self.provenance.attrs()} if self.provenance else {}
        tree["taps"] = ",".join(self.taps)
        return tree


def store_name(model: str) -> str:
    """An HDF5-safe group name for a model spec (slashes of HF ids become '|')."""
    return str(model).replace("/", "|")


# ----------------------------------------------------------------------------------- maths
def _centred64(X: torch.Tensor) -> torch.Tensor:
    X = X.to(torch.float64)          # one copy, centred in place
    X -= X.mean(dim=0, keepdim=True)
    return X


def participation_ratio(X: torch.Tensor) -> float:
    """(sum lambda)^2 / sum lambda^2 of the PCA eigenvalues of the rows of X (float64)."""
    if X.shape[0] < 2:
        return float("nan")
    X = _centred64(X)
    G = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    tr = torch.trace(G)
    fro2 = (G * G).sum()
    return float(tr * tr / fro2) if fro2 > 0 else float("nan")


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


def head_summary(c: np.ndarray) -> dict[str, float]:
    """Cooperative share, competing count, near-zero share, net, median, early/mid/late thirds."""
    flat = c.ravel()
    thirds = np.array_split(np.arange(c.shape[0]), 3)
    out = {
        "cooperative_share": float(np.mean(flat > 0)),
        "competing_count": int(np.sum(flat < -0.5)),
        "near_zero_share": float(np.mean(np.abs(flat) < 0.1)),
        "net": float(np.mean(flat)),
        "median": float(np.median(flat)),
        "n_heads_total": int(flat.size),
    }
    for name, idx in zip(("early", "mid", "late"), thirds):
        out[name] = float(np.mean(c[idx])) if len(idx) else float("nan")
    return out


def choose_sets(prompts: PromptSet) -> tuple[str, str]:
    sets = list(prompts.sets)
    if "reasoning" in sets and "truthfulness" in sets:
        return "reasoning", "truthfulness"
    if len(sets) < 2:
        raise DataError(f"{prompts.path}: coupling needs two prompt sets (field 'set'), found "
                        f"{sets or 'none'}")
    return sets[0], sets[1]


# ----------------------------------------------------------------------------------- extraction
def extract_internals(loaded, prompts: PromptSet, *, batch_size: int = 16, pooling: str = "last",
                      taps: Sequence[str] = TAPS, backend: str | None = None,
                      set_names: tuple[str, str] | None = None, keep_pooled: bool = False) -> InternalsResult:
    """Stream ``prompts`` through ``loaded`` and compute every statistic of SPEC section 3.

    Prints nothing and writes no file.  Over-long prompts are truncated (a ``UserWarning``).
    ``keep_pooled=True`` attaches the pooled vectors as ``result.pooled`` (a dict, not stored):
    ``residual`` [L, N, D], ``final`` [N, D], ``head_sums`` [2, L, H*dh], ``order`` (prompt index of
    each row), for tests.
    """
    import cape_kernels as ck
    from cape_kernels import backends as kbackends

    if pooling not in POOLINGS:
        raise OptionError(f"--pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
    taps = list(dict.fromkeys(taps))
    bad = [t for t in taps if t not in TAPS]
    if bad:
        raise OptionError(f"--taps: unknown tap {bad[0]!r}; taps are {', '.join(TAPS)}")
    if batch_size < 1:
        raise OptionError(f"--batch-size must be >= 1, got {batch_size}")
    if len(prompts) == 0:
        raise DataError(f"{prompts.path}: no prompts")
    set_r, set_t = set_names or choose_sets(prompts)
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
                raise _StopForward
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
        raise _StopForward

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
                except _StopForward:
                    pass
    finally:
        for h in handles:
            h.remove()
        state.clear()

    # ------------------------------------------------------------------ statistics
    nan_l = np.full(L, np.nan)
    coupling, pw_mean, pw_frac, d_rep = nan_l.copy(), nan_l.copy(), nan_l.copy(), nan_l.copy()
    if want_res:
        for l in range(L):
            R, T = layer_buf[l, :n_r], layer_buf[l, n_r:n_r + n_t]
            coupling[l] = float(ck.set_mean_cosine(R, T, backend=backend))
            st = ck.pairwise_cosine_stats(R, T, threshold=-0.5, backend=backend)
            pw_mean[l], pw_frac[l] = float(st.mean), float(st.frac_below)
            d_rep[l] = participation_ratio(layer_buf[l, :n_r + n_t])
    if want_heads:
        sums = head_sum.view(2, L * H, dh)
        hc = ck.set_mean_cosine(sums[0][:, None, :], sums[1][:, None, :], backend=backend)
        head_c = hc.to(torch.float64).numpy().reshape(L, H)
        hsum = head_summary(head_c)
    else:
        head_c, hsum = np.full((L, H), np.nan), {}
    bottleneck: dict[str, Any] = {}
    if want_final and final_buf is not None:
        R, T = final_buf[:n_r], final_buf[n_r:n_r + n_t]
        bottleneck["hidden"] = float(ck.set_mean_cosine(R, T, backend=backend))
        m_r, m_t = R.to(torch.float64).mean(0), T.to(torch.float64).mean(0)
        if "logits" in taps:
            with torch.inference_mode():
                lg = ad.unembed(torch.stack([m_r, m_t]).to(device)).to("cpu", torch.float64)
            bottleneck["logits"] = float(ck.set_mean_cosine(lg[0:1], lg[1:2], backend=backend))
        k, kc = pca_subspace_coupling(final_buf[:n_r + n_t], m_r, m_t)
        bottleneck["pca_k"] = k
        bottleneck["pca_coupling"] = kc
        bottleneck["caveat"] = BOTTLENECK_CAVEAT
        if pooling == "mean" and ad.softcap:
            bottleneck["note"] = "logit softcapping is non-linear: with mean pooling the logits coupling is of the mean state"

    prov = Provenance(method="cape_hpc.internals.extract_internals",
                      options={"batch_size": batch_size, "pooling": pooling, "taps": taps,
                               "backend": resolved, "sets": [set_r, set_t], "threshold": -0.5,
                               "model": loaded.name, "dtype": loaded.dtype},
                      inputs={"prompts": prompts.sha256})
    res = InternalsResult(
        model=loaded.name, source=loaded.source, revision=loaded.revision, dtype=loaded.dtype,
        backend=resolved, pooling=pooling, taps=taps, set_r=set_r, set_t=set_t, n_prompts=N, n_r=n_r,
        n_t=n_t, n_truncated=len(truncated), prompt_set_sha256=prompts.sha256, n_layers=L, n_heads=H,
        head_dim=dh, d_model=ad.d_model, layer_coupling=coupling, layer_pairwise_mean=pw_mean,
        layer_competing_fraction=pw_frac, layer_competes=pw_frac > 0.5, d_rep=d_rep,
        head_coupling=head_c, head_summary=hsum, bottleneck=bottleneck, complete=True, provenance=prov)
    if keep_pooled:
        res.pooled = {"residual": layer_buf, "final": final_buf, "head_sums": head_sum, "order": order}
    return res
