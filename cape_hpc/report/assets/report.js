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
  [["#diagnose", "Diagnose"], ["#charts", "Charts (" + DATA.charts.length + ")"], ["#audit", "Reproduction audit"],
   ["#provenance", "Provenance"], ["#groups", "Stored results"]].forEach(function (a) {
    toc.appendChild(el("a", { href: a[0], text: a[1] }));
  });

  /* charts */
  var skipped = document.getElementById("skipped");
  if (DATA.skipped.length) {
    skipped.appendChild(el("div", { class: "card" }, [
      el("h3", { text: "Not drawn (" + DATA.skipped.length + ")" }),
      el("ul", { class: "skips" }, DATA.skipped.map(function (s) { return el("li", { text: s.chart + ": " + s.note }); }))]));
  }
  var list = el("div", { class: "chart-grid" });
  document.getElementById("chart-list").appendChild(list);
  DATA.charts.forEach(function (c) {
    var plot = el("div", { class: "plot", id: c.id, "data-title": c.title });
    if (c.spec.layout && c.spec.layout.height) plot.style.height = c.spec.layout.height + "px";
    var wide = c.spec.layout && (c.spec.layout.height > 500 || c.spec.layout.wide);
    if (c.spec.layout) delete c.spec.layout.wide;
    var card = el("div", { class: "card chart-card" + (wide ? " wide" : "") }, [
      el("h3", { text: c.title }),
      el("div", { class: "src", text: "from " + c.source }),
      c.note ? el("div", { class: "note", text: c.note }) : null,
      plot,
      (c.table && c.table.rows.length) ? el("details", null, [el("summary", { text: "table behind the chart (" + c.table.rows.length + " rows)" }),
                                                          table(c.table.columns, c.table.rows)]) : null]);
    list.appendChild(card);
    try {
      Plotly.newPlot(plot, c.spec.data, c.spec.layout, { responsive: true, displaylogo: false,
        modeBarButtonsToRemove: ["sendDataToCloud"] }).then(function () {
        state.rendered += 1; plot.setAttribute("data-rendered", "1");
      }, function (e) { state.errors.push(c.title + ": " + e); });
    } catch (e) {
      state.errors.push(c.title + ": " + e);
      plot.appendChild(el("div", { class: "err", text: "chart failed: " + e }));
    }
  });

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
