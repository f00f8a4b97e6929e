/* cape_hpc report: renders the charts (plotly.js, inlined before this script), the tables, the
 * provenance and the diagnose panel from the JSON payload in <script id="cape-data">.
 * No network: everything this page needs is in the file. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("cape-data").textContent);
  var state = { rendered: 0, charts: DATA.charts.length, errors: [] };
  window.capeReport = state;

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "html") e.innerHTML = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "number") {
      if (!isFinite(v)) return "-";
      if (Number.isInteger(v)) return String(v);
      var a = Math.abs(v);
      return (a !== 0 && (a >= 1e5 || a < 1e-3)) ? v.toExponential(3) : v.toPrecision(4).replace(/\.?0+$/, "");
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    return String(v);
  }
  function table(columns, rows, opts) {
    opts = opts || {};
    var thead = el("thead", null, [el("tr", null, columns.map(function (c) { return el("th", { text: c }); }))]);
    var tbody = el("tbody");
    rows.forEach(function (r) {
      var tr = el("tr");
      r.forEach(function (v, i) {
        var td = el("td", { text: fmt(v) });
        if (typeof v === "number") td.className = "num";
        if (opts.verdictCol === i && typeof v === "string") {
          var s = v.toLowerCase();
          td.className = s.indexOf("not reproduced") === 0 ? "verdict-not"
            : (s.indexOf("reproduced only") === 0 ? "verdict-alternative"
            : (s.indexOf("reproduced") === 0 ? "verdict-reproduced" : "verdict-other"));
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    return el("div", { class: "tablewrap" }, [el("table", null, [thead, tbody])]);
  }

  /* header, table of contents */
  var meta = document.getElementById("meta");
  var r = DATA.root || {};
  meta.innerHTML = "";
  [["file", DATA.file], ["cape_hpc", r.cape_hpc_version], ["commit", (r.git_commit || "").slice(0, 12)],
   ["created", r.created], ["command", r.command_line]].forEach(function (kv) {
    if (kv[1]) { meta.appendChild(document.createTextNode(kv[0] + ": ")); meta.appendChild(el("code", { text: kv[1] })); meta.appendChild(document.createTextNode("   ")); }
  });
  var toc = document.getElementById("toc");
  [["#answers", "Answers"], ["#charts", "Charts (" + DATA.charts.length + ")"], ["#models", "Per model"],
   ["#diagnose", "Diagnose"], ["#audit", "Reproduction audit"],
   ["#provenance", "Provenance"], ["#groups", "Stored results"]].forEach(function (a) {
    toc.appendChild(el("a", { href: a[0], text: a[1] }));
  });

  /* what was not computed: one collapsed line */
  var skipped = document.getElementById("skipped");
  skipped.appendChild(el("summary", { text: DATA.skipped.length
    ? "Not computed (" + DATA.skipped.length + "): " + DATA.skipped.map(function (s) { return s.chart; }).join(", ")
    : "Not computed: nothing (every chart drawn)" }));
  if (DATA.skipped.length) {
    skipped.appendChild(el("ul", { class: "skips" }, DATA.skipped.map(function (s) { return el("li", { text: s.chart + ": " + s.note }); })));
  }

  /* the title sits below plotly's toolbar (shown on hover) */
  function clearTitle(layout) {
    if (!layout || !layout.title) return;
    if (typeof layout.title === "string") layout.title = { text: layout.title };
    layout.title.yref = "container"; layout.title.y = 1; layout.title.yanchor = "top";
    layout.title.pad = { t: 34, b: 0, l: 0, r: 0 };
    layout.margin = layout.margin || {};
    layout.margin.t = Math.max(layout.margin.t || 0, 76);
  }

  /* one card per chart, in its section: answers, other charts, or one model's (behind the picker) */
  function chartCard(c) {
    var plot = el("div", { class: "plot", id: c.id, "data-title": c.title });
    if (c.spec.layout && c.spec.layout.height) plot.style.height = c.spec.layout.height + "px";
    var wide = c.spec.layout && (c.spec.layout.height > 500 || c.spec.layout.wide);
    if (c.spec.layout) delete c.spec.layout.wide;
    clearTitle(c.spec.layout);
    var card = el("div", { class: "card chart-card" + (wide ? " wide" : ""), "data-model": c.model || "" }, [
      el("h3", { text: c.title }),
      el("div", { class: "src", text: "from " + c.source }),
      c.note ? el("div", { class: "note", text: c.note }) : null,
      plot,
      (c.table && c.table.rows.length) ? el("details", null, [el("summary", { text: "table behind the chart (" + c.table.rows.length + " rows)" }),
                                                          table(c.table.columns, c.table.rows)]) : null]);
    return { card: card, plot: plot };
  }
  function draw(c, plot) {
    try {
      Plotly.newPlot(plot, c.spec.data, c.spec.layout, { responsive: true, displaylogo: false,
        displayModeBar: "hover", modeBarButtonsToRemove: ["sendDataToCloud"] }).then(function () {
        state.rendered += 1; plot.setAttribute("data-rendered", "1");
      }, function (e) { state.errors.push(c.title + ": " + e); });
    } catch (e) {
      state.errors.push(c.title + ": " + e);
      plot.appendChild(el("div", { class: "err", text: "chart failed: " + e }));
    }
  }
  var grids = {};
  ["answers", "detail", "models"].forEach(function (k) { grids[k] = el("div", { class: "chart-grid" }); });
  var ans = DATA.answers || {};
  var alist = document.getElementById("answer-list");
  if (ans.verdicts) {
    alist.appendChild(el("div", { class: "card", id: "verdict-counts" }, [el("h3", { text: "Reproduction audit: verdicts" }),
      table(["verdict", "claims"], Object.keys(ans.verdicts).map(function (k) { return [k, ans.verdicts[k]]; }))]));
  }
  if (ans.nc && ans.nc.rows.length) {
    alist.appendChild(el("div", { class: "card", id: "nc-table" }, [el("h3", { text: "N_c per family (log10 parameters, 95% bootstrap interval)" }),
      table(ans.nc.columns, ans.nc.rows)]));
  }
  alist.appendChild(grids.answers);
  document.getElementById("chart-list").appendChild(grids.detail);
  DATA.charts.forEach(function (c) {
    var made = chartCard(c);
    grids[c.section || "detail"].appendChild(made.card);
    draw(c, made.plot);
  });

  if (!alist.querySelector(".card")) {
    alist.appendChild(el("p", { class: "skips", id: "no-answers", text: "None of the study's answers (ladders, N_c, "
      + "phase tables, audit verdicts) is in these files: see what was not computed below." }));
  }

  /* the model picker: one model's charts at a time */
  var models = [];
  DATA.charts.forEach(function (c) { if (c.section === "models" && models.indexOf(c.model) < 0) models.push(c.model); });
  var mlist = document.getElementById("model-list");
  function showModel(name) {
    Array.prototype.forEach.call(grids.models.children, function (card) {
      var on = card.getAttribute("data-model") === name;
      card.style.display = on ? "" : "none";
      var p = card.querySelector(".plot");
      if (on && p && p.getAttribute("data-rendered") === "1") Plotly.Plots.resize(p);
    });
  }
  if (models.length) {
    var pick = el("select", { id: "model-picker" }, models.map(function (m) { return el("option", { value: m, text: m }); }));
    pick.addEventListener("change", function () { showModel(pick.value); });
    mlist.appendChild(el("label", { class: "picker" }, [document.createTextNode("model (" + models.length + "): "), pick]));
    mlist.appendChild(grids.models);
    showModel(models[0]);
  } else {
    document.getElementById("models").style.display = "none";
  }
  window.capeShowModel = showModel;

  /* reproduction audit */
  var audit = document.getElementById("audit-table");
  if (DATA.audit) {
    var vc = DATA.audit.columns.indexOf("verdict");
    var counts = DATA.audit.counts || {};
    audit.appendChild(el("div", { class: "src", text: "from " + DATA.audit.source +
      (DATA.audit.registry ? " (claims registry " + DATA.audit.registry + ")" : "") + ". Verdicts: " +
      Object.keys(counts).map(function (k) { return k + " " + counts[k]; }).join(", ") }));
    audit.appendChild(table(DATA.audit.columns, DATA.audit.rows, { verdictCol: vc }));
  } else {
    audit.appendChild(el("p", { class: "skips", id: "audit-missing", text: "No reproduction audit in this file (no /reproduce group: run `cape reproduce --out` to add it)." }));
  }

  /* provenance */
  var pcols = ["group", "method", "options", "seed", "n_resamples", "inputs", "version"];
  document.getElementById("provenance-table").appendChild(
    table(pcols, DATA.provenance.map(function (p) { return pcols.map(function (c) { return p[c]; }); })));

  /* every group */
  var glist = document.getElementById("group-list");
  DATA.groups.forEach(function (g) {
    var keys = Object.keys(g.scalars);
    var d = el("details", { class: "card" }, [el("summary", { text: g.group + "  (" + keys.length + " values, " + g.tables.length + " tables)" })]);
    if (keys.length) d.appendChild(table(["field", "value"], keys.map(function (k) { return [k, g.scalars[k]]; })));
    g.tables.forEach(function (t) {
      d.appendChild(el("h3", { text: t.name + " (" + t.rows.length + " rows)", style: "margin-top:8px" }));
      d.appendChild(table(t.columns, t.rows));
    });
    glist.appendChild(d);
  });

  /* diagnose panel (window.capeDiagnose is defined in diagnose.js, inlined after this script) */
  window.capeInitDiagnose = function () {
    var panel = document.getElementById("diagnose-panel");
    if (!DATA.diagnose || !window.capeDiagnose) {
      panel.appendChild(el("p", { class: "skips", text: "No diagnose model in this file (`cape analyze --out` stores /analysis/diagnose_model)." }));
      return;
    }
    window.capeDiagnoseModel = DATA.diagnose.model;
    window.capeBuildDiagnosePanel(panel, DATA.diagnose, el, fmt);
  };
})();
