"""cape_kernels installs and runs on its own: a fresh virtual environment gets only ``./kernels``.

The test builds a clean venv (no system site-packages), installs the CPU build of torch (pip takes
it from the machine's wheel directory, as scripts/install_deps.sh does) and then a copy of
``kernels/`` (so no build artefacts land in the repository), nothing else.  A script run in that
venv imports cape_kernels, checks that transformers, h5py and cape_hpc are neither loaded nor
importable, that the package came from the venv (not from the repository) with its CUDA sources,
and runs every exported op on the CPU with the numba and torch backends against float64
numpy computations written in the script (the resampling kernels against the numpy oracles that
ship in the package, ``cape_kernels.reference_resample``, and against np.cov / np.polyfit).
About a minute here: the torch wheel unpacks in ~25 s, numba's first compiles take the rest.
"""
from __future__ import annotations

import shutil
import textwrap

import pytest

from venvs import LOCK, ROOT, clean_env, make_venv, run

SCRIPT = textwrap.dedent(r'''
    import importlib.util, math, sys
    from pathlib import Path

    import numpy as np
    import torch
    import cape_kernels as ck
    from cape_kernels import reference_resample as rr

    # ---- alone: nothing of the application stack is loaded or importable
    for name in ("transformers", "h5py", "cape_hpc", "pandas", "scipy"):
        assert name not in sys.modules, f"{name} was imported"
    for name in ("transformers", "h5py", "cape_hpc"):
        assert importlib.util.find_spec(name) is None, f"{name} is importable in the clean venv"
    pkg = Path(ck.__file__).resolve().parent
    assert Path(sys.prefix).resolve() in pkg.parents, f"cape_kernels imported from {pkg}, not the venv"
    assert sorted(p.name for p in (pkg / "cuda").glob("*.cu")), "the CUDA sources are not installed"
    from importlib.metadata import requires, version
    assert version("cape_kernels") == ck.__version__
    reqs = sorted(r.split(";")[0].split(">")[0].split("=")[0].strip() for r in requires("cape_kernels")
                  if "extra ==" not in r)
    assert reqs == ["numba", "torch"], reqs
    avail = ck.available_backends("cpu")
    assert set(avail) >= {"numba", "torch"}, avail

    g = np.random.default_rng(0)
    covered = set()

    def close(got, want, tol, what):
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        assert got.shape == want.shape, (what, got.shape, want.shape)
        assert np.allclose(got, want, rtol=tol, atol=tol, equal_nan=True), (what, np.abs(got - want).max())

    def cos64(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na * nb == 0 else float(np.clip(a @ b / (na * nb), -1, 1))

    for be in ("numba", "torch"):
        # pooled_tap: last and masked mean, left padding, one fully masked row
        h = g.standard_normal((3, 7, 33))
        m = np.ones((3, 7), dtype=bool); m[0, :3] = False; m[2] = False
        for mode in ("last", "mean"):
            out = ck.pooled_tap(torch.tensor(h, dtype=torch.float32), torch.tensor(m), mode, backend=be)
            want = np.zeros((3, 33))
            for n in range(3):
                if m[n].any():
                    want[n] = h[n, np.nonzero(m[n])[0][-1]] if mode == "last" else h[n, m[n]].mean(0)
            close(out, want, 1e-5, f"pooled_tap {mode} {be}")
        covered.add("pooled_tap")
        # set_mean_cosine and pairwise statistics, float64, with a zero set in b = 1
        R = g.standard_normal((2, 5, 19)); T = g.standard_normal((2, 4, 19)); R[1] = 0.0
        Rt, Tt = torch.tensor(R), torch.tensor(T)
        close(ck.set_mean_cosine(Rt, Tt, backend=be), [cos64(R[b].mean(0), T[b].mean(0)) for b in range(2)],
              1e-12, f"set_mean_cosine {be}")
        covered.add("set_mean_cosine")
        st = ck.pairwise_cosine_stats(Rt, Tt, threshold=-0.1, return_full=True, backend=be)
        assert isinstance(st, ck.PairwiseStats) and st.backend == be
        C = np.array([[[cos64(R[b, p], T[b, q]) for q in range(4)] for p in range(5)] for b in range(2)])
        close(st.full, C, 1e-12, f"pairwise full {be}")
        close(st.mean, C.mean((1, 2)), 1e-12, f"pairwise mean {be}")
        close(st.frac_below, (C < -0.1).mean((1, 2)), 0, f"pairwise frac {be}")
        covered.update({"pairwise_cosine_stats", "PairwiseStats"})
        # steering: relative scale with a gate, in place
        H = g.standard_normal((6, 21)); v = g.standard_normal(21)
        Ht = torch.tensor(H)
        proj = ck.steer_inject_(Ht, torch.tensor(v), 0.5, scale="relative", tau=0.1, backend=be)
        pw = np.array([cos64(H[t], v) for t in range(6)])
        want = H + np.where(pw < 0.1, 0.5, 0.0)[:, None] * np.linalg.norm(H, axis=1)[:, None] * v / np.linalg.norm(v)
        close(proj, pw, 1e-12, f"steer proj {be}")
        close(Ht, want, 1e-12, f"steer h {be}")
        covered.add("steer_inject_")
        # streaming ops (docs/CONTRACTS.md, "Streaming kernels"), once the package exports them
        if hasattr(ck, "pool_accumulate_"):
            h = g.standard_normal((4, 5, 9)); m = np.ones((4, 5), dtype=bool); m[1, 3:] = False
            slot = np.array([0, 1, 0, -1])
            sums = torch.zeros(2, 9, dtype=torch.float64); us = torch.zeros(2, 9, dtype=torch.float64)
            pooled = ck.pool_accumulate_(torch.tensor(h), torch.tensor(m), "mean", torch.tensor(slot), sums, us,
                                         backend=be)
            pw = np.stack([h[n, m[n]].mean(0) for n in range(4)])
            close(pooled, pw, 1e-12, f"pool_accumulate_ pooled {be}")
            ws = np.zeros((2, 9)); wu = np.zeros((2, 9))
            for n in range(4):
                if slot[n] >= 0:
                    ws[slot[n]] += pw[n]; wu[slot[n]] += pw[n] / np.linalg.norm(pw[n])
            close(sums, ws, 1e-12, f"pool_accumulate_ sums {be}")
            close(us, wu, 1e-12, f"pool_accumulate_ unit_sums {be}")
            covered.add("pool_accumulate_")
        if hasattr(ck, "count_pairs_below"):
            A = g.standard_normal((7, 6)); Bm = g.standard_normal((5, 6)); A[2] = 0.0
            ag = np.array([0, 1, 1, 0, 1, 0, 0]); bg = np.array([1, 0, 0, 1, 1])
            cnt = ck.count_pairs_below(torch.tensor(A), torch.tensor(Bm), 0.05, a_groups=torch.tensor(ag),
                                       b_groups=torch.tensor(bg), n_groups=2, backend=be)
            want = np.zeros((2, 2), dtype=np.int64)
            for i in range(7):
                for j in range(5):
                    want[ag[i], bg[j]] += cos64(A[i], Bm[j]) < 0.05
            assert np.array_equal(np.asarray(cnt), want), (be, cnt, want)
            covered.add("count_pairs_below")

    # ---- resampling (numba): numpy oracles shipped in the package, and numpy's own statistics
    strata = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    idx = ck.resample_indices(strata, 40, seed=7)
    assert np.array_equal(idx, rr.resample_indices_ref(strata, 40, 7))
    assert np.array_equal(idx[10:], ck.resample_indices(strata, 30, seed=7, start=10))
    assert all(np.array_equal(np.sort(strata[r]), np.sort(strata)) for r in idx)  # strata kept
    X = g.standard_normal((10, 3))
    pr = ck.participation_ratio_batch(X, idx)
    C0 = [np.cov(X[r], rowvar=False) for r in idx]
    close(pr, [np.trace(c) ** 2 / np.trace(c @ c) for c in C0], 1e-9, "participation_ratio_batch")
    assert np.array_equal(pr, ck.participation_ratio_boot(X, strata, 40, seed=7))
    close(ck.participation_ratio(C0[0]), pr[0], 1e-12, "participation_ratio")
    x = np.linspace(0.0, 3.0, 10); y = (x - 1.7) ** 2 + 0.01 * g.standard_normal(10)
    a, b, c = np.polyfit(x, y, 2)
    v, a2, b2, c2 = ck.quadratic_fit(x, y)
    close([v, a2, b2, c2], [-b / (2 * a), a, b, c], 1e-8, "quadratic_fit")
    qn = ck.quadratic_nc_batch(x, y, idx)
    close(qn, rr.quadratic_nc_batch_ref(x, y, idx), 1e-8, "quadratic_nc_batch")
    assert np.array_equal(qn, ck.quadratic_nc_boot(x, y, strata, 40, seed=7))
    fam = np.array([0] * 5 + [1] * 5); logn = np.r_[np.arange(5.0), np.arange(5.0)]
    b1 = np.r_[np.arange(5.0), np.arange(5.0)] * 0.1; b2 = (b1 - 0.2) ** 2 * np.r_[[1] * 5, [2] * 5]
    gam, code = ck.gamma_rule(fam, logn, b1, b2, 1e-3)
    wg, wc = rr.gamma_rule_ref(fam, logn, b1, b2, 1e-3)
    close(gam, wg, 1e-12, "gamma_rule"); assert np.array_equal(code, wc)
    xm, gs = ck.nc_intervals(fam, logn, b1, b2, 1e-3)
    assert len(xm) == 8
    slope, zero = ck.gamma_line(xm, gs)
    sl, ic = np.polyfit(xm, gs, 1)
    close([slope, zero], [sl, -ic / sl], 1e-9, "gamma_line")
    for est in ("sign-change", "gamma-fit"):
        gn = ck.gamma_nc_batch(est, fam, logn, b1, b2, idx, 1e-3)
        close(gn, rr.gamma_nc_batch_ref(est, fam, logn, b1, b2, idx, 1e-3), 1e-9, f"gamma_nc_batch {est}")
        assert np.array_equal(gn, ck.gamma_nc_boot(est, fam, logn, b1, b2, strata, 40, 7, 1e-3), equal_nan=True)
    covered.update({"resample_indices", "participation_ratio_batch", "participation_ratio_boot",
                    "participation_ratio", "quadratic_fit", "quadratic_nc_batch", "quadratic_nc_boot",
                    "gamma_rule", "nc_intervals", "gamma_line", "gamma_nc_batch", "gamma_nc_boot",
                    "available_backends"})
    missing = sorted(set(ck.__all__) - covered)
    assert not missing, f"exported but not run in the clean venv: {missing}"
    for name in ("transformers", "h5py", "cape_hpc"):
        assert name not in sys.modules, f"{name} was imported"
    print("CLEAN-VENV-OK", ck.__version__, len(covered), "names", "backends", ",".join(avail))
''')


@pytest.mark.timeout(600)
def test_clean_venv_installs_and_runs_cape_kernels_alone(tmp_path):
    src = tmp_path / "kernels"
    shutil.copytree(ROOT / "kernels", src, ignore=shutil.ignore_patterns(
        "__pycache__", "build", "*.egg-info", "*.nbi", "*.nbc"))
    env = clean_env()
    py = make_venv(tmp_path / "venv", env)
    run([py, "-m", "pip", "install", "-q", "-c", LOCK, str(src)], env=env)
    freeze = run([py, "-m", "pip", "freeze"], env=env).stdout.lower()
    for name in ("cape-hpc", "cape_hpc", "transformers", "h5py"):
        assert f"{name}==" not in freeze, f"{name} was installed with cape_kernels:\n{freeze}"
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-cache")  # never write into the repository's caches
    r = run([py, "-I", "-c", SCRIPT], env=env, cwd=str(tmp_path))
    assert "CLEAN-VENV-OK" in r.stdout, r.stdout
