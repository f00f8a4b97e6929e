"""The HTML report opened in headless Chromium (Debian's, driven by Playwright; never `playwright install`).

Checks: no console error, no network request (every request is routed; anything but file:/data:/blob:
fails the test), every chart renders its plot DOM, and the in-page diagnose gives the same phase,
gamma, isocline side and h as the Python diagnose (``diagnose_point`` on the same stored
DiagnoseModel, and ``cape diagnose --json`` on the shipped table when that command exists) for
three models.  A screenshot is saved under $CAPE_ARTIFACTS (default: artifacts/, ignored by git).
"""
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from cape_hpc.io.store import read_results
from cape_hpc.report.html import write_report
from report_fixture import AUDIT_SAMPLE, cached_sample, cape

CHROMIUM = os.environ.get("CAPE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-gpu", "--disable-dev-shm-usage"]
ARTIFACTS = Path(os.environ.get("CAPE_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))

# (name, params, family, HS, TQA, d_model): a panel model by name, a new model inside a family,
# a new model with no family (phase from the isocline)
QUERIES = [
    {"name": "Pythia-1.4B", "params": None, "family": None, "scores": {}, "d_model": None},
    {"name": "", "params": 5e9, "family": "OPT", "scores": {"HS": 70.0, "TQA": 36.0}, "d_model": 4096},
    {"name": "", "params": 3e9, "family": "", "scores": {"HS": 60.0, "TQA": 45.0}, "d_model": None},
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    h5 = cached_sample()
    info = write_report(h5, d / "report.html")
    return h5, Path(info["path"]), info


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, report):
    _, html_path, _ = report
    ctx = browser.new_context(viewport={"width": 1366, "height": 900}, service_workers="block")
    pg = ctx.new_page()
    console, requests, blocked = [], [], []
    pg.on("console", lambda m: console.append((m.type, m.text)))
    pg.on("pageerror", lambda e: console.append(("pageerror", str(e))))

    def route(r):
        url = r.request.url
        requests.append(url)
        if url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    ctx.route("**/*", route)
    pg.goto(html_path.as_uri())
    pg.wait_for_function("window.capeReport && window.capeReport.rendered + window.capeReport.errors.length"
                         " >= window.capeReport.charts", timeout=60_000)
    pg.wait_for_timeout(300)
    pg.console_log, pg.requests, pg.blocked = console, requests, blocked
    yield pg
    ctx.close()


def test_report_is_one_self_contained_file(report):
    _, html_path, info = report
    text = html_path.read_text(encoding="utf-8")
    assert "plotly.js v" in text  # the library is inlined
    assert '<script src' not in text and '<link rel="stylesheet"' not in text
    assert info["diagnose"] == "/analysis/diagnose_model"
    assert len(info["charts"]) >= 15 and info["skipped"] == []


def test_no_console_errors_no_network(page):
    errors = [m for m in page.console_log if m[0] in ("error", "pageerror")]
    assert errors == []
    assert page.blocked == []
    assert all(u.startswith(("file:", "data:", "blob:")) for u in page.requests)


def test_every_chart_renders(page, report):
    _, _, info = report
    state = page.evaluate("window.capeReport")
    assert state["errors"] == [] and state["rendered"] == state["charts"] == len(info["charts"])
    n = page.locator(".plot").count()
    assert n == len(info["charts"])
    assert page.locator(".plot[data-rendered='1'] .main-svg").count() >= n
    # every chart has drawn data: a trace layer with at least one path/point, a heat map image, or
    # the cells of a table chart (the cross-model phase table)
    drawn = page.evaluate("""Array.from(document.querySelectorAll('.plot')).map(function (p) {
        return p.querySelectorAll('.scatterlayer .trace path, .scatterlayer .point, .barlayer .point path,'
          + ' .heatmaplayer image, .hm image, .table .column-cell text').length; })""")
    assert all(c > 0 for c in drawn), drawn
    # the tables behind the charts, the audit note, the provenance table are there
    assert page.locator("#provenance-table tbody tr").count() >= 10
    assert page.locator(".chart-card details").count() == len(info["charts"])
    assert page.locator("#skipped").count() == 1 and page.locator("#skipped li").count() == 0


def _py_diagnosis(model_tree, q):
    from cape_hpc.analysis.diagnose import DiagnoseModel, diagnose_point

    m = DiagnoseModel.from_tree(model_tree)
    params = q["params"]
    if params is None:
        i = m.panel_model.index(q["name"])
        params = 10 ** m.panel_log10_n[i]
    return diagnose_point(m, params, family=q["family"] or None, scores=q["scores"], d_model=q["d_model"],
                          name=q["name"])


def _close(a, b):
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(a))


def test_diagnose_in_page_equals_python(page, report):
    h5, _, _ = report
    tree = read_results(h5, "/analysis/diagnose_model")
    phases = set()
    for q in QUERIES:
        py = _py_diagnosis(tree, q)
        params = q["params"] if q["params"] is not None else py.params
        js = page.evaluate("q => { const d = capeDiagnose(capeDiagnoseModel, q);"
                           " for (const k in d) if (typeof d[k] === 'number' && !isFinite(d[k])) d[k] = null;"
                           " return d; }", {**q, "params": params})
        for f in ("phase", "phase_source", "isocline_side", "predicted_sign", "prev_model", "next_model",
                  "family", "levers", "notes", "gamma_reason"):
            assert js[f] == getattr(py, f), (q, f, js[f], getattr(py, f))
        for f in ("gamma_prev", "gamma_next", "h", "isocline_b2", "log10_n", "width_factor"):
            assert _close(getattr(py, f), js[f]), (q, f, js[f], getattr(py, f))
        phases.add(py.phase)
    assert len(phases) >= 2  # the three queries exercise different branches


def test_diagnose_in_page_equals_python_many(page, report):
    """Every panel model by name, and random new models (some at a neighbour's exact N, some with no
    scores, unknown families): the JavaScript mirror and diagnose_point agree field by field."""
    import numpy as np

    h5, _, _ = report
    tree = read_results(h5, "/analysis/diagnose_model")
    rng = np.random.default_rng(7)
    fams = sorted(set(tree["panel_family"]))
    queries = [{"name": m, "params": None, "family": None, "scores": {}, "d_model": None} for m in tree["panel_model"]]
    for i in range(60):
        j = int(rng.integers(len(tree["panel_model"])))
        params = float(10 ** tree["panel_log10_n"][j]) if i % 5 == 0 else float(10 ** rng.uniform(7.5, 11.5))
        fam = ["", "NoSuchFamily", *fams][int(rng.integers(len(fams) + 2))]
        scores = {} if i % 7 == 0 else {"HS": float(rng.uniform(25, 90)), "TQA": float(rng.uniform(25, 65))}
        queries.append({"name": "", "params": params, "family": fam, "scores": scores,
                        "d_model": float(rng.choice([512, 2048, 4096])) if i % 2 else None})
    pys = [_py_diagnosis(tree, q) for q in queries]
    jss = page.evaluate("qs => qs.map(q => { const d = capeDiagnose(capeDiagnoseModel, q);"
                        " for (const k in d) if (typeof d[k] === 'number' && !isFinite(d[k])) d[k] = null;"
                        " return d; })", [{**q, "params": py.params} for q, py in zip(queries, pys)])
    for q, py, js in zip(queries, pys, jss):
        for f in ("phase", "phase_source", "isocline_side", "predicted_sign", "prev_model", "next_model",
                  "levers", "notes", "gamma_reason"):
            assert js[f] == getattr(py, f), (q, f, js[f], getattr(py, f))
        for f in ("gamma_prev", "gamma_next", "h", "isocline_b2", "log10_n", "width_factor"):
            assert _close(getattr(py, f), js[f]), (q, f, js[f], getattr(py, f))
    assert {p.phase for p in pys} >= {"tax", "transition", "bonus", ""}


def test_diagnose_panel_ui(page, report):
    """Typing into the form gives the same result as the Python diagnose."""
    h5, _, _ = report
    tree = read_results(h5, "/analysis/diagnose_model")
    q = QUERIES[1]
    py = _py_diagnosis(tree, q)
    page.fill("#dg-name", "")
    page.fill("#dg-n", "5B")
    page.select_option("#dg-family", "OPT")
    page.fill("#dg-b1", "70")
    page.fill("#dg-b2", "36")
    page.fill("#dg-dmodel", "4096")
    page.click("#dg-run")
    assert page.inner_text("#dg-phase") == py.phase
    assert page.inner_text("#dg-side") == py.isocline_side
    assert page.inner_text("#dg-h") == f"{py.h:+.3f} points"
    assert page.locator("#dg-levers li").count() == len(py.levers)
    page.fill("#dg-n", "-3")
    page.click("#dg-run")
    assert "params" in page.inner_text("#dg-error")


def test_diagnose_matches_cli_json(page, report, capsys):
    """`cape diagnose --json` (fitted on the shipped table, as the stored model) gives the page's phase and h."""
    from cape_hpc.cli import main

    h5, _, _ = report
    tree = read_results(h5, "/analysis/diagnose_model")
    for q in QUERIES:
        py = _py_diagnosis(tree, q)
        argv = ["diagnose", "--json"]
        if q["name"]:
            argv += ["--name", q["name"]]
        if q["params"] is not None:
            argv += ["--params", repr(float(q["params"]))]
        if q["family"]:
            argv += ["--family", q["family"]]
        for k, v in q["scores"].items():
            argv += ["--score", f"{k}={v!r}"]
        if q["d_model"]:
            argv += ["--d-model", str(q["d_model"])]
        assert main(argv) == 0, argv
        cli = json.loads(capsys.readouterr().out)
        js = page.evaluate("q => { const d = capeDiagnose(capeDiagnoseModel, q);"
                           " return [d.phase, isFinite(d.h) ? d.h : null, d.isocline_side]; }",
                           {**q, "params": py.params})
        assert cli["phase"] == js[0] == py.phase, argv
        assert cli["isocline_side"] == js[2], argv
        assert _close(cli["h"], js[1]), argv


def test_screenshot_artifact(page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.reload()  # the fresh page: the example diagnosis, not a test's error state
    page.wait_for_function("window.capeReport && window.capeReport.rendered >= window.capeReport.charts",
                           timeout=60_000)
    assert page.inner_text("#dg-phase") in ("tax", "transition", "bonus")
    page.evaluate("window.scrollTo(0, 0)")
    shot = ARTIFACTS / "report_top.png"
    page.screenshot(path=str(shot), full_page=False)
    full = ARTIFACTS / "report_full.png"
    page.screenshot(path=str(full), full_page=True)
    assert shot.stat().st_size > 10_000 and full.stat().st_size > shot.stat().st_size


def test_reproduction_audit_table(page, report):
    """The audit table shows every stored claim with its verdict and the alternatives tried."""
    h5, _, _ = report
    stored = read_results(h5, "/reproduce")
    assert sorted(c["id"] for c in stored["claims"]) == sorted(AUDIT_SAMPLE)
    rows = page.locator("#audit-table tbody tr")
    assert rows.count() == len(stored["claims"])
    heads = page.locator("#audit-table th").all_inner_texts()
    assert heads[:8] == ["claim", "section", "gist", "paper", "stated method", "computed (stated method)",
                         "verdict", "reproducing alternative"]
    tried = heads.index("alternatives tried")
    for i, c in enumerate(stored["claims"]):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[0] == c["id"] and cells[6] == c["verdict"]
        if c["alternative"]:
            assert c["alternative"] in cells[7] and "MATCH" in cells[tried]
    assert page.locator("#audit-table .verdict-reproduced").count() >= 1
    assert page.locator("#audit-table .verdict-not").count() >= 1


def _open_offline(browser, html_path, **context):
    """(context, page, console errors and warnings): the report opened with every request but
    file:/data: aborted."""
    ctx = browser.new_context(**context)
    pg = ctx.new_page()
    errors = []
    pg.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
    pg.goto(Path(html_path).as_uri())
    return ctx, pg, errors


def test_sparse_file_report_opens_and_says_what_is_missing(browser, tmp_path):
    """A file with the loss law only: the page still loads cleanly; every other chart is listed as
    skipped with the missing group named."""
    h5 = tmp_path / "sparse.h5"
    cape("loss", "--out", str(h5))
    info = write_report(h5, tmp_path / "sparse.html")
    assert info["charts"] == ["Loss law"]
    notes = " ".join(s["note"] for s in info["skipped"])
    for group in ("/analysis/coupling", "/analysis/deff", "/analysis/width", "/analysis/frontier", "/dynamics",
                  "/internals", "/steering", "/analysis/diagnose_model"):
        assert group in notes, group
    ctx, pg, errors = _open_offline(browser, info["path"])
    pg.wait_for_function("window.capeReport !== undefined")
    assert errors == []
    assert pg.locator("#skipped li").count() == len(info["skipped"])
    assert pg.locator("#no-answers").count() == 1 and pg.locator("#models").is_hidden()
    assert "no /reproduce group" in pg.inner_text("#audit-table")
    assert "No diagnose model" in pg.inner_text("#diagnose-panel")
    assert pg.locator("#provenance-table tbody tr").count() == 2  # /analysis/loss and its input /scores/loss
    ctx.close()


def test_crossmodel_charts_are_drawn(page, report):
    """The cross-model charts (docs/METHODS.md §3.10) in the page: one ladder trace per family with an
    error bar per model, one layer curve and one d_rep profile per /internals model (relative depth in
    [0, 1]), a bottleneck curve per model with the final tap, and the phase table with every stored row."""
    h5, _, _ = report
    cm = read_results(h5, "/crossmodel")
    internals = read_results(h5, "/internals")

    def plot(title):
        p = page.locator(f".plot[data-title='{title}']")
        assert p.count() == 1, title
        assert p.get_attribute("data-rendered") == "1", title
        return p

    lads = [l for l in cm["ladders"] if l["x"]]
    ladder = plot("Cross-model: internal coupling ladder per family")
    assert ladder.locator(".scatterlayer .trace").count() == len(lads) == 3
    assert ladder.locator(".scatterlayer .trace .points path").count() == sum(len(l["x"]) for l in lads)
    assert ladder.locator(".errorbars .errorbar").count() == sum(len(l["x"]) for l in lads)
    legend = ladder.locator(".legend .traces .legendtext").all_text_contents()
    assert sorted(legend) == sorted(l["family"] for l in lads)

    n_layers = sum(g["n_layers"] for g in internals.values())
    for title in ("Cross-model: per-layer coupling on a relative depth axis", "Cross-model: d_rep profiles"):
        p = plot(title)
        assert p.locator(".scatterlayer .trace").count() == len(internals)
        assert p.locator(".scatterlayer .trace .points path").count() == n_layers
        ticks = [float(t) for t in p.locator(".xtick text").all_text_contents()]
        assert min(ticks) >= 0 and max(ticks) <= 1
    measured = [g for g in internals.values() if g["bottleneck"]["measured"]]
    bott = plot("Cross-model: projection bottleneck curves")
    assert bott.locator(".scatterlayer .trace").count() == len(measured) >= 1
    assert bott.locator(".scatterlayer .trace .js-line").count() == len(measured)

    phase = plot("Cross-model: internal vs benchmark phase")
    assert f"({cm['phase_agreement']['n_agree']} of {cm['phase_agreement']['n_both']} agree)" in \
        phase.locator(".gtitle").text_content()
    text = " ".join(phase.locator(".table .column-cell text").all_text_contents())
    for p in cm["phases"]:
        assert p["model"] in text
    assert phase.locator(".table .y-column").count() >= 8   # the eight columns of the phase rows


# --------------------------------------------------------------------------- one report of one study

@pytest.fixture(scope="module")
def study(browser, tmp_path_factory):
    """The report of an analysis file plus a merged cross-model file (`cape report A.h5 B.h5`), open."""
    from report_fixture import split_sample

    d = tmp_path_factory.mktemp("study")
    a, b = split_sample(d)
    info = json.loads(cape("report", str(a), str(b), "-o", str(d / "study.html"), "--json"))
    ctx, pg, errors = _open_offline(browser, info["path"], viewport={"width": 1366, "height": 900},
                                    service_workers="block")
    pg.wait_for_function("window.capeReport && window.capeReport.rendered + window.capeReport.errors.length"
                         " >= window.capeReport.charts", timeout=60_000)
    pg.errors, pg.info, pg.folder, pg.files = errors, info, d, (a, b)
    yield pg
    ctx.close()


def _visible(pg, selector):
    return pg.evaluate(f"Array.from(document.querySelectorAll({selector!r})).filter(e => e.offsetParent !== null)"
                       ".map(e => e.getAttribute('data-model'))")


def test_study_report_leads_with_the_answers(study):
    """The answers come first (ladders, N_c, phases, the verdict counts), then ONE collapsed line for what
    was not computed, then the other charts, then the per-model detail."""
    assert study.errors == [] and study.evaluate("window.capeReport.errors") == []
    order = study.evaluate("Array.from(document.querySelectorAll('main > *')).map(e => e.id)")
    assert order[:4] == ["answers", "skipped", "charts", "models"] and study.locator("#no-answers").count() == 0
    titles = study.locator("#answers .plot").evaluate_all("ps => ps.map(p => p.getAttribute('data-title'))")
    assert set(titles) == {"Phase diagram", "Running coupling and N_c", "Cross-model: internal coupling ladder per family",
                           "Cross-model: internal vs benchmark phase"}
    audit = read_results(study.files[0], "/reproduce")
    cells = study.locator("#verdict-counts tbody tr").evaluate_all(
        "rs => rs.map(r => Array.from(r.cells).map(c => c.textContent))")
    assert {k: int(v) for k, v in cells} == {k: int(v) for k, v in audit["counts"].items()}
    n_nc = sum(len(g["estimates"]) for g in read_results(study.files[0], "/analysis/nc").values())
    n_nc += len(read_results(study.files[1], "/crossmodel")["nc"])
    assert study.locator("#nc-table tbody tr").count() == n_nc
    # the not-computed line: one <details>, closed, one summary line (here: nothing is missing)
    nc = study.locator("details#skipped")
    assert nc.count() == 1 and nc.get_attribute("open") is None
    assert nc.locator("summary").count() == 1 and nc.locator("summary").bounding_box()["height"] < 30
    assert study.locator("#skipped li").count() == len(study.info["skipped"]) == 0
    # the first chart on the page is an answer, above every other chart
    first = study.evaluate("document.querySelector('.plot').getAttribute('data-title')")
    assert first in titles


def test_study_model_picker_shows_one_model_at_a_time(study):
    """A <select> of the per-model detail: one model's charts visible, switching shows the other's, drawn."""
    models = study.locator("#model-picker option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(models) == sorted(read_results(study.files[1], "/internals"))
    for m in models + models[:1]:
        study.select_option("#model-picker", m)
        study.wait_for_timeout(150)
        shown = _visible(study, "#models .chart-card")
        assert shown and set(shown) == {m}, (m, shown)
        assert len(shown) == 2                    # its layer chart and its head map
        for p in study.locator("#models .chart-card").all():
            if p.is_visible():
                box = p.locator(".plot .main-svg").first.bounding_box()
                assert p.locator(".plot").get_attribute("data-rendered") == "1" and box["width"] > 300


def _overlap(a, b):
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def test_study_toolbar_does_not_cover_titles_screenshot(study):
    """Hovering a chart shows plotly's toolbar; it never overlaps the chart's title (bounding boxes), for
    every visible chart with a title; a screenshot of the top of the page is written to the test folder."""
    study.evaluate("window.scrollTo(0, 0)")
    shot = study.folder / "study_top.png"
    study.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    checked = 0
    for p in study.locator(".plot").all():
        if not p.is_visible() or p.locator(".gtitle").count() == 0:
            continue
        p.scroll_into_view_if_needed()
        p.hover(position={"x": 200, "y": 200})
        bar = p.locator(".modebar")
        bar.wait_for(state="visible")
        assert not _overlap(bar.bounding_box(), p.locator(".gtitle").first.bounding_box()), p.get_attribute("data-title")
        checked += 1
    assert checked >= len(study.info["charts"]) - 2       # every chart but the hidden model's two
    study.screenshot(path=str(study.folder / "study_hover.png"))
