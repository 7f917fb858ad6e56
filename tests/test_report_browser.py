"""The report in a real browser: Debian's headless Chromium opens the page from disk with the
network off (tests/chromium.py), and the test fails on any console error, any network
request, any figure that did not draw, or two legend labels of a figure that overlap.
Screenshots and the page-weight and draw-time measurements are saved under tests/artifacts/
(gitignored)."""

import json
import os
from pathlib import Path

import pytest
from chromium import Chromium
from report_runs import run_a_records, scaled, thousand, write_run

import reports
from reports.html import PLOTLY_JS, write_plotly

ARTIFACTS = Path(__file__).parent / "artifacts"
RENDERED = "document.body && document.body.dataset.rendered"
# per figure: its traces, and the marks plotly drew for them in the SVG (lines, bars,
# markers, boxes, heatmap images), so a figure with data but nothing on screen fails
DRAWN = """[...document.querySelectorAll('div.figure')].map(gd => ({
  id: gd.id, title: gd.dataset.title, traces: (gd.data || []).length,
  marks: gd.querySelectorAll('.scatterlayer path.js-line, .scatterlayer path.point, .barlayer path, '
                             + '.boxlayer path, .heatmaplayer image').length,
  width: gd.getBoundingClientRect().width, height: gd.getBoundingClientRect().height}))"""


@pytest.fixture(scope="module")
def browser():
    chromium = Chromium()
    yield chromium
    chromium.close()


def open_report(browser, path: Path) -> float:
    browser.events.clear()
    seconds = browser.open(path, RENDERED)
    assert browser.console_errors() == []
    assert browser.network_requests() == []
    return seconds


def assert_every_figure_drawn(browser) -> list[dict]:
    figs = browser.evaluate(DRAWN)
    assert figs and int(browser.evaluate("document.body.dataset.rendered")) == len(figs)
    for f in figs:
        assert f["traces"] > 0 and f["marks"] > 0 and f["width"] > 300 and f["height"] > 150, f
    return figs


def test_report_renders_offline_with_no_console_error(browser, tmp_path):
    recs = list(run_a_records())
    a = write_run(tmp_path / "a", recs)
    b = write_run(tmp_path / "b", scaled(recs, 2.0))
    page = reports.write_report(a, compare=b)
    seconds = open_report(browser, page)
    figs = assert_every_figure_drawn(browser)
    assert len(figs) == 10  # the comparison, then the 9 figures of run A (test_reports.py)
    assert figs[0]["title"].startswith("Run B / run A") and figs[1]["title"].startswith("Status")
    # what the browser holds for the validation curve is the record's validation losses
    train = next(r for r in recs if r["workload"] == "train" and r["dtype"] == "float64")
    plotted = browser.evaluate("""[...document.querySelectorAll('div.figure')]
        .filter(gd => gd.dataset.title.startsWith('Validation loss'))[0].data
        .filter(t => t.name === 'numpy float64')[0].y""")
    assert plotted == pytest.approx([v for _, v in train["metrics"]["val_losses"]])
    assert_legends_apart(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.screenshot(ARTIFACTS / "report.png")
    print(f"\nreport with compare: {len(figs)} figures drawn in {seconds:.2f} s; screenshot {shot}")


# every legend entry's and colour-bar label's box on screen, per figure
LABEL_BOXES = """[...document.querySelectorAll('div.figure')].map(gd => [...gd.querySelectorAll(
  '.legend .traces, .colorbar text')].map(e => { const r = e.getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom]; }).filter(b => b[2] > b[0] && b[3] > b[1]))"""


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1


def assert_legends_apart(browser) -> None:
    """No two legend labels of a figure lie over each other (the status grid's colour bar did)."""
    for i, boxes in enumerate(browser.evaluate(LABEL_BOXES)):
        pairs = [(a, b) for j, a in enumerate(boxes) for b in boxes[j + 1:] if _overlap(a, b)]
        assert not pairs, (i, pairs)


def test_overlapping_labels_are_caught(browser, tmp_path):
    """The check above can fail: a colour bar of eight labels in a 120 px figure overlaps."""
    page = tmp_path / "overlap.html"
    js = write_plotly(tmp_path).name
    page.write_text(f'<html><body><script src="{js}"></script><div class="figure" id="f"></div><script>'
                    "Plotly.newPlot('f', [{type: 'heatmap', z: [[0, 7]], colorbar: {tickvals: [0,1,2,3,4,5,6,7],"
                    " ticktext: ['unavailable', 'nonconformant', 'c', 'd', 'e', 'f', 'g', 'h']}}], {height: 120})"
                    ".then(() => { document.body.dataset.rendered = '1'; });</script></body></html>")
    browser.open(page, RENDERED)
    with pytest.raises(AssertionError):
        assert_legends_apart(browser)


def test_console_error_and_network_request_are_caught(browser, tmp_path):
    """The checks above can fail: a page that logs an error and fetches a URL is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); fetch('https://example.com/x').catch(() => {});"
                   "document.body.dataset.rendered = '1';</script></body></html>")
    browser.events.clear()
    browser.open(bad, RENDERED)
    browser.evaluate("new Promise(r => setTimeout(r, 300))")  # let the fetch be attempted
    assert "boom" in browser.console_errors()
    assert "https://example.com/x" in browser.network_requests()


def test_pages_weight_and_draw_time_next_to_an_empty_page(browser, tmp_path):
    """The default-sized page and the thousand-cell one: their weight (the page; plotly.js is
    one file shared by the folder) and the seconds from navigation until every figure drew,
    measured in one browser beside an empty page and plotly.js alone, so a loaded machine
    shows as a slow empty page rather than a slow report."""
    small = reports.write_report(write_run(tmp_path / "small", list(run_a_records())))
    big = reports.write_report(write_run(tmp_path / "big", thousand(list(run_a_records()), 1000)))
    empty, bare = tmp_path / "empty.html", tmp_path / "big" / "plotly-only.html"
    empty.write_text("<html><body><script>document.body.dataset.rendered = '1'</script></body></html>")
    bare.write_text(f'<html><body><script src="{PLOTLY_JS}"></script>'
                    "<script>document.body.dataset.rendered = String(typeof Plotly)</script></body></html>")
    measured = {"cells": 1000, "html_mb": round(big.stat().st_size / 2**20, 3),
                "default_html_mb": round(small.stat().st_size / 2**20, 3),
                "plotly_js_mb": round((big.parent / PLOTLY_JS).stat().st_size / 2**20, 2)}
    for name, page in (("empty", empty), ("plotly_only", bare), ("default", small), ("thousand", big)):
        open_report(browser, page)  # once to warm the cache, as a second visit
        measured[f"{name}_s"] = round(open_report(browser, page), 2)
        if name in ("default", "thousand"):
            figs = assert_every_figure_drawn(browser)
            assert_legends_apart(browser)
            measured[f"{name}_first_figure_s"] = round(browser.evaluate("window.gptbenchDrawnMs[0]") / 1e3, 2)
    measured["figures"] = len(figs)
    measured["load_average_1m"] = round(os.getloadavg()[0], 2)  # a time without its load says little
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "report-1000-cells.png", max_height=4000)
    (ARTIFACTS / "report-1000-cells.json").write_text(json.dumps(measured))
    print(f"\npage weight and draw time: {measured}")
    assert measured["default_html_mb"] < 0.2 and measured["html_mb"] < 1.5  # plotly.js not in them
    assert measured["thousand_s"] < 60  # 2 shared cores, headless software rendering
