/* In-page diagnose: a line-by-line mirror of cape_hpc.analysis.diagnose.diagnose_point, evaluated
 * on the DiagnoseModel stored in the results file (/analysis/diagnose_model).  The tests run both
 * on the same queries and require the same phase, gamma, isocline side and h.
 *
 * capeDiagnose(model, {params, family, scores: {B1: v, B2: v}, d_model, name}) -> diagnosis object
 * with the fields of the Python Diagnosis dataclass (NaN where Python has NaN), or throws an Error
 * with the same message as Python's OptionError for a bad N. */
(function () {
  "use strict";
  var LEVERS = {
    tax: ["negative coupling: scaling one axis may degrade the other",
          "use data curation, more width, or targeted steering rather than more scale"],
    transition: ["near-zero coupling: the model sits at a phase boundary where small recipe changes have " +
                 "large effects", "evaluate several checkpoints before drawing conclusions"],
    bonus: ["positive coupling: improvements reinforce each other",
            "watch for saturation of either benchmark and rotate to a new axis when it stops separating models"]
  };

  function num(v) { return (v === null || v === undefined || v === "") ? NaN : Number(v); }
  function fmtG(v) {  /* Python's '{:.4g}' / '{:g}' for the reason strings */
    var s = Number(v).toPrecision(v === 0 ? 1 : 4);
    if (s.indexOf("e") >= 0) {
      var m = s.split("e"); var mant = m[0].indexOf(".") >= 0 ? m[0].replace(/\.?0+$/, "") : m[0];
      var ex = parseInt(m[1], 10);
      return mant + "e" + (ex < 0 ? "-" : "+") + (Math.abs(ex) < 10 ? "0" : "") + Math.abs(ex);
    }
    return s.indexOf(".") >= 0 ? s.replace(/\.?0+$/, "") : s;
  }
  function gFmt6(v) {  /* Python's '{:g}' (6 significant digits) */
    var s = Number(v).toPrecision(6);
    if (s.indexOf("e") >= 0) return fmtG(Number(s));
    var e = Math.floor(Math.log10(Math.abs(v) || 1));
    if (e < -4) return fmtG(v);
    return s.indexOf(".") >= 0 ? s.replace(/\.?0+$/, "") : s;
  }
  function gamma(loB1, loB2, hiB1, hiB2, loX, hiX, minDelta) {
    if (loX === hiX) return [NaN, "equal N"];
    var d1 = hiB1 - loB1;
    if (Math.abs(d1) < minDelta) return [NaN, "|dB1| = " + fmtG(Math.abs(d1)) + " < min_delta " + gFmt6(minDelta)];
    return [(hiB2 - loB2) / d1, ""];
  }
  function classify(g, taxBelow, bonusAbove) {
    if (g === null || isNaN(g)) return null;
    if (g < taxBelow) return "tax";
    if (g > bonusAbove) return "bonus";
    return "transition";
  }
  function cmpStr(a, b) { return a < b ? -1 : (a > b ? 1 : 0); }

  function capeDiagnose(model, q) {
    var params = num(q.params);
    if (!isFinite(params)) throw new Error("option '--params': must be finite, got " + q.params);
    if (params <= 0) throw new Error("option '--params': must be > 0, got " + q.params);
    var scores = {};
    var src = q.scores || {};
    Object.keys(src).forEach(function (k) { if (src[k] !== undefined) scores[k] = src[k]; });
    var name = q.name || "";
    var family = q.family || "";
    var notes = [];
    var names = model.panel_model;
    var i = name ? names.indexOf(name) : -1;
    if (i >= 0) {
      family = family || model.panel_family[i];
      if (!(model.b1 in scores)) scores[model.b1] = model.panel_b1[i];
      if (!(model.b2 in scores)) scores[model.b2] = model.panel_b2[i];
    }
    var v1 = num(scores[model.b1]), v2 = num(scores[model.b2]);
    var x = Math.log10(params);
    var have = isFinite(v1) && isFinite(v2);
    var prevM = "", nextM = "", gPrev = NaN, gNext = NaN, gReason = "";
    var inPanel = model.panel_family.indexOf(family) >= 0;
    if (family && inPanel && have) {
      var fam = [];
      for (var j = 0; j < names.length; j++) if (model.panel_family[j] === family && names[j] !== name) fam.push(j);
      fam.sort(function (a, b) {
        var d = model.panel_log10_n[a] - model.panel_log10_n[b];
        return d !== 0 ? d : cmpStr(names[a], names[b]);
      });
      var below = fam.filter(function (j) { return model.panel_log10_n[j] <= x; });
      var above = fam.filter(function (j) { return model.panel_log10_n[j] > x; });
      var r;
      if (below.length) {
        var jb = below[below.length - 1];
        prevM = names[jb];
        r = gamma(model.panel_b1[jb], model.panel_b2[jb], v1, v2, model.panel_log10_n[jb], x, model.min_delta);
        gPrev = r[0];
        gReason = r[1] ? "own interval: " + r[1] : "";
      } else {
        gReason = "smallest model of its family: no own interval";
      }
      if (above.length) {
        var ja = above[0];
        nextM = names[ja];
        r = gamma(v1, v2, model.panel_b1[ja], model.panel_b2[ja], x, model.panel_log10_n[ja], model.min_delta);
        gNext = r[0];
        if (r[1]) gReason = [gReason, "next interval: " + r[1]].filter(Boolean).join("; ");
      }
    } else if (family && !inPanel) {
      notes.push("family '" + family + "' is not in the reference panel: no local gamma");
    } else if (!family) {
      notes.push("no family given: no local gamma");
    }
    if (!have) notes.push(model.b1 + " and " + model.b2 + " are needed for gamma, isocline side and h");
    var side = "", ps = 0, isoB2 = NaN, h = NaN;
    if (have) {
      // scores are in the model's units; the isocline works in fractions (DiagnoseModel.to_fraction)
      var scale = model.units === "percent" ? 100.0 : 1.0;
      side = (v2 / scale > Math.sqrt(model.k * (v1 / scale))) ? "above" : "below";
      var s = side === "above" ? 1 : -1;
      ps = model.rule === "above-positive" ? s : -s;
      isoB2 = scale * Math.sqrt(model.k * v1 / scale);
      h = v2 - (model.beta1 * v1 + model.beta0);
    }
    var phase = "", source = "";
    if (isFinite(gPrev)) { phase = classify(gPrev, model.tax_below, model.bonus_above); source = "own interval"; }
    else if (isFinite(gNext)) { phase = classify(gNext, model.tax_below, model.bonus_above); source = "next interval"; }
    else if (ps) {
      phase = ps > 0 ? "bonus" : "tax"; source = "isocline";
      notes.push("phase predicted from the isocline side (no family neighbour interval)");
    }
    var levers = (LEVERS[phase] || ["phase unknown: give the family and both scores"]).slice();
    var dm = num(q.d_model);
    var wf = isFinite(dm) ? dm / model.d_ref : NaN;
    if (isFinite(wf)) notes.push("width factor d_model / d_ref = " + fmtG(wf));
    return { name: name, family: family, params: params, log10_n: x, b1: v1, b2: v2,
             prev_model: prevM, gamma_prev: gPrev, next_model: nextM, gamma_next: gNext,
             gamma_reason: gReason, phase: phase || "", phase_source: source, isocline_side: side,
             isocline_b2: isoB2, predicted_sign: ps, h: h, width_factor: wf, levers: levers, notes: notes };
  }
  window.capeDiagnose = capeDiagnose;

  /* "7B", "125M", "1.5e9", "70 000 000" -> parameters */
  function parseN(text) {
    var t = String(text).trim().replace(/[\s_,]/g, "");
    var m = /^([+-]?[0-9.]+(?:e[+-]?\d+)?)([kmbt]?)$/i.exec(t);
    if (!m) return NaN;
    var mult = { "": 1, k: 1e3, m: 1e6, b: 1e9, t: 1e12 }[m[2].toLowerCase()];
    return Number(m[1]) * mult;
  }
  window.capeParseN = parseN;

  window.capeBuildDiagnosePanel = function (panel, info, el, fmt) {
    var model = info.model;
    var fams = [];
    model.panel_family.forEach(function (f) { if (fams.indexOf(f) < 0) fams.push(f); });
    var dl = el("datalist", { id: "dg-models" }, model.panel_model.map(function (m) { return el("option", { value: m }); }));
    function field(label, input, hint) {
      return el("label", null, [el("span", { text: label }), input, hint ? null : null]);
    }
    var inName = el("input", { id: "dg-name", list: "dg-models", placeholder: "optional: a panel model" });
    var inN = el("input", { id: "dg-n", placeholder: "e.g. 7e9 or 7B", required: "required" });
    var inFam = el("select", { id: "dg-family" }, [el("option", { value: "", text: "(none)" })].concat(
      fams.map(function (f) { return el("option", { value: f, text: f }); })));
    var inB1 = el("input", { id: "dg-b1", type: "number", step: "any", placeholder: "percent" });
    var inB2 = el("input", { id: "dg-b2", type: "number", step: "any", placeholder: "percent" });
    var inD = el("input", { id: "dg-dmodel", type: "number", step: "any", placeholder: "optional" });
    var btn = el("button", { id: "dg-run", type: "submit", text: "Diagnose" });
    var form = el("form", { class: "form card", id: "dg-form" }, [
      dl, field("model name", inName), field("N (parameters)", inN), field("family", inFam),
      field(model.b1 + " (%)", inB1), field(model.b2 + " (%)", inB2), field("d_model", inD), btn,
      el("p", { class: "hint", text: "Computed in this page from the coefficients stored in " + info.source +
        " (population line " + model.b2 + " = " + fmt(model.beta1) + " " + model.b1 + " + " + fmt(model.beta0) +
        "; isocline k = " + fmt(model.k) + ", rule " + model.rule + ", calibration " + model.calibration +
        "; phases: tax < " + model.tax_below + " <= transition <= " + model.bonus_above + " < bonus; " +
        model.panel_model.length + " reference models)." })]);
    var out = el("div", { class: "out card", id: "dg-out" }, [el("p", { class: "hint", text: "Type N, family and scores, then Diagnose. Choosing a panel model fills its family and scores." })]);
    panel.appendChild(form);
    panel.appendChild(out);
    inName.addEventListener("change", function () {
      var i = model.panel_model.indexOf(inName.value);
      if (i < 0) return;
      inN.value = Math.pow(10, model.panel_log10_n[i]).toPrecision(4);
      inFam.value = model.panel_family[i];
      inB1.value = model.panel_b1[i];
      inB2.value = model.panel_b2[i];
    });
    form.addEventListener("submit", function (ev) {
      if (ev) ev.preventDefault();
      out.innerHTML = "";
      var scores = {};
      if (inB1.value !== "") scores[model.b1] = Number(inB1.value);
      if (inB2.value !== "") scores[model.b2] = Number(inB2.value);
      var d;
      try {
        d = capeDiagnose(model, { params: parseN(inN.value), family: inFam.value, scores: scores,
                                  d_model: inD.value === "" ? null : Number(inD.value), name: inName.value.trim() });
      } catch (e) {
        out.appendChild(el("p", { class: "err", id: "dg-error", text: String(e.message || e) }));
        return;
      }
      window.capeLastDiagnosis = d;
      function g(v) { return isFinite(v) ? (v >= 0 ? "+" : "") + v.toFixed(3) : "-"; }
      var rows = [
        ["phase", el("span", { id: "dg-phase", class: "phase-" + d.phase, text: d.phase || "unknown" })],
        ["phase from", d.phase_source || "-"],
        ["gamma (own interval)", g(d.gamma_prev) + (d.prev_model ? "  vs " + d.prev_model : "")],
        ["gamma (next interval)", g(d.gamma_next) + (d.next_model ? "  to " + d.next_model : "")],
        ["isocline side", el("span", { id: "dg-side", text: d.isocline_side || "-" })],
        ["isocline " + model.b2 + " at this " + model.b1, isFinite(d.isocline_b2) ? d.isocline_b2.toFixed(2) + " %" : "-"],
        ["predicted sign", d.predicted_sign > 0 ? "positive" : (d.predicted_sign < 0 ? "negative" : "-")],
        ["h (vs population line)", el("span", { id: "dg-h", text: isFinite(d.h) ? g(d.h) + " points" : "-" })],
        ["log10 N", d.log10_n.toFixed(3)]];
      if (isFinite(d.width_factor)) rows.push(["d_model / d_ref", d.width_factor.toFixed(3)]);
      var dlist = el("dl");
      rows.forEach(function (r) {
        dlist.appendChild(el("dt", { text: r[0] }));
        dlist.appendChild(el("dd", null, [typeof r[1] === "string" ? document.createTextNode(r[1]) : r[1]]));
      });
      out.appendChild(el("h3", { text: "Diagnosis" + (d.name ? ": " + d.name : "") }));
      out.appendChild(dlist);
      out.appendChild(el("h3", { text: "Suggested levers", style: "margin-top:10px" }));
      out.appendChild(el("ul", { id: "dg-levers" }, d.levers.map(function (l) { return el("li", { text: l }); })));
      if (d.gamma_reason || d.notes.length) {
        out.appendChild(el("p", { class: "hint", text: [d.gamma_reason].concat(d.notes).filter(Boolean).join("; ") }));
      }
    });
    /* an example on load, so the panel shows what it does */
    var ex = model.panel_model.indexOf("Pythia-1.4B") >= 0 ? "Pythia-1.4B" : model.panel_model[Math.floor(model.panel_model.length / 2)];
    if (ex) {
      inName.value = ex;
      inName.dispatchEvent(new Event("change"));
      if (form.requestSubmit) form.requestSubmit(btn); else btn.click();
    }
  };
})();
