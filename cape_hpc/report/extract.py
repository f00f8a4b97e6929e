"""Chart data from a results file: one extractor per figure, shared by matplotlib and the HTML report.

Each extractor takes a ``Results`` and returns a plain dict of lists (JSON-ready after
``data.jsonable``) or raises ``Skip`` with a note naming the missing group or field.  The figure
functions (``figures.py``) and the interactive charts (``html.py``) draw the same data, so the
PNGs and the report never disagree.

Readers are tolerant of field-name drift between producers: they look for the first of several
plausible names and skip (with a note) rather than fail.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np

from cape_hpc.report.data import Results, Skip, as_records, first, fnum, interval_of, parse_options

PHASE_ORDER = ("tax", "transition", "bonus")
PHASE_COLORS = {"tax": "#d62728", "transition": "#7f7f7f", "bonus": "#2ca02c", "": "#1f77b4",
                "undefined": "#1f77b4"}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every dict in a tree (depth-first), with its path; rows of tables included."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            if k == "provenance":
                continue
            yield from walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}/{i}")


def _options(node: dict) -> dict:
    prov = node.get("provenance") if isinstance(node, dict) else None
    opts = parse_options(prov.get("options")) if isinstance(prov, dict) else None
    return opts if isinstance(opts, dict) else {}


# --------------------------------------------------------------------------- scores per model

def _coupling(res: Results) -> tuple[str, dict, list[dict]]:
    path, g = res.need("analysis/coupling")
    ivs = as_records(first(g, "intervals"))
    if not ivs:
        raise Skip(f"/{path} has no intervals table")
    return path, g, ivs


def model_points(res: Results) -> dict[str, Any]:
    """Per-model (family, model, N, B1, B2, phase), rebuilt from the coupling intervals.

    Each interval stores d_b1, b1_mid (mean of its two models), so B1 = b1_mid +- d_b1/2 for the
    larger / smaller model; the phase of a model is its interval's phase (the smallest has none).
    """
    path, g, ivs = _coupling(res)
    phases_g = res.group("analysis/phases")
    phase_of = {}
    if phases_g is not None:
        for r in as_records(first(phases_g, "models")):
            phase_of[str(r.get("model"))] = str(r.get("phase") or "")
    fams: dict[str, dict[str, dict]] = {}
    for iv in ivs:
        fam = str(iv.get("family"))
        b1m, b2m = fnum(iv.get("b1_mid")), fnum(iv.get("b2_mid"))
        d1, d2 = fnum(iv.get("d_b1")), fnum(iv.get("d_b2"))
        if math.isnan(b1m) or math.isnan(d1):
            raise Skip(f"/{path} intervals lack b1_mid/d_b1 (cannot place models)")
        rows = fams.setdefault(fam, {})
        prev, cur = str(iv.get("prev_model")), str(iv.get("model"))
        rows.setdefault(prev, {"model": prev, "N": fnum(iv.get("prev_n")), "b1": b1m - d1 / 2,
                               "b2": b2m - d2 / 2, "phase": phase_of.get(prev, "")})
        rows[cur] = {"model": cur, "N": fnum(iv.get("n")), "b1": b1m + d1 / 2, "b2": b2m + d2 / 2,
                     "phase": phase_of.get(cur, str(iv.get("phase") or ""))}
    out = []
    for fam, rows in fams.items():
        rs = sorted(rows.values(), key=lambda r: (r["N"], r["model"]))
        out.append({"family": fam, "model": [r["model"] for r in rs], "N": [r["N"] for r in rs],
                    "b1": [r["b1"] for r in rs], "b2": [r["b2"] for r in rs],
                    "phase": [r["phase"] for r in rs]})
    return {"b1": str(g.get("b1", "B1")), "b2": str(g.get("b2", "B2")), "units": str(g.get("units", "")),
            "families": out, "source": f"/{path}" + (" + /analysis/phases" if phases_g is not None else "")}


def phase_diagram(res: Results) -> dict[str, Any]:
    return model_points(res)


# --------------------------------------------------------------------------- running coupling

def _nc_entries(res: Results) -> list[dict]:
    """Every N_c estimate stored under /analysis/nc (any nesting), as rows."""
    g = res.group("analysis/nc")
    if g is None:
        return []
    out = []
    for path, d in walk(g, "/analysis/nc"):
        log_nc = first(d, "log10_nc", "log_nc", "lognc", "x_c")
        nc = first(d, "nc", "n_c", "N_c")
        if log_nc is None and nc is None:
            continue
        if isinstance(log_nc, (list, np.ndarray)) or isinstance(nc, (list, np.ndarray)):
            continue
        lx = fnum(log_nc) if log_nc is not None else (math.log10(fnum(nc)) if fnum(nc) > 0 else math.nan)
        boot = first(d, "bootstrap", "boot", "ci_log10", "ci")
        lo, hi = interval_of(boot if boot is not None else d)
        # an interval given in N (not log N) is converted
        if not math.isnan(lo) and lo > 100:
            lo, hi = math.log10(lo), math.log10(hi) if hi > 0 else math.nan
        opts = {**_options(g), **_options(d)}
        fam = first(d, "scope", "family", "families", default=first(opts, "families", "family", default="pooled"))
        if isinstance(fam, (list, np.ndarray)):
            fam = "+".join(map(str, fam))
        est = first(d, "estimator", "method", default=first(opts, "estimator", default=path.rsplit("/", 1)[-1]))
        out.append({"family": str(fam), "estimator": str(est), "log_nc": lx, "lo": fnum(lo), "hi": fnum(hi),
                    "valid": bool(first(d, "valid", default=not math.isnan(lx))), "path": path})
    return out


def running_gamma(res: Results) -> dict[str, Any]:
    path, g, ivs = _coupling(res)
    fams: dict[str, dict[str, list]] = {}
    for iv in ivs:
        f = fams.setdefault(str(iv.get("family")), {"x": [], "gamma": [], "phase": [], "model": []})
        f["x"].append(fnum(iv.get("x_mid")))
        f["gamma"].append(fnum(iv.get("gamma")))
        f["phase"].append(str(iv.get("phase") or ""))
        f["model"].append(str(iv.get("model")))
    families = [{"family": k, **v} for k, v in fams.items()]
    nc = _nc_entries(res)
    return {"b1": str(g.get("b1", "B1")), "b2": str(g.get("b2", "B2")),
            "tax_below": fnum(g.get("tax_below", -0.1)), "bonus_above": fnum(g.get("bonus_above", 0.1)),
            "families": families, "nc": nc,
            "note": "" if nc else "no /analysis/nc group: N_c estimates not drawn",
            "source": f"/{path}" + (" + /analysis/nc" if nc else "")}


# --------------------------------------------------------------------------- d_eff per phase

def deff_per_phase(res: Results) -> dict[str, Any]:
    path, g = res.need("analysis/deff")
    rows = []
    for p, d in walk(g, f"/{path}"):
        val = first(d, "d_eff", "deff", "estimate")
        label = first(d, "phase", "group", "set", "name", "label")
        if val is None or label is None or isinstance(val, (list, np.ndarray, dict)):
            continue
        lo, hi = interval_of(d)
        rows.append({"phase": str(label), "d_eff": fnum(val), "lo": lo, "hi": hi,
                     "n_models": first(d, "n_models", "n", "count")})
    if not rows:
        # per-phase results stored as a dict keyed by phase
        for key in (*PHASE_ORDER, "all"):
            d = first(g, key) or first(first(g, "phases", "per_phase", default={}), key)
            if isinstance(d, dict):
                lo, hi = interval_of(d)
                rows.append({"phase": key, "d_eff": fnum(first(d, "d_eff", "deff", "estimate")),
                             "lo": lo, "hi": hi, "n_models": first(d, "n_models", "n", "count")})
    if not rows:
        raise Skip(f"/{path} has no per-phase d_eff rows")
    seen = {}
    for r in rows:
        seen.setdefault(r["phase"], r)
    order = {p: i for i, p in enumerate(PHASE_ORDER)}
    rows = sorted(seen.values(), key=lambda r: order.get(r["phase"], 9))
    return {"rows": rows, "source": f"/{path}"}


# --------------------------------------------------------------------------- width normalisation

def width_normalisation(res: Results) -> dict[str, Any]:
    path, g = res.need("analysis/width")
    rows = []
    for p, d in walk(g, f"/{path}"):
        rb = first(d, "r_before", "r_raw", "before")
        ra = first(d, "r_after", "r_norm", "r_normalised", "r_normalized", "after")
        fam = first(d, "family", "group", "set")
        if rb is None or ra is None or fam is None or isinstance(rb, (dict, list, np.ndarray)):
            continue
        null_lo = first(d, "null_lo", "control_lo", "perm_lo", "null_q025")
        null_hi = first(d, "null_hi", "control_hi", "perm_hi", "null_q975")
        null_mean = first(d, "null_mean", "control_mean", "perm_mean", "r_control", "r_perm")
        null = first(d, "null", "null_r", "control", "perm_r")
        if (null_lo is None or null_hi is None) and isinstance(null, (list, np.ndarray)) and len(null):
            arr = np.asarray(null, float)
            arr = arr[np.isfinite(arr)]
            if arr.size:
                null_lo, null_hi = np.quantile(arr, [0.025, 0.975])
                null_mean = float(arr.mean()) if null_mean is None else null_mean
        if null_lo is None and isinstance(first(d, "null", "control"), dict):
            null_lo, null_hi = interval_of(first(d, "null", "control"))
        rows.append({"family": str(fam), "r_before": fnum(rb), "r_after": fnum(ra),
                     "null_mean": fnum(null_mean), "null_lo": fnum(null_lo), "null_hi": fnum(null_hi),
                     "p_value": fnum(first(d, "p_null", "p_value", "p_perm", "null_p"))})
    if not rows:
        raise Skip(f"/{path} has no per-family r_before/r_after rows")
    return {"rows": rows, "source": f"/{path}"}


# --------------------------------------------------------------------------- frontier

def frontier(res: Results) -> dict[str, Any]:
    path, g = res.need("analysis/frontier")
    models = []
    for key in ("h", "models", "points", "per_model", "rows"):
        models = [r for r in as_records(g.get(key)) if first(r, "model") is not None]
        if models:
            break
    if not models:
        raise Skip(f"/{path} has no per-model table")
    x_name = str(first(g, "x", "b1", default="SWE"))
    y_name = str(first(g, "y", "b2", default="GPQA"))

    def col(r, *names):
        return fnum(first(r, *names))

    pts = {"model": [str(r["model"]) for r in models],
           "lab": [str(first(r, "lab", "group", "family", default="")) for r in models],
           "x": [col(r, x_name, "SWE", "swe", "x", "b1") for r in models],
           "y": [col(r, y_name, "GPQA", "gpqa", "y", "b2") for r in models],
           "h": [col(r, "h", "residual", "resid") for r in models],
           "cohort": [str(first(r, "cohort", default="")) for r in models]}
    fit = first(g, "fit", "overall", "line", default=g)
    slope = fnum(first(fit, "slope", "beta1"))
    intercept = fnum(first(fit, "intercept", "beta0"))
    if math.isnan(slope):
        slope, intercept = fnum(first(g, "slope")), fnum(first(g, "intercept"))
    if all(math.isnan(v) for v in pts["h"]) and not math.isnan(slope):
        pts["h"] = [y - (slope * x + intercept) for x, y in zip(pts["x"], pts["y"])]
    return {"x_name": x_name, "y_name": y_name, "points": pts, "slope": slope, "intercept": intercept,
            "r": fnum(first(fit, "r", default=first(g, "r"))), "source": f"/{path}"}


# --------------------------------------------------------------------------- dynamics

def _dynamics_result(path: str, d: dict) -> tuple[list[dict], list[dict]]:
    """Trajectories and errors of one stored ``DynamicsResult`` (predictions rows + baselines)."""
    preds = as_records(d.get("predictions"))
    model = str(first(d, "model", default="ode"))
    trajs, errors = [], []
    benches = [str(b) for b in (first(d, "benchmarks", default=[]) or [])]
    for fam in dict.fromkeys(str(r.get("family")) for r in preds):
        rows = [r for r in preds if str(r.get("family")) == fam]
        bs = benches or list(dict.fromkeys(str(r.get("benchmark")) for r in rows))
        xs = sorted({fnum(r.get("log10_n")) for r in rows})
        A = np.full((len(xs), len(bs)), np.nan)
        P = np.full_like(A, np.nan)
        base: dict[str, np.ndarray] = {}
        for r in rows:
            b = str(r.get("benchmark"))
            if b not in bs:
                continue
            i, j = xs.index(fnum(r.get("log10_n"))), bs.index(b)
            A[i, j], P[i, j] = fnum(r.get("actual")), fnum(r.get("ode"))
            for k, v in (r.get("baselines") or {}).items():
                base.setdefault(str(k), np.full_like(A, np.nan))[i, j] = fnum(v)
        train = first(d, "train", default=[])
        label = f"{model}: train {'+'.join(map(str, np.atleast_1d(train)))}, holdout {fam}"
        trajs.append({"label": label, "path": path, "x": xs, "benchmarks": bs, "actual": A.tolist(),
                      "predicted": P.tolist(), "baselines": {k: v.tolist() for k, v in base.items()}})
    he = first(d, "holdout_error")
    if isinstance(he, dict) and first(he, "rel_mae") is not None:
        errors.append({"label": f"ODE ({model})", "error": fnum(he["rel_mae"]), "path": path,
                       "mape": fnum(he.get("mape")), "mae_points": fnum(he.get("mae_points"))})
    for b in as_records(d.get("baselines")):
        if first(b, "degree") is not None:
            errors.append({"label": f"poly deg {b['degree']}", "error": fnum(first(b, "rel_mae")), "path": path,
                           "mape": fnum(b.get("mape")), "mae_points": fnum(b.get("mae_points"))})
    return trajs, errors


def dynamics(res: Results) -> dict[str, Any]:
    """ODE trajectories (actual vs predicted) and the holdout error beside the polynomial baselines."""
    g = res.group("dynamics")
    if g is None:
        raise Skip(f"no /dynamics group in {res.path}")
    trajectories = []   # {label, x, benchmarks, actual [n, p], predicted [n, p], baselines {poly<d>: [n, p]}}
    errors = []         # {label, error}
    for path, d in walk(g, "/dynamics"):
        if isinstance(d.get("predictions"), list) and "baselines" in d:  # a DynamicsResult
            t, e = _dynamics_result(path, d)
            trajectories += t
            errors += e
            continue
        x = first(d, "log_n", "x", "logN", "log10_n")
        pred = first(d, "predicted", "pred", "y_pred", "simulated")
        act = first(d, "actual", "observed", "y_true")
        if x is not None and pred is not None and act is not None and np.ndim(x) == 1 and np.ndim(pred) >= 1:
            benches = first(d, "benchmarks", "columns", "variables", default=None)
            P, A = np.atleast_2d(np.asarray(pred, float)), np.atleast_2d(np.asarray(act, float))
            if P.shape[0] != len(x) and P.shape[1] == len(x):
                P, A = P.T, A.T
            if benches is None or len(benches) != P.shape[1]:
                benches = [f"B{i + 1}" for i in range(P.shape[1])]
            label = str(first(d, "family", "name", default=path.rsplit("/", 1)[-1]))
            trajectories.append({"label": label, "path": path, "x": [fnum(v) for v in x],
                                 "benchmarks": [str(b) for b in benches], "predicted": P.tolist(),
                                 "actual": A.tolist(), "baselines": {}})
    if not trajectories and not errors:
        raise Skip("/dynamics has no ODE result with holdout predictions")
    return {"trajectories": trajectories, "errors": errors, "source": "/dynamics"}


def predictions(res: Results) -> dict[str, Any]:
    """Stored ``SizePrediction``s (``/dynamics/predict/<family>/<size>``): start scores, the ODE's
    prediction with its bootstrap band, and the polynomial baselines, per benchmark."""
    g = res.group("dynamics")
    if g is None:
        raise Skip(f"no /dynamics group in {res.path}")
    out = []
    for path, d in walk(g, "/dynamics"):
        if not (isinstance(d.get("ode"), (list, np.ndarray)) and "start_scores" in d and "benchmarks" in d):
            continue
        band = d.get("band") if isinstance(d.get("band"), dict) else {}
        b95 = band.get("0.95")
        lo = [fnum(v[0]) for v in b95] if b95 is not None else [math.nan] * len(d["ode"])
        hi = [fnum(v[1]) for v in b95] if b95 is not None else [math.nan] * len(d["ode"])
        out.append({"label": f"{d.get('family', '')} at N = {fnum(d.get('size')):.3g} "
                             f"(from {d.get('start_model', '')}, {d.get('model', '')})", "path": path,
                    "benchmarks": [str(b) for b in d["benchmarks"]],
                    "start": [fnum(v) for v in d["start_scores"]], "ode": [fnum(v) for v in d["ode"]],
                    "lo": lo, "hi": hi,
                    "baselines": {str(k): [fnum(x) for x in v] for k, v in (d.get("baselines") or {}).items()}})
    if not out:
        raise Skip("no /dynamics/predict/<family>/<size> group (cape predict --out)")
    return {"predictions": out, "source": "/dynamics/predict"}


# --------------------------------------------------------------------------- internals

def internals(res: Results) -> dict[str, Any]:
    models = res.children("internals")
    if not models:
        raise Skip(f"no /internals/<model> group in {res.path}")
    out = []
    for name, g in models.items():
        layer = first(g, "layer_coupling")
        if layer is None:
            continue
        heads = first(g, "head_coupling")
        out.append({"model": name,
                    "layer_coupling": [fnum(v) for v in np.ravel(layer)],
                    "layer_pairwise_mean": [fnum(v) for v in np.ravel(first(g, "layer_pairwise_mean", default=[]))],
                    "layer_competing_fraction": [fnum(v) for v in np.ravel(first(g, "layer_competing_fraction", default=[]))],
                    "d_rep": [fnum(v) for v in np.ravel(first(g, "d_rep", default=[]))],
                    "head_coupling": (np.asarray(heads, float).tolist() if heads is not None and np.ndim(heads) == 2
                                      else None),
                    "complete": first(g, "complete", default=None)})
    if not out:
        raise Skip("/internals/<model> groups lack layer_coupling")
    return {"models": out, "source": "/internals"}


# --------------------------------------------------------------------------- steering

def steering(res: Results) -> dict[str, Any]:
    models = res.children("steering")
    if not models:
        raise Skip(f"no /steering/<model>/<run> group in {res.path}")
    rows = []
    for model, runs in models.items():
        cand = {"": runs} if first(runs, "rate", "intervention_rate") is not None else \
            {k: v for k, v in runs.items() if isinstance(v, dict)}
        for run, g in cand.items():
            rate = first(g, "rate", "intervention_rate", "changed_rate")
            if rate is None:
                stats = first(g, "stats", "summary", default={})
                rate = first(stats, "rate", "intervention_rate")
                g = {**g, **stats} if isinstance(stats, dict) else g
            if rate is None:
                continue
            lo, hi = interval_of(g)
            opts = _options(g)
            alpha = first(g, "alpha", default=first(opts, "alpha"))
            rows.append({"model": model, "run": run, "alpha": fnum(alpha), "rate": fnum(rate),
                         "lo": lo, "hi": hi, "n": first(g, "n", "n_prompts", "n_total"),
                         "scale": str(first(g, "scale", default=first(opts, "scale", default="")))})
    if not rows:
        raise Skip("/steering/<model>/<run> groups lack an intervention rate")
    rows.sort(key=lambda r: (r["model"], r["alpha"]))
    return {"rows": rows, "source": "/steering"}


# --------------------------------------------------------------------------- extra analyses

def isocline(res: Results) -> dict[str, Any]:
    path, g = res.need("analysis/isocline")
    ivs = as_records(first(g, "intervals"))
    k = fnum(first(g, "k"))
    if not ivs or not math.isfinite(k):
        raise Skip(f"/{path} has no intervals or no k")
    b1 = [fnum(r.get("b1_mid")) for r in ivs]
    lo, hi = np.nanmin(b1), np.nanmax(b1)
    curve_x = np.linspace(max(lo - 0.05, 1e-6), min(hi + 0.05, 1.0), 60)
    return {"b1": str(g.get("b1", "B1")), "b2": str(g.get("b2", "B2")), "k": k, "rule": str(g.get("rule", "")),
            "calibration": str(g.get("calibration", "")),
            "total_agree": first(g, "total_agree"), "total_intervals": first(g, "total_intervals"),
            "rows": [{"family": str(r.get("family")), "model": str(r.get("model")), "b1_mid": fnum(r.get("b1_mid")),
                      "b2_mid": fnum(r.get("b2_mid")), "side": str(r.get("side", "")), "gamma": fnum(r.get("gamma")),
                      "agrees": bool(r.get("agrees"))} for r in ivs],
            "curve_x": curve_x.tolist(), "curve_y": np.sqrt(k * curve_x).tolist(), "source": f"/{path}"}


def hfield(res: Results) -> dict[str, Any]:
    path, g = res.need("analysis/hfield")
    groups = [r for r in as_records(first(g, "groups")) if first(r, "group") is not None]
    if not groups:
        raise Skip(f"/{path} has no per-group table")
    return {"b1": str(g.get("b1", "B1")), "b2": str(g.get("b2", "B2")), "group_by": str(g.get("group_by", "group")),
            "beta1": fnum(g.get("beta1")), "beta0": fnum(g.get("beta0")),
            "rows": [{"group": str(r["group"]), "count": first(r, "count"), "mean_h": fnum(first(r, "mean_h")),
                      "std_h": fnum(first(r, "std_h"))} for r in groups], "source": f"/{path}"}


def loss_law(res: Results) -> dict[str, Any]:
    path, g = res.need("analysis/loss")
    n, L, fit = (first(g, k) for k in ("params", "val_loss", "fitted"))
    if n is None or L is None:
        raise Skip(f"/{path} lacks params/val_loss")
    return {"params": [fnum(v) for v in n], "val_loss": [fnum(v) for v in L],
            "fitted": [fnum(v) for v in (fit if fit is not None else [])],
            "models": [str(m) for m in (first(g, "models") or [])],
            "E": fnum(g.get("E")), "A": fnum(g.get("A")), "alpha": fnum(g.get("alpha")),
            "alpha_se": fnum(g.get("alpha_se")), "r2": fnum(g.get("r2")), "cv": fnum(g.get("cv")),
            "source": f"/{path}"}


def eigen(res: Results) -> dict[str, Any]:
    path, g = res.need("analysis/eigen")
    w = as_records(first(g, "windows"))
    if not w:
        raise Skip(f"/{path} has no windows")
    return {"family": str(g.get("family", "")), "mode": str(g.get("mode", "")), "matrix": str(g.get("matrix", "")),
            "rows": [{"last_model": str(r.get("last_model")), "log10_n": fnum(r.get("log10_n")),
                      "lambda1": fnum(r.get("lambda1")), "lambda2": fnum(r.get("lambda2")),
                      "e2_angle_deg": fnum(r.get("e2_angle_deg"))} for r in w],
            "power_exponent": fnum(g.get("power_exponent")), "power_r2": fnum(g.get("power_r2")),
            "source": f"/{path}"}


EXTRACTORS: dict[str, Callable[[Results], dict]] = {
    "phase_diagram": phase_diagram,
    "running_gamma": running_gamma,
    "deff": deff_per_phase,
    "width": width_normalisation,
    "dynamics": dynamics,
    "frontier": frontier,
    "internals": internals,
    "steering": steering,
    "predict": predictions,
    "isocline": isocline,
    "hfield": hfield,
    "loss": loss_law,
    "eigen": eigen,
}
