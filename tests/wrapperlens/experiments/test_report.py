"""report.html from a synthetic results dict: content, offline-ness, and a real headless render.

The results are the rendering fixture of `report_fixture` (made-up numbers). Expected values are
recomputed here from the fixture's records, not read back from the report's code.
"""

import base64
import html
import io
import json
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

from tests.wrapperlens.experiments.report_fixture import (
    FAILED_ERROR,
    FAILED_KEY,
    MISSING_KEY,
    synthetic_results,
)
from wrapperlens import report
from wrapperlens.experiments.pcfg.report_plots import FIGURES
from wrapperlens.experiments.pcfg.report_plots import fig5, fig8

CHROMIUM = shutil.which("chromium")
def write_report(out, results):
    return report.write_report(out, results, {"pcfg": FIGURES})


def report_page(results, out):
    return report.report_page(results, out, {"pcfg": FIGURES})


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium) for a render")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    results = synthetic_results(out)
    path = write_report(out, results)
    return out, results, path


def test_write_report_replaces_report_html_atomically(built):
    out, results, path = built
    assert path == out / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    before = path.read_text()
    with pytest.raises(ValueError, match="'format' is 1"):
        write_report(out, {**results, "format": 1})
    assert path.read_text() == before  # a failed rewrite leaves the old page
    assert not [p.name for p in out.iterdir() if p.name.startswith(".report.html")]


def test_claims_table_lists_each_claim_with_its_status_and_spread(built):
    _, results, path = built
    page = path.read_text()
    rows = re.findall(r"<tr class='claim'>(.*?)</tr>", page, re.DOTALL)
    assert len(rows) == len(results["claims"]) == 7
    for row, claim in zip(rows, results["claims"]):
        assert f"<td>{claim['id']}</td>" in row
        assert html.escape(claim["title"]) in row and claim["title"] not in row  # escaped
        assert re.search(rf"class=\"badge \w+\">{re.escape(claim['status'])}</span>", row)
        values = claim["values"]
        if values:
            mean = sum(values) / len(values)
            assert f"{mean:.3f} ({min(values):.3f}–{max(values):.3f})" in row
            assert f"n = {len(values)}" in row
        else:
            assert "n = " not in row
    assert page.count('class="badge ok">reproduced') == 3
    assert page.count('class="badge bad">not reproduced') == 1


def test_every_image_is_an_embedded_png(built):
    page = built[2].read_text()
    sources = re.findall(r"<img\b[^>]*\bsrc='([^']*)'", page)
    assert len(sources) == len(re.findall(r"<img\b", page)) == 5  # Figs 5-9, all with data
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and min(image.size) > 150


def test_nothing_outside_inlined_scripts_names_the_network(built):
    page = built[2].read_text()
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", page)
    assert not re.search(r"""url\(\s*["']?\s*(https?:)?//|@import""", page)
    assert "unpkg" not in page and "<iframe" not in page
    # The circuitsvis bundle is inlined once (its JS holds XML namespace strings such as
    # "http://www.w3.org/2000/svg", which fetch nothing); outside scripts no URL appears at all.
    assert page.count("var CircuitsVis=") == 1
    outside = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.DOTALL)
    assert "http:" not in outside and "https:" not in outside


def test_failed_and_missing_records_are_listed_with_their_errors(built):
    page = built[2].read_text()
    problems = re.search(r"runs failed or missing: 2.*?</ul>", page, re.DOTALL)[0]
    assert FAILED_KEY in problems and html.escape(FAILED_ERROR) in problems
    assert MISSING_KEY in problems and "no run directory" in problems
    assert FAILED_ERROR not in page  # the error's "<synthetic> &" is escaped
    assert "finished 49 · failed 1 · missing 1 · skipped 1" in page
    assert "family I not in this preset" in page  # the skipped run, with why
    assert "ValueError: synthetic attention failure" in page  # the failed attention analysis


def test_fig5_points_are_mean_and_range_over_the_finished_seeds(built):
    _, results, _ = built
    figure = fig5(results)

    def point(prior, eta, c_tr, metric):
        panel = next(p for p in figure.panels if p.title == f"family=C, prior={prior}: {metric}")
        series = next(s for s in panel.series if s.label.startswith(f"eta={eta},"))
        i = series.x.index(c_tr)
        return series.mean[i], series.lo[i], series.hi[i], series.n[i]

    for prior, eta, c_tr, seeds in (("L", "M", 0.0, 2), ("L", "S", 1.0, 3), ("H", "S", 0.5, 2)):
        values = [r["final"]["acc/O_FT/cte0"] for r in results["runs"]
                  if r["stage"] == "finetune" and r["status"] == "finished"
                  and (r["params"]["prior"], r["params"]["eta"], r["params"]["c_tr"])
                  == (prior, eta, c_tr)]
        assert len(values) == seeds  # the failed / missing run is left out, not zero
        assert point(prior, eta, c_tr, "acc/O_FT/cte0") == pytest.approx(
            (np.mean(values), min(values), max(values), seeds))


def test_fig8_lines_average_the_probes_of_every_seed(built):
    _, results, _ = built
    probes = [a["result"] for a in results["analyses"] if a["kind"] == "probe"]
    (panel,) = fig8(results).panels
    finetuned = next(s for s in panel.series if s.label == "finetuned")
    assert panel.xticklabels == probes[0]["layers"]
    expected = np.mean([p["models"]["finetuned"] for p in probes], axis=0)
    np.testing.assert_allclose(finetuned.mean, expected)
    assert panel.floor[1] == [pytest.approx(0.22)] * 3


def test_results_without_analyses_or_anything_still_render(tmp_path):
    results = synthetic_results(tmp_path, attention=False) | {"analyses": []}
    page = write_report(tmp_path, results).read_text()
    assert "Not drawn: no finished prune analyses" in page
    assert "Not drawn: no finished probe analyses" in page
    assert "No attention analyses" in page and len(re.findall(r"<img\b", page)) == 3
    broken = {"key": "prune/x", "kind": "prune", "run": "?", "status": "finished",
              "result": {"ks": 5, "top": {"acc/O_PT/cte0": [0.5]}}}
    page = report_page(results | {"analyses": [broken]}, tmp_path)
    assert re.search(r"Fig. 7.*?Not drawn: TypeError", page, re.DOTALL)
    assert len(re.findall(r"<img\b", page)) == 3  # the other figures are still drawn
    bare = report_page({"format": 2, "settings": ["pcfg"], "runs": None}, tmp_path)
    assert bare.count("Not drawn:") == 5 and "No claims" in bare
    view = {"key": "attention/x", "kind": "attention", "status": "finished",
            "result": {"html": "nowhere.html", "label": "lost"}}
    assert "Attention view file not found: nowhere.html" in report_page(
        {"format": 2, "analyses": [view]}, tmp_path)


def _chromium(page, *flags, timeout=90):
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=5000",
         *flags, f"file://{page}"],
        check=True, capture_output=True, text=True, timeout=timeout,
    ).stdout


def _page_requests(net_log) -> list[str]:
    """http(s) URLs the page asked for, from Chromium's NetLog.

    The browser's own background requests (update checks, accounts) have no origin; requests
    made by a file:// page carry the opaque origin "null" and a file:// isolation key.
    """
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [p["url"] for e in log["events"] if e["type"] == start_job
            and "url" in (p := e.get("params", {})) and p["url"].startswith(("http", "ws"))
            and (p.get("initiator") == "null" or "file://" in p.get("network_isolation_key", ""))]


@needs_chromium
def test_attention_views_render_and_the_page_fetches_nothing(built, tmp_path):
    out, _, path = built
    # Control: the request detector sees a page that does fetch.
    fetching = tmp_path / "fetching.html"
    fetching.write_text('<p>x</p><img src="http://example.invalid/x.png">')
    _chromium(fetching, f"--log-net-log={tmp_path / 'control.json'}", "--dump-dom")
    assert _page_requests(tmp_path / "control.json") == ["http://example.invalid/x.png"]

    dom = _chromium(path, f"--log-net-log={tmp_path / 'net.json'}", "--dump-dom")
    assert _page_requests(tmp_path / "net.json") == []
    view_ids = re.findall(r'<div id="(circuits-vis-[^"]+)"></div>', path.read_text())
    assert len(view_ids) == 3  # 1 layer x (pretrained, fine-tuned, difference)
    for view_id in view_ids:  # React filled each empty div with the head selector and canvases
        rendered = re.search(rf'<div id="{view_id}">(.*?)</div>\s*<script>', dom, re.DOTALL)
        assert rendered and "Head Selector" in rendered[1] and "<canvas" in rendered[1], view_id


def _colour_stats(png) -> tuple[int, int]:
    """(pixels with a clear hue, distinct colours): plots are colourful, text and tables grey."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    colourful = int((rgb.max(-1) - rgb.min(-1) > 80).sum())
    return colourful, len(np.unique(rgb.reshape(-1, 3), axis=0))


@needs_chromium
def test_report_screenshot_shows_the_plots(built, tmp_path):
    _, _, path = built
    control = tmp_path / "control.html"
    # Control: the same page with no plots and no attention drawn (render calls removed).
    page = re.sub(r"<img\b[^>]*>", "", path.read_text())
    control.write_text(re.sub(r"<script>CircuitsVis\.render\(.*?</script>", "", page,
                              flags=re.DOTALL))
    shots = {}
    for name, page in (("report", path), ("control", control)):
        _chromium(page, f"--screenshot={tmp_path / name}.png", "--window-size=1200,3000")
        shots[name] = _colour_stats(tmp_path / f"{name}.png")
    print(f"(coloured pixels, distinct colours): {shots}")
    # The control's colour is the red of the problem notes and the badges' antialiased edges.
    assert shots["report"][0] > shots["control"][0] + 5_000, "the plots were not drawn"
    assert shots["report"][1] > 4 * shots["control"][1], "too few colours for plots"
