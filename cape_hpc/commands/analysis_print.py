"""The printed tables of the benchmark-level commands (`cape coupling`, ..., `cape analyze`): one
printer per result class, ``print_<analysis>(result)``; numbers only formatted, never computed."""
from __future__ import annotations

import math

from cape_hpc.analysis.scale import axis_of
from cape_hpc.commands.common import fmt, print_table


def _ci(summary, level=0.95, log=True, fit_range=None, per=1e9) -> str:
    """An interval as the tables print it; a bound of a log10 N interval beyond ``fit_range`` (the
    data's log10 N range) is printed as that edge ('>9.09': beyond the largest model), never as the
    extrapolated number (docs/METHODS.md §2.4, "Interval notes")."""
    ci = summary.interval(level)
    if not ci.defined:
        return "-"
    if log:
        return f"[{_log_b(ci.low, fit_range, per)}, {_log_b(ci.high, fit_range, per)}]"
    return f"[{ci.low:.4g}, {ci.high:.4g}]"


def _notes(summary, *extra: str) -> str:
    """The short notes column: the estimate's own reason, then the interval's tags (the share of
    valid resamples only when too few: the 'valid' column shows the count)."""
    tags = [t for t in summary.tags() if not (t[:1].isdigit() and not t.endswith("too few"))]
    return "; ".join(x for x in (*extra, *tags) if x)


def _log_b(v: float, fit_range, per: float = 1e9) -> str:
    """A log10 N value in billions (``per``: 1 for a training step); beyond ``fit_range`` the data's
    edge ('>9.1') instead."""
    if not math.isfinite(v):
        return "-"
    if fit_range is not None and all(math.isfinite(x) for x in fit_range):
        if v < fit_range[0]:
            return f"<{_b(fit_range[0], per):.3g}"
        if v > fit_range[1]:
            return f">{_b(fit_range[1], per):.3g}"
    return f"{_b(v, per):.4g}"


def _b(log10_n: float, per: float = 1e9) -> float:
    """10 ** log10_n in billions (``per``; inf beyond the largest float: a huge-N table prints, never
    overflows)."""
    return 10.0 ** log10_n / per if log10_n < 308.0 else math.inf


def _along(r) -> str:
    """'' on the default axis (N), else ' along log10 step (training steps)' for a title."""
    ax = axis_of(r.provenance.options)
    return "" if ax.column == "params" else f" along log10 {ax.symbol} ({ax.unit})"


def print_coupling(r) -> None:
    rows = [(iv.family, iv.prev_model, iv.model, iv.x_mid, iv.d_b1, iv.d_b2, iv.gamma, iv.phase or "-",
             iv.reason or "") for iv in r.intervals]
    print_table(rows, ["family", "from", "to", "x_mid", f"d{r.b1}", f"d{r.b2}", "gamma", "phase", "reason"],
                title=f"Local coupling gamma = d{r.b2}/d{r.b1} (min_delta {r.min_delta:g} {r.units}){_along(r)}")
    if r.dropped:
        print(f"left out for a blank score: {', '.join(r.dropped)}")


def print_phases(r) -> None:
    ax = axis_of(r.provenance.options)
    rows = [(m.family, m.model, ax.printed(m.params), m.gamma, m.phase or "-", m.reason) for m in r.models]
    print_table(rows, ["family", "model", ax.label(), "gamma", "phase", "note"],
                title=f"Phases ({r.b1}, {r.b2}): tax < {r.tax_below:g} <= transition <= {r.bonus_above:g} < bonus "
                      f"(min_delta {r.min_delta:g} {r.units}){_along(r)}")
    print_table([(p, r.counts[p], r.families_per_phase.get(p, "-")) for p in r.counts],
                ["phase", "models", "families"], title="Counts")


def print_population(r) -> None:
    rows = [(g.group, g.n, g.pearson_r, g.pearson_p, g.spearman_rho, g.spearman_p, g.perm_pearson_p,
             g.perm_spearman_p, g.reason) for g in r.groups]
    phase = f"; phases with min_delta in {r.units}" if r.group_by == "phase" else ""
    print_table(rows, ["group", "n", "pearson r", "p", "spearman", "p", "perm p (r)", "perm p (rho)", "note"],
                title=f"Population coupling r({r.b1}, {r.b2}) by {r.group_by}, p: analytic + {r.p_method}{phase}")


def print_nc(results: dict) -> None:
    """Every NcResult of ``results`` ({'<estimator>[_pooled]': NcResult}, as `cape nc` returns)."""
    from cape_hpc.analysis.nc import MIN_MODELS

    for r in results.values():
        rows = []
        small = [e.scope for e in r.estimates if e.n_models < MIN_MODELS]
        ax = axis_of(r.provenance.options)
        for e in r.estimates:
            if e.n_models < MIN_MODELS:
                continue
            b = e.bootstrap
            # an extrapolated point is not printed as a number (it can be 3e15 B): the data's edge instead
            point = (ax.printed(e.nc) if not e.extrapolated else
                     f"{_log_b(e.log10_nc, e.fit_range, ax.per)} (extrapolated)")
            rows.append((e.scope, e.n_models, point, _ci(b, 0.95, fit_range=e.fit_range, per=ax.per),
                         _ci(b, 0.68, fit_range=e.fit_range, per=ax.per), _log_b(b.median, e.fit_range, ax.per),
                         f"{b.n_valid}/{b.n_resamples}" if b.n_resamples else "-",
                         _notes(b, e.reason, "extrapolated" if e.extrapolated and not b.extrapolated else "")))
        opts = r.provenance.options
        unit = f" ({ax.suffix})" if ax.suffix else ""
        critical = "" if ax.column == "params" else f"; critical {ax.symbol} in {ax.unit} (--scale {ax.column})"
        print_table(rows, ["scope", "models", ax.label("_c"), f"95% CI{unit}", f"68% CI{unit}", f"boot median{unit}",
                           "valid", "note"],
                    title=f"N_c [{r.estimator}] pair ({r.b1}, {r.b2}){critical}, min_delta in {opts.get('units', '-')}; "
                          f"bootstrap: {opts.get('ci_method', 'none')}, stratify={opts.get('stratify', '-')}, "
                          f"seed={r.provenance.seed}")
        if small:
            print(f"fewer than {MIN_MODELS} models (no estimate): {', '.join(small)}")


def print_deff(r) -> None:
    rows = [(g.group, g.n_models, g.n_families, g.d_eff, _ci(g.bootstrap, 0.95, log=False),
             _ci(g.bootstrap, 0.68, log=False), f"{g.bootstrap.n_valid}/{g.bootstrap.n_resamples}",
             _notes(g.bootstrap, g.reason)) for g in r.groups]
    o = r.provenance.options
    print_table(rows, ["group", "models", "families", "d_eff", "95% CI", "68% CI", "valid", "note"],
                title=f"d_eff ({r.matrix}, {', '.join(r.columns)}); bootstrap {o.get('ci_method', 'none')}, "
                      f"stratify={o.get('stratify', '-')}, seed={r.provenance.seed}")
    if r.dropped:
        print(f"left out for a blank score: {', '.join(r.dropped)}")
    for g in r.groups:
        if g.group == "all" and g.eigenvalues and sum(g.eigenvalues) > 0:
            shares = ", ".join(f"PC{i + 1} {100 * v / sum(g.eigenvalues):.1f}%" for i, v in enumerate(g.eigenvalues))
            print(f"principal-component shares over all {g.n_models} models ({r.matrix}): {shares}")


def print_width(r) -> None:
    rows = [(f.family, f.n, f.r_before, f.r_after, f.null_mean, f"[{fmt(f.null_q025)}, {fmt(f.null_q975)}]",
             f.null_frac_positive, f.p_null, ("exact" if f.exact else f.n_null) if f.n_null else "-", f.reason)
            for f in r.families]
    print_table(rows, ["family", "n", "r before", "r after", "null mean", "null 95%", "null >0", "p_null",
                       "perms", "note"],
                title=f"Width normalisation s / (d_model / {r.d_ref:g}): r({r.b1}, {r.b2}) with the "
                      f"permuted-width control (r does not depend on units)")
    if not r.families:
        print(f"no family has a model with {r.b1}, {r.b2} and d_model (the table is empty; "
              f"{len(r.dropped)} model(s) left out for a blank d_model or score)")


def print_hfield(r) -> None:
    print(f"\nPopulation line: {r.b2} = {r.beta1:.4g} * {r.b1} + {r.beta0:.4g}  (n = {r.n_fit}, {r.units})")
    print_table([(g.group, g.count, g.mean_h, g.std_h) for g in r.groups], [r.group_by, "n", "mean h", "std h"],
                title=f"h per group ({r.units})")


def print_isocline(r) -> None:
    print(f"\nIsocline {r.b2}_c = sqrt(k * {r.b1}) (fractions), k = {r.k:.5g} from {r.calibration}; rule {r.rule}; "
          f"min_delta {r.min_delta:g} {r.units}")
    print_table([(f.family, f.n_intervals, f.n_agree, f.fraction, f.n_above) for f in r.families],
                ["family", "intervals", "agree", "fraction", "above"], title="Agreement per family")
    print(f"total: {r.total_agree}/{r.total_intervals}")


def print_loss(r) -> None:
    print_table([("E", r.E, r.E_se), ("A", r.A, r.A_se), ("alpha", r.alpha, r.alpha_se)],
                ["parameter", "value", "std error"],
                title=f"Loss law L = E + A (N / {r.n_scale:g})^-alpha")
    print(f"R^2 = {r.r2:.6f}; CV of N^alpha (L - E) = {100 * r.cv:.3f}% (ddof {r.cv_ddof}); "
          f"A for N in parameters = {r.A_raw:.4g}")


def print_fixedpoint(r) -> None:
    fit = (f"a = {fmt(r.a)}", f"b = {fmt(r.b)}",
           f"gamma* = {fmt(r.gamma_star)} ({r.stability}; {r.n_points} derivative points) {r.reason}")
    print(f"\nFixed point of gamma ({r.family}, min_delta {fmt(r.min_delta)} {r.units}): dgamma/dlogN = a gamma + b, "
          + ", ".join(fit) + _along(r))


def print_eigen(r) -> None:
    rows = [(w.first_model, w.last_model, w.n_models, w.lambda1, w.lambda2,
             " ".join(f"{v:+.2f}" for v in w.e2), w.e2_angle_deg, w.e2_step_deg) for w in r.windows]
    print_table(rows, ["from", "to", "n", "lambda1", "lambda2", f"e2 ({' '.join(r.columns)})", "angle", "step"],
                title=f"Eigen-geometry {r.family} ({r.matrix}, {r.mode} windows, scores in {r.units})")
    print(f"lambda2 ~ {axis_of(r.provenance.options).symbol}^{fmt(r.power_exponent)} (R^2 = {fmt(r.power_r2)}, {r.n_power_points} windows)")


def print_frontier(r) -> None:
    print(f"\nFrontier ({r.cohort}, n = {r.n}, {r.units}): {r.b2} = {r.slope:.4g} * {r.b1} + {r.intercept:.4g}, "
          f"r = {r.r:.4f}, p = {r.p:.3g}")
    print_table([(lf.lab, lf.n, lf.slope, lf.intercept, lf.holdout_mae, lf.mean_h) for lf in r.labs],
                ["lab", "n", "own slope", "own intercept", "LOLO MAE", "mean h"],
                title=f"Labs with >= {r.min_lab_size} models (leave-one-lab-out)")
    print(f"LOLO MAE mean = {r.lolo_mae_mean:.3f}, std = {r.lolo_mae_std_ddof0:.3f} (ddof 0) / "
          f"{r.lolo_mae_std_ddof1:.3f} (ddof 1) over {r.n_lolo_labs} labs "
          f"({'percentage points' if r.units == 'percent' else r.units + ' units'}: an absolute error of scores)")


def print_diagnose_model(m) -> None:
    print(f"\nDiagnose model ({m.b1}, {m.b2}; {m.units}): min_delta {m.min_delta:g}, line {m.b2} = {m.beta1:.4g} * "
          f"{m.b1} + {m.beta0:.4g}, isocline k = {m.k:.5g} ({m.calibration}, {m.rule}), "
          f"{len(m.panel_model)} panel models")


def print_diagnosis(d) -> None:
    ax = axis_of(d.provenance.options.get("model", {}))
    rows = [("model", d.name or "-"), ("family", d.family or "-"), (ax.symbol, f"{d.params:.4g}"),
            ("scores", f"{fmt(d.b1)}, {fmt(d.b2)} ({d.units})"),
            ("gamma (own interval)", f"{fmt(d.gamma_prev)} from {d.prev_model or '-'}"),
            ("gamma (next interval)", f"{fmt(d.gamma_next)} to {d.next_model or '-'}"),
            ("phase", f"{d.phase or 'unknown'} ({d.phase_source or '-'})"),
            ("isocline side", f"{d.isocline_side or '-'} (isocline at {fmt(d.isocline_b2)}, predicts "
                              f"{'+' if d.predicted_sign > 0 else '-' if d.predicted_sign < 0 else '?'})"),
            ("h", f"{fmt(d.h)} ({d.units})")]
    print_table(rows, ["", ""], title="Diagnosis")
    for line in d.levers:
        print(f"  lever: {line}")
    for line in d.notes + ([d.gamma_reason] if d.gamma_reason else []):
        print(f"  note: {line}")
