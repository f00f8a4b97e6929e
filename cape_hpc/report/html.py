"""One self-contained HTML report of one study, from one results file or several (``Results.load_many``).

Everything is inlined: the CSS, plotly.js (the copy the ``plotly`` pip package ships in
``plotly/package_data/plotly.min.js``; no CDN), the chart specs and tables as JSON, and the
report's own script (``assets/report.js``: renders the charts and the diagnose panel).  The page
makes no network request.

Sections: overview (file(s), version, commit); the study's answers (the records marked ``answer``:
ladders, N_c, phases; the N_c table with intervals and the audit's verdict counts,
``report/answers.py``); one collapsed line listing what was not computed (each skipped chart with the
missing group); the other charts, one card each with the table behind it; the per-model cards behind
a model picker (one model shown at a time); the diagnose panel (``assets/diagnose.js`` mirrors
``cape_hpc.analysis.diagnose``'s pure function on the ``DiagnoseModel`` stored in the file), the
reproduction-audit table, the provenance of every group, every stored group's scalars and tables.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cape_hpc.report.answers import answers
from cape_hpc.report.data import Results, Skip, jsonable
from cape_hpc.report.layout import AuditResult, DiagnoseModel, InputTable
from cape_hpc.report.registry import Extracted, figure_specs
from cape_hpc.report.style import table

ASSETS = Path(__file__).resolve().parent / "assets"


def plotly_js() -> str:
    """The minified plotly.js bundled with the ``plotly`` pip package (read from disk, offline)."""
    try:
        import plotly
    except ImportError as exc:  # pragma: no cover - plotly is an install requirement
        from cape_hpc.errors import CapeError

        raise CapeError("cape report needs the 'plotly' package (pip install plotly)") from exc
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path.read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that can sit inside <script>...</script> without ending it early."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _json(obj: Any) -> str:
    return _script_safe(json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":")))


# --------------------------------------------------------------------------- charts (plotly)

def build_charts(res: Results) -> tuple[list[dict], list[dict]]:
    """(charts [{id, title, source, spec, table, note, model, section}], skipped [{chart, note}]): the
    cards of every record of ``report/registry.py`` with a chart, ``section`` "answers" (a record
    marked ``answer``), "models" (a card of one model) or "detail"; a record whose data is missing is
    one skip note (records sharing ``skip_as`` share it)."""
    extracted = Extracted(res)
    charts: list[dict] = []
    skipped: list[dict] = []
    for s in figure_specs():
        if s.chart is None:
            continue
        try:
            cards = s.cards(extracted(s))
        except Skip as exc:
            note = {"chart": s.skip_as or s.title, "note": str(exc)}
            if note not in skipped:
                skipped.append(note)
            continue
        charts += [{"id": f"chart{len(charts) + i}", "title": c.title, "source": c.source, "spec": c.spec,
                    "table": table(c.rows), "note": c.note, "model": c.model,
                    "section": "answers" if s.answer else ("models" if c.model else "detail")}
                   for i, c in enumerate(cards)]
    return charts, skipped


# --------------------------------------------------------------------------- tables of every group

def _cell(v: Any) -> Any:
    v = jsonable(v)
    if isinstance(v, float):
        return None if not math.isfinite(v) else v
    if isinstance(v, (list, dict)):
        s = json.dumps(v, default=str)
        return s if len(s) <= 120 else s[:117] + "..."
    return v


def _is_row_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(dataclasses.is_dataclass(r) for r in v)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The fields of a dataclass as cells; a nested dataclass (a ConfidenceInterval, a bootstrap
    summary) becomes ``field.sub`` cells."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type) and not prefix:
            out.update(_flat(v, f"{f.name}."))
        else:
            out[prefix + f.name] = _cell(v)
    return out


def group_tables(res: Results) -> list[dict]:
    """Every stored result: its scalar fields (nested values flattened) and its tables (lists of rows)."""
    out = []
    for path, obj in res.stored.items():
        if isinstance(obj, InputTable):
            continue
        scalars, tables = {}, []
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.name == "provenance":
                continue
            if _is_row_list(v):
                rows = [_flat(r) for r in v]
                cols = list(rows[0])
                tables.append({"name": f.name, "columns": cols, "rows": [[r.get(c) for c in cols] for r in rows]})
            elif dataclasses.is_dataclass(v) and not isinstance(v, type):
                scalars.update({k: c for k, c in _flat(v, f"{f.name}.").items()})
            elif isinstance(v, np.ndarray) and v.size > 200:
                scalars[f.name] = f"array {v.shape}"
            else:
                scalars[f.name] = _cell(v)
        out.append({"group": path, "scalars": scalars, "tables": tables})
    for path, name in res.unknown.items():
        out.append({"group": path, "scalars": {"note": f"a {name}, a result class the report does not read"},
                    "tables": []})
    return out


AUDIT_COLUMNS = (("id", "claim"), ("section", "section"), ("gist", "gist"), ("paper", "paper"),
                 ("method", "stated method"), ("value", "computed (stated method)"), ("verdict", "verdict"),
                 ("alternative", "reproducing alternative"), ("grade", "grade"),
                 ("spec_curve", "specification curve (matches, clean values, coverage)"),
                 ("mc_tolerance", "Monte Carlo tolerance"))


def _alts(claim: Any) -> str:
    """'name: value (MATCH|no|?)' for each alternative tried."""
    out = []
    for a in claim.alternatives_tried:
        mark = "MATCH" if a.matches else ("?" if a.undecided else "no")
        out.append(f"{a.name}: {a.value} ({mark})")
    return "; ".join(out)


def audit_table(res: Results) -> dict | None:
    """The reproduction audit (``/reproduce``, an AuditResult): one row per claim of the paper."""
    a = res.optional("/reproduce", AuditResult)
    if a is None:
        return None
    cols = [label for _, label in AUDIT_COLUMNS] + ["alternatives tried", "why (when not computed)"]
    rows = [[_cell(getattr(c, key)) for key, _ in AUDIT_COLUMNS] + [_alts(c), _cell(c.reason)] for c in a.claims]
    return {"source": "/reproduce", "columns": cols, "rows": rows,
            "counts": {k: _cell(v) for k, v in a.counts.items()}, "registry": _cell(a.registry)}


# --------------------------------------------------------------------------- diagnose model

def diagnose_model(res: Results) -> tuple[dict | None, str]:
    """The stored DiagnoseModel (coefficients for the in-page diagnose) as JSON, and its path."""
    m = res.optional("/analysis/diagnose_model", DiagnoseModel)
    if m is None:
        return None, ""
    return jsonable(m), "/analysis/diagnose_model"


# --------------------------------------------------------------------------- page

def build_html(res: Results, title: str | None = None) -> tuple[str, dict]:
    charts, skipped = build_charts(res)
    dmodel, dpath = diagnose_model(res)
    if dmodel is None:
        skipped.append({"chart": "Diagnose panel", "note": f"no /analysis/diagnose_model group (a DiagnoseModel) in {res.path}"})
    skipped += [{"chart": f"{group} of {path}", "note": "also stored in an earlier file: the report shows that one"}
                for group, path in res.shadowed.items()]
    payload = {
        "file": ", ".join(os.path.basename(f) for f in res.files or [res.path]),
        "answers": answers(res),
        "root": {k: _cell(v) for k, v in res.root_attrs.items()},
        "charts": charts,
        "skipped": skipped,
        "audit": audit_table(res),
        "groups": group_tables(res),
        "provenance": [{k: _cell(v) for k, v in r.items()} for r in res.provenance_rows()],
        "diagnose": {"model": dmodel, "source": dpath} if dmodel is not None else None,
    }
    title = title or f"CAPE report: {payload['file']}"
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    js = (ASSETS / "report.js").read_text(encoding="utf-8")
    djs = (ASSETS / "diagnose.js").read_text(encoding="utf-8")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'">
<title>{html.escape(title)}</title>
<style>{css}</style>
<script>{_script_safe(plotly_js())}</script>
</head>
<body>
<header><h1>{html.escape(title)}</h1><div id="meta"></div></header>
<nav id="toc"></nav>
<main>
<section id="answers"><h2>The study's answers</h2><div id="answer-list"></div></section>
<details id="skipped"></details>
<section id="charts"><h2>Charts</h2><div id="chart-list"></div></section>
<section id="models"><h2>Per model</h2><div id="model-list"></div></section>
<section id="diagnose"><h2>Diagnose a model</h2><div id="diagnose-panel"></div></section>
<section id="audit"><h2>Reproduction audit</h2><div id="audit-table"></div></section>
<section id="provenance"><h2>Provenance of every group</h2><div id="provenance-table"></div></section>
<section id="groups"><h2>Stored results (scalars and tables)</h2><div id="group-list"></div></section>
</main>
<footer>Self-contained report written by cape_hpc; charts by plotly.js (MIT), inlined.</footer>
<script id="cape-data" type="application/json">{_json(payload)}</script>
<script>{_script_safe(js)}</script>
<script>{_script_safe(djs)}</script>
<script>window.capeInitDiagnose();</script>
</body>
</html>
"""
    info = {"charts": [c["title"] for c in charts], "skipped": skipped,
            "diagnose": dpath or None, "n_groups": len(payload["groups"])}
    return page, info


def write_report(results_path: str | os.PathLike | list, out: str | os.PathLike, title: str | None = None, *,
                 force: bool = True) -> dict:
    """One report of one results file or of several (a list: ``Results.load_many``)."""
    paths = list(results_path) if isinstance(results_path, (list, tuple)) else [results_path]
    res = Results.load_many(paths)
    page, info = build_html(res, title)
    from cape_hpc.io.publication import publish_bytes

    out = publish_bytes(out, page.encode("utf-8"), force=force)
    info["path"] = str(out.resolve())
    info["bytes"] = out.stat().st_size
    return info
