"""The report in a real browser: Debian's headless Chromium opens the page from disk with the
network off (tests/chromium.py), and the test fails on any console error, any network
request, or any figure that did not draw. Screenshots and the thousand-cell measurements
are saved under tests/artifacts/ (gitignored)."""

import json
from pathlib import Path

import pytest
from chromium import Chromium
from report_runs import run_a_records, scaled, thousand, write_run

import reports

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
    assert len(figs) == 11  # the comparison, then the 10 figures of run A (test_reports.py)
    assert figs[0]["title"].startswith("Run B / run A") and figs[1]["title"].startswith("Status")
    # what the browser holds for the loss curve is the record's loss curve
    train = next(r for r in recs if r["workload"] == "train" and r["dtype"] == "float64")
    plotted = browser.evaluate("""[...document.querySelectorAll('div.figure')]
        .filter(gd => gd.dataset.title.startsWith('Loss'))[0].data
        .filter(t => t.name === 'numpy float64')[0].y""")
    assert plotted == pytest.approx(train["metrics"]["losses"])
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.screenshot(ARTIFACTS / "report.png")
    print(f"\nreport with compare: {len(figs)} figures drawn in {seconds:.2f} s; screenshot {shot}")


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


def test_thousand_cells_page_size_and_load_time(browser, tmp_path):
    run = write_run(tmp_path / "big", thousand(list(run_a_records()), 1000))
    page = reports.write_report(run)
    size_mb = page.stat().st_size / 2**20
    seconds = open_report(browser, page)
    figs = assert_every_figure_drawn(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "report-1000-cells.png", max_height=4000)
    measured = {"cells": 1000, "html_mb": round(size_mb, 2), "figures": len(figs), "load_to_drawn_s": round(seconds, 2)}
    (ARTIFACTS / "report-1000-cells.json").write_text(json.dumps(measured))
    print(f"\nthousand cells: {measured}")
    assert size_mb < 12  # plotly.js is 4.6 MB of it
    assert seconds < 60  # 2 shared cores, headless software rendering
