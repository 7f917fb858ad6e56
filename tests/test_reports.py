"""The report of real run directories: what each figure plots is what the records hold, the
page fetches nothing, the compare view flags exactly what its noise rule says, the exports
keep every record. (The page in a real browser: tests/test_report_browser.py.)"""

import copy
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from plotly.offline import get_plotlyjs
from report_runs import repeated, rerun_records, run_a_records, scaled, thousand, write_run

import reports
from reports import figures
from reports.compare import compare_runs
from reports.export import records_table
from reports.headline import RULE, headline
from reports import fmt
from reports.facets import log_ticks
from reports.html import PLOTLY_JS, Page, esc, table
from reports.load import cells_frame, frameworks_used, host_label, hosts_table, impl_label, load_run, loss_frame
from reports.report import _headline
from suite.cli import main


def figures_of(html: str) -> list[dict]:
    block = re.search(r'<script type="application/json" id="figures">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)["specs"]  # "<\/" is a valid JSON escape of "</"


def captions(html: str) -> list[str]:
    return re.findall(r'<div class="figure" id="fig-\d+" data-title="([^"]*)"', html)


def by_title(html: str, start: str) -> list[dict]:
    return [f for t, f in zip(captions(html), figures_of(html)) if t.startswith(start)]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run") / "a", list(run_a_records()))


@pytest.fixture(scope="module")
def records(run_a):
    return {(r["workload"], r["backend"], r["dtype"], r["device"], r["status"]): r for r in run_a_records()}


@pytest.fixture(scope="module")
def page(run_a):
    return reports.write_report(run_a).read_text()


def test_statuses_of_the_real_cells(records):
    statuses = sorted(s for *_, s in records)
    assert statuses == sorted(["ok"] * 6 + ["unavailable", "diverged", "crash", "oom", "nonconformant"])


def test_page_loads_the_folders_one_plotly_file_and_nothing_else(page, run_a, tmp_path):
    assert (run_a / "report.html").is_file()
    # plotly.js is one file beside the page, named by its version, byte for byte the library's
    assert re.findall(r'<script[^>]*src="([^"]+)"', page) == [PLOTLY_JS] and PLOTLY_JS.startswith("plotly-")
    assert (run_a / PLOTLY_JS).read_text() == get_plotlyjs() and "plotly.js v" not in page
    assert not re.search(r"<link[^>]+href=", page) and not re.search(r"https?://", page)
    assert len(page.encode()) < 100_000  # the page weighs its figures, not the library (4.8 MB)
    # a second page in the folder shares the file: not written again
    stamp = (run_a / PLOTLY_JS).stat().st_mtime_ns
    reports.write_report(run_a, run_a / "again.html")
    assert (run_a / PLOTLY_JS).stat().st_mtime_ns == stamp
    # a page written elsewhere gets its own copy there
    reports.write_report(run_a, tmp_path / "elsewhere" / "r.html") if (tmp_path / "elsewhere").mkdir() is None else None
    assert (tmp_path / "elsewhere" / PLOTLY_JS).stat().st_size == (run_a / PLOTLY_JS).stat().st_size
    # status, validation loss by seconds, loss by step, training tokens/s, MFU, decoding tokens/s,
    # memory, memory estimate, attention (a panel per pass)
    assert len(captions(page)) == len(figures_of(page)) == 9


def _trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t["name"] == name)


def test_validation_loss_against_the_training_seconds_time_to_target_counts(page, records):
    fig, = by_title(page, "Validation loss against training seconds")
    for dtype in ("float32", "float64"):
        m = records[("train", "numpy", dtype, "cpu", "ok")]["metrics"]
        line = _trace(fig, f"numpy {dtype}")
        # an evaluation after step s: the first s step times (workloads/train.py's time to target)
        assert line["x"] == pytest.approx([sum(m["step_ms"][:s]) / 1e3 for s, _ in m["val_losses"]])
        assert line["y"] == pytest.approx([v for _, v in m["val_losses"]])
    target = records[("train", "numpy", "float32", "cpu", "ok")]["metrics"]["target_val_loss"]
    floor = records[("train", "numpy", "float32", "cpu", "ok")]["metrics"]["entropy_floor"]
    assert sorted(s["y0"] for s in fig["layout"]["shapes"]) == pytest.approx(sorted([target, floor]))
    assert any(a["text"] == f"target {target:.4g}" for a in fig["layout"]["annotations"])


def test_time_to_target_is_where_the_seconds_curve_crosses_the_target():
    """A record that reached its target: the seconds of its first evaluation at or below it
    are the record's own time_to_target_s."""
    rec = copy.deepcopy(next(r for r in records_list() if r["workload"] == "train" and r["status"] == "ok"))
    m = rec["metrics"]
    m["target_val_loss"] = target = m["val_losses"][2][1] + 1e-9  # the third evaluation reaches it
    step = m["val_losses"][2][0]
    m.update(target_reached=True, steps_to_target=step, time_to_target_s=sum(m["step_ms"][:step]) / 1e3)
    fig = _figure(figures.loss_curves(loss_frame([rec]), cells_frame([rec])), "Validation loss against")
    x, y = fig["data"][0]["x"], fig["data"][0]["y"]
    first = next(i for i, v in enumerate(y) if v <= target)
    assert x[first] == pytest.approx(m["time_to_target_s"]) and first == 2


def test_coinciding_curves_are_one_curve_and_the_caption_says_so(page, records):
    f32, f64 = ([v for _, v in records[("train", "numpy", d, "cpu", "ok")]["metrics"]["val_losses"]]
                for d in ("float32", "float64"))
    spread = max(abs(a - b) for a, b in zip(f32, f64))
    assert spread <= figures.COINCIDE_NATS  # the same function in two dtypes, 30 steps
    fig, = by_title(page, "Training loss against step")
    line = _trace(fig, "numpy float32 = numpy float64")
    assert line["y"] == pytest.approx(records[("train", "numpy", "float32", "cpu", "ok")]["metrics"]["losses"])
    assert not [t for t in fig["data"] if t["name"] in ("numpy float32", "numpy float64")]
    assert _trace(fig, "numpy float32 = numpy float64 val")["mode"] == "markers"  # a few cells: diamonds
    caption = re.search(r'data-title="Training loss against step[^"]*"></div>', page) and \
        re.findall(r"<figcaption>Training loss against step.*?</figcaption>", page)[0]
    assert "numpy float32, numpy float64: " in caption and "shown as one curve in the step figure" in caption
    diverged = _trace(fig, "numpy float32 (diverged)")
    assert diverged["y"][-1] is None  # "nan" in the record: a gap, not a number
    floor = records[("train", "numpy", "float32", "cpu", "ok")]["metrics"]["entropy_floor"]
    assert floor in [s["y0"] for s in fig["layout"]["shapes"]]


def _val_frame(curves: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"cell_id": c, "kind": "val", "step": 10 * (i + 1), "loss": v}
                         for c, ys in curves.items() for i, v in enumerate(ys)])


def test_coinciding_groups_curves_within_the_tolerance_at_every_evaluation():
    groups = figures.coinciding(_val_frame({"a": [3.0, 2.0, 1.5], "b": [3.0, 2.0004, 1.5], "c": [3.0, 2.0, 1.52],
                                            "d": [3.001, 2.0, 1.5]}))
    assert [(ids, pytest.approx(spread)) for ids, spread in groups] == [(["a", "b", "d"], 0.001)]
    assert figures._agreement(0.0004).startswith("identical validation losses")
    assert figures._agreement(0.003) == "validation losses within 0.003 nats of each other at every evaluation"
    # other evaluation steps are another curve, however close the losses
    frame = _val_frame({"a": [3.0, 2.0]})
    frame = pd.concat([frame, frame.assign(cell_id="b", step=frame.step + 1)])
    assert figures.coinciding(frame) == []


def test_throughput_mfu_and_memory_bars_are_the_records(page, records):
    fig, = by_title(page, "Training throughput")
    # one panel (host, spec): tiny on this host; a bar per implementation, a colour per dtype
    assert [a["text"] for a in fig["layout"]["annotations"]] == [f"{host_label(records_list()[0])} · tiny"]
    m = records[("train", "numpy", "float64", "cpu", "ok")]["metrics"]
    bar = next(t for t in fig["data"] if t["name"] == "float64")
    assert bar["x"] == ["numpy"] and bar["y"] == [pytest.approx(m["tokens_per_s"])]
    assert bar["error_y"]["array"] == [pytest.approx(m["tokens_per_s_q3"] - m["tokens_per_s"])]
    assert bar["error_y"]["arrayminus"] == [pytest.approx(m["tokens_per_s"] - m["tokens_per_s_q1"])]
    fig, = by_title(page, "MFU")
    assert next(t for t in fig["data"] if t["name"] == "float64")["y"] == [pytest.approx(100 * m["mfu"])]
    assert 0 < m["mfu"] < 1

    fig, = by_title(page, "Peak memory")
    # every cell with a peak is one point, in its (host, spec) panel, named by its workload
    plotted = sorted((t["name"], x, y) for t in fig["data"] for x, y in zip(t["x"], t["y"]))
    expected = sorted((r["workload"], impl_label(r) + ("" if r["device"] == "cpu" else f" ({r['device']})"),
                       r["peak_rss_mb"]) for r in records_list() if r.get("peak_rss_mb") is not None)
    assert [p[:2] for p in plotted] == [e[:2] for e in expected]
    assert [p[2] for p in plotted] == pytest.approx([e[2] for e in expected])
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [70.0]  # the oom cell's budget line
    assert fig["layout"]["yaxis"]["type"] == "log"
    oom = next(t for t in fig["data"] if "x" in t["marker"]["symbol"])
    assert oom["name"] == "train" and oom["y"][oom["marker"]["symbol"].index("x")] > 70.0
    fig, = by_title(page, "Memory estimate")
    ratios = sorted(y for t in fig["data"] for y in t["y"])
    assert ratios == pytest.approx(sorted(r["memory_ratio"] for r in records_list() if r.get("memory_ratio")))


def records_list() -> list[dict]:
    return list(run_a_records())


def test_the_page_opens_with_the_headline(page):
    assert re.findall(r'<section id="([^"]+)">', page)[0] == "headline"
    body = page.split('<section id="headline">')[1].split("</section>")[0]
    h = headline(records_list())
    assert table(h.text()) in body and all(esc(s) in body for s in h.sentences) and esc(RULE) in body
    assert body.index("</table>") < body.index(esc(h.sentences[0]))  # the sentence under the table


def _panel(trace: dict) -> int:
    """The 0-based panel of a trace in a faceted figure (reports/facets.py: xaxis x, x2, x3, ...)."""
    return int(trace.get("xaxis", "x")[1:] or 1) - 1


def _figure(made: list, title: str) -> dict:
    """A figure as the page holds it: plain JSON."""
    fig, = [f for t, f, *_ in made if t.startswith(title)]
    return json.loads(pio.to_json(fig, validate=False))


def test_a_thousand_cells_pool_into_one_bar_per_panel_implementation_and_dtype():
    recs = thousand(records_list(), 1000)
    # seeds of the same train cell at half and twice the speed: three cells to pool per bar
    trained = [r for r in recs if r["workload"] == "train" and r["status"] == "ok"]
    for speed in (0.5, 2.0):
        copies = scaled(trained, speed)
        for r in copies:
            r.update(cell_id=f"{speed}-{r['cell_id']}", seed=r["seed"] + 1000)
        recs += copies
    cells = cells_frame(recs)
    train = cells[(cells.status == "ok") & (cells.workload == "train")]
    assert set(train.groupby(["host", "spec", "impl", "dtype"]).size()) == {3}
    keys = sorted(set(zip(train.host, train.spec)))
    fig = _figure(figures.throughput(cells), "Training throughput")
    assert [a["text"] for a in fig["layout"]["annotations"]] == [f"{h} · {s}" for h, s in keys] and len(keys) == 16
    assert len(fig["data"]) <= len(keys) * train.dtype.nunique()  # not one trace per cell
    bars = 0
    for t in fig["data"]:
        host, spec = keys[_panel(t)]
        for x, y in zip(t["x"], t["y"]):
            pooled = train[(train.host == host) & (train.spec == spec) & (train.impl == x) & (train.dtype == t["name"])]
            assert y == pytest.approx(pooled.tokens_per_s.median())
            assert t["error_y"]["array"][t["x"].index(x)] == pytest.approx(pooled.tokens_per_s_q3.max() - y)
            bars += 1
    assert bars == len(train.groupby(["host", "spec", "impl", "dtype"]))
    # hundreds of curves: lines without a marker per evaluation, validation in the seconds figure only
    made = figures.loss_curves(loss_frame(recs), cells)
    assert made[1][0] == "Training loss against step"
    assert not [t for t in _figure(made, "Training loss")["data"] if t["name"].endswith(" val")]
    assert {t["mode"] for t in _figure(made, "Validation loss")["data"]} == {"lines"}
    fig = _figure(figures.memory(cells), "Peak memory")
    for i in range(len(keys)):  # log axes labelled at round values written in full, never "3, 2, 9 8 7"
        axis = fig["layout"][f"yaxis{i + 1 if i else ''}"]
        assert axis["type"] == "log" and len(axis["tickvals"]) >= 3
        assert axis["ticktext"] == [f"{v:,.6f}".rstrip("0").rstrip(".") for v in axis["tickvals"]]
        assert all(float(f"{v:.1g}") == v or float(f"{v:.2g}") == v for v in axis["tickvals"])
    assert sum(len(t["y"]) for t in fig["data"]) == cells.peak_rss_mb.notna().sum()  # every cell still a point
    page = Page("big")
    _headline(page, SimpleNamespace(records=recs))
    assert "rows that did not end ok</summary>" in "".join(page.sections[0][2])  # a long headline folds its failures


def test_bars_stand_in_the_headlines_rank_order():
    """Each panel's bars: the headline's ranked rows in rank order (labelled #rank), then the
    unranked by their value. The ranks come from reports.headline, computed apart here."""
    recs = thousand(records_list(), 1000)
    # a passing conformance cell for every (host, backend, dtype) that trained: every ok row is ranked
    passing = next(r for r in records_list() if r["workload"] == "conformance" and r["status"] == "ok")
    for r in [r for r in recs if r["workload"] == "train" and r["status"] == "ok"]:
        recs.append({**copy.deepcopy(passing), "backend": r["backend"], "host_class": r["host_class"],
                     "dtype": r["dtype"], "cell_id": "conf-" + r["cell_id"]})
    rows = headline(recs).rows
    rank = figures.ranks(rows)
    fig = _figure(figures.throughput(cells_frame(recs), rank), "Training throughput")
    keys = [tuple(a["text"].split(" · ")) for a in fig["layout"]["annotations"] if " · " in a["text"]]
    ranked_panels = 0
    for i, (host, spec) in enumerate(keys):
        order = fig["layout"][f"xaxis{i + 1 if i else ''}"]["categoryarray"]
        best: dict[str, int] = {}
        for r in rows:
            if (r["host"], r["spec"]) == (host, spec) and r["rank"] is not None and r["label"] in order:
                best[r["label"]] = min(best.get(r["label"], r["rank"]), r["rank"])
        first = order[:len(best)]
        # ranked first, best rank first (rows sharing a rank, a tie, in any order among themselves)
        assert set(first) == set(best) and [best[x] for x in first] == sorted(best.values())
        ranked_panels += bool(best)
        for t in (t for t in fig["data"] if _panel(t) == i):
            for x, text in zip(t["x"], t["text"]):
                r = [row["rank"] for row in rows if (row["host"], row["spec"], row["label"], row["dtype"]) ==
                     (host, spec, x, t["name"]) and row["rank"] is not None]
                assert text == (f"#{min(r)}" if r else "")
    assert ranked_panels >= 4  # the synthetic run ranks rows on several panels

    # the order within a panel, by hand: rank 1 and 2 first, whatever their speed; then by value
    bars = pd.DataFrame({"x": ["a", "b", "c", "d"], "series": "float32", "y": [10.0, 40.0, 30.0, 20.0]})
    assert figures._panel_order(bars, {("h", "s", "d", "float32"): 1, ("h", "s", "a", "float32"): 2},
                                ("h", "s")) == ["d", "a", "b", "c"]


def test_attention_and_status_grid(page, records):
    fig, = by_title(page, "Attention: TFLOP/s against sequence length T")
    panels = [a["text"] for a in fig["layout"]["annotations"]]
    host = host_label(records_list()[0])
    assert panels == [f"{host} · float32 · {kind}" for kind in ("backward", "forward", "fwd_bwd")]
    for i, kind in enumerate(("backward", "forward", "fwd_bwd")):
        axis = fig["layout"][f"xaxis{i + 1 if i else ''}"]
        # a log axis labelled at the measured lengths, not 2 3 5 between decades
        assert axis["type"] == "log" and axis["tickvals"] == [16, 32, 64] and axis["ticktext"] == ["16", "32", "64"]
        for prov in ("numpy", "sdpa"):
            rows = [r for r in records[("attention", prov, "float32", "cpu", "ok")]["metrics"]["rows"] if r["pass"] == kind]
            trace = next(t for t in fig["data"] if t["name"] == f"{prov} D=16" and _panel(t) == i)
            assert trace["x"] == [16, 32, 64] and trace["y"] == pytest.approx([r["tflops_per_s"] for r in rows])
    grid, = by_title(page, "Status")
    trace = grid["data"][0]
    col = trace["x"].index("train<br>numpy")
    assert trace["text"][0][col] == "oom 1<br>diverged 1<br>unavailable 1<br>ok 2"
    # no colour bar (its eight labels overlapped in a short grid): the key is a row of chips
    assert trace["showscale"] is False
    key = re.search(r"colour: the worst status of the square's cells: (.*?)</p>", page).group(1)
    assert re.findall(r">([a-z_]+)</span>", key) == ["crash", "oom", "diverged", "nonconformant", "unavailable", "ok"]


def _table_after(page: str, marker: str) -> tuple[list[str], list[list[str]]]:
    """(column titles, rows of cell texts) of the first table after marker."""
    body = page[page.index(marker):]
    body = body[body.index("<table>"):body.index("</table>")]
    head = re.findall(r"<th>(.*?)</th>", body.split("</thead>")[0])
    rows = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in body.split("</thead>")[1].split("</tr>") if "<td" in r]
    return head, rows


def test_tables_write_one_format_per_unit_under_human_titles(page, records):
    m = records[("train", "numpy", "float64", "cpu", "ok")]["metrics"]
    head, rows = _table_after(page, "<summary>training numbers</summary>")
    assert head[:4] == ["host", "backend", "spec", "dtype"] and "MFU" in head
    row = next(r for r in rows if r[3] == "float64")
    tps = row[head.index("tokens/s: median step [quartiles]")]
    assert tps == f"{fmt.rate(m['tokens_per_s'])} [{fmt.rate(m['tokens_per_s_q1'])}-{fmt.rate(m['tokens_per_s_q3'])}]"
    assert row[head.index("MFU")] == fmt.pct(m["mfu"]) and row[head.index("MFU")].endswith("%")
    g = records[("generate", "numpy", "float32", "cpu", "ok")]["metrics"]
    head, rows = _table_after(page, "<summary>generation numbers</summary>")
    assert rows[0][head.index("decode tokens/s")] == fmt.rate(g["decode_tokens_per_s"])
    assert rows[0][head.index("overall tokens/s (prefill and refills included)")] == fmt.rate(g["tokens_per_s"])
    assert rows[0][head.index("time to first token (ms)")] == fmt.ms(g["time_to_first_token_ms"])
    assert "prefill" in page[page.index("<summary>generation numbers</summary>"):][:800]  # the two rates explained
    # no record field as a column title anywhere
    titles = set(re.findall(r"<th>(.*?)</th>", page))
    assert not {t for t in titles if re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", t)}, titles


def test_numbers_have_one_format_per_unit():
    assert [fmt.rate(v) for v in (142_345, 4161, 67_210, 216, 2027.3, 9.996, 0.05801)] == \
        ["142,000", "4,160", "67,200", "216", "2,030", "10.0", "0.0580"]
    assert [fmt.pct(v) for v in (0.05801, 0.1234, 0.0087, 1.0)] == ["5.8%", "12%", "0.87%", "100%"]
    assert [fmt.mb(3012.4), fmt.count(1024), fmt.tick(3000), fmt.tick(1.5), fmt.sci(3e-2)] == \
        ["3,010", "1,024", "3,000", "1.5", "3.0e-02"]
    assert fmt.spread(100.0, 90.0, 110.0) == "100 [90.0-110]"
    assert {fmt.rate(None), fmt.rate(float("nan")), fmt.pct("nan"), fmt.spread(None, 1, 2)} == {""}
    # a log axis of 50 MB to 3 GB: round values, 1-2-5 per decade
    assert log_ticks(50, 3000) == [50, 100, 200, 500, 1000, 2000] and log_ticks(0.3, 1.4) == [0.3, 0.5, 0.7, 1]


def test_environment_lists_every_framework_a_cell_imported(records, page):
    host = records[("train", "numpy", "float32", "cpu", "ok")]["host"]
    # the sdpa cell imported torch; its version is the host's
    assert f"numpy {host['libraries']['numpy']}, torch {host['libraries']['torch']}" in page
    # a plugin's framework, from the record: the backend's versions() and the child's imports
    r = copy.deepcopy(records[("train", "numpy", "float32", "cpu", "ok")])
    r.update(implementation={"name": "tf", "versions": {"tensorflow": "2.21.0"}},
             heavy_modules=["jax", "tensorflow"], host_fingerprint="feed")
    other = copy.deepcopy(r)
    other.update(implementation={"name": "mlx", "versions": {"mlx": "0.32.4"}}, heavy_modules=["mlx"],
                 host_fingerprint="beef")
    assert frameworks_used([r, other]) == {"feed": {"tensorflow": "2.21.0", "jax": None}, "beef": {"mlx": "0.32.4"}}
    assert "jax" not in host["libraries"]  # the host's fixed list: jax's version is not there
    env = hosts_table([r, other], {})
    assert env.loc["frameworks its cells imported"].tolist() == ["jax (version not recorded), tensorflow 2.21.0",
                                                                 "mlx 0.32.4"]


def test_tables_failures_cards_samples_environment(page, records):
    crash = records[("train", "cell_backends:RaisingBackend", "float32", "cpu", "crash")]
    assert "RuntimeError: deliberate failure in train_step" in page and "in train_step" in crash["traceback"]
    assert "Cells that are not ok (5)" in page
    assert "FAIL</span> 1/2 checks; first divergence grad.h.0.ln_1.weight" in page
    assert "PASS</span> 2/2 checks" in page
    sample = records[("generate", "numpy", "float32", "cpu", "ok")]["metrics"]["sample_text"]
    assert f"<td>{sample}</td>" in page  # letters and U+FFFD: nothing to escape
    host = crash["host"]
    assert f"<td>{host['cpu_model']}</td>" in page and crash["host_fingerprint"] in page


# --- compare ------------------------------------------------------------------------------
def test_doubled_speed_over_repeats_is_flagged_once_per_change(run_a, tmp_path):
    a = write_run(tmp_path / "a3", repeated(list(run_a_records())))
    fast = write_run(tmp_path / "fast3", repeated(scaled(list(run_a_records()), 2.0)))
    metrics, changes = compare_runs(load_run(a), load_run(fast))
    assert changes.empty
    # (these short cells reach no target: time_to_target_s is compared in the hand-computed case)
    assert set(metrics.metric) == {"tokens_per_s", "final_val_loss", "peak_rss_mb", "decode_tokens_per_s",
                                   "time_to_first_token_ms", "attention_ms"}
    assert not {"step_ms", "token_ms"} & set(metrics.metric)  # a rate's reciprocal is the same change
    for metric, ratio in (("tokens_per_s", 2.0), ("decode_tokens_per_s", 2.0), ("time_to_first_token_ms", 0.5),
                          ("attention_ms", 0.5)):
        sel = metrics[metrics.metric == metric]
        assert not sel.empty and sel.ratio.tolist() == pytest.approx([ratio] * len(sel)), metric
        assert sel.flagged.all() and (sel.repeats_a == 3).all() and (sel.repeats_b == 3).all()
        # 3 repeats a side: the interval is [min B / max A, max B / min A] = ratio x [0.97/1.03, 1.03/0.97]
        assert sel.low.tolist() == pytest.approx([ratio * 0.97 / 1.03] * len(sel))
        assert sel.high.tolist() == pytest.approx([ratio * 1.03 / 0.97] * len(sel))
    same = metrics[metrics.metric.isin(["peak_rss_mb", "final_val_loss"])]
    assert not same.empty and not same.flagged.any() and same.ratio.tolist() == pytest.approx([1.0] * len(same))

    html = reports.write_report(a, tmp_path / "cmp.html", compare=fast).read_text()
    fig, = by_title(html, "Run B / run A")
    assert len(fig["data"][0]["x"]) == len(metrics)
    assert fig["layout"]["xaxis"]["side"] == "top"
    assert all(y.startswith(h + " · ") for y, h in zip(fig["data"][0]["y"], metrics.host_a))  # rows name the host
    assert f"{int(metrics.flagged.sum())} flagged" in html


def test_one_repeat_a_side_shows_the_ratio_and_never_flags_it(run_a, tmp_path):
    fast = write_run(tmp_path / "fast", scaled(list(run_a_records()), 2.0))
    metrics, _ = compare_runs(load_run(run_a), load_run(fast))
    tps = metrics[metrics.metric == "tokens_per_s"]
    assert len(tps) == 2 and tps.ratio.tolist() == pytest.approx([2.0, 2.0])
    assert not metrics.flagged.any() and metrics.low.isna().all()
    assert set(metrics.note) == {"one repeat: no run-to-run noise known, never flagged"}


def test_the_ratio_interval_and_flag_of_a_hand_computed_case(run_a, tmp_path):
    train = next(r for r in run_a_records() if r["workload"] == "train" and r["status"] == "ok")

    def run(name, values):
        recs = []
        for i, v in enumerate(values):
            r = json.loads(json.dumps(train))
            r.update(cell_id=f"{name}{i}", options={**r["options"], "repeat": i}, contended=False)
            r["metrics"].update(tokens_per_s=v, time_to_target_s=1000.0 / v)
            recs.append(r)
        return load_run(write_run(tmp_path / name, recs))

    metrics, _ = compare_runs(run("a", [95.0, 100.0, 105.0]), run("b", [150.0, 140.0, 160.0]))
    row = metrics[metrics.metric == "tokens_per_s"].iloc[0]
    assert (row.ratio, row.low, row.high) == pytest.approx((1.5, 140 / 105, 160 / 95)) and row.flagged
    ttt = metrics[metrics.metric == "time_to_target_s"].iloc[0]  # the time to target: its reciprocal here
    assert (ttt.ratio, ttt.low, ttt.high) == pytest.approx((1 / 1.5, 95 / 160, 105 / 140)) and ttt.flagged
    # overlapping repeats: B's slowest (104) is below A's fastest (105)
    metrics, _ = compare_runs(run("a", [95.0, 100.0, 105.0]), run("c", [104.0, 112.0, 118.0]))
    row = metrics[metrics.metric == "tokens_per_s"].iloc[0]
    assert (row.low, row.high) == pytest.approx((104 / 105, 118 / 95)) and not row.flagged
    # disjoint, but less than 5% beyond 1: no change is called below the minimum effect
    metrics, _ = compare_runs(run("a", [99.0, 100.0, 101.0]), run("d", [103.0, 104.0, 105.0]))
    assert not metrics[metrics.metric == "tokens_per_s"].iloc[0].flagged


def test_a_change_measured_under_contention_is_not_called_unless_asked(run_a, tmp_path):
    a = write_run(tmp_path / "a", repeated(list(run_a_records())))
    slow = repeated(scaled(list(run_a_records()), 0.5))
    for r in slow:
        r["contended"] = True
    b = write_run(tmp_path / "b", slow)
    metrics, _ = compare_runs(load_run(a), load_run(b))
    timed = metrics[metrics.metric == "tokens_per_s"]
    assert timed.contended.all() and not metrics.flagged.any()
    assert timed.note.str.startswith("measured under contention").all()
    metrics, _ = compare_runs(load_run(a), load_run(b), include_contended=True)
    assert metrics[metrics.metric == "tokens_per_s"].flagged.all()


def test_run_compared_with_itself_flags_nothing(run_a, tmp_path):
    a = write_run(tmp_path / "a", repeated(list(run_a_records())))
    metrics, changes = compare_runs(load_run(a), load_run(a))
    assert changes.empty and not metrics.flagged.any() and metrics.ratio.tolist() == pytest.approx([1.0] * len(metrics))


def test_compare_prints_a_summary_sorted_by_effect_and_writes_json(run_a, tmp_path, capsys):
    a = write_run(tmp_path / "a", repeated(list(run_a_records())))
    recs = repeated(list(run_a_records()))
    for r in recs:  # float64 training 3x slower; everything else as it was
        if r["workload"] == "train" and r["dtype"] == "float64":
            r["metrics"]["tokens_per_s"] /= 3
    b = write_run(tmp_path / "b", recs)
    out = tmp_path / "cmp.json"
    assert main(["report", str(a), "--compare", str(b), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("  ")]
    assert "1 flagged" in printed and lines[0].lstrip().startswith("CHANGED")
    assert "train numpy tiny float64 cpu · tokens_per_s: B/A 0.333" in lines[0]
    doc = json.loads(out.read_text())
    flagged = [d for d in doc if d["flagged"]]
    assert len(flagged) == 1 and flagged[0]["metric"] == "tokens_per_s"
    assert flagged[0]["cell"] == {"workload": "train", "backend": "numpy", "spec": "tiny", "dtype": "float64",
                                  "device": "cpu", "host": flagged[0]["cell"]["host"],
                                  "host_b": flagged[0]["cell"]["host"]}
    assert flagged[0]["ratio"] == pytest.approx(1 / 3) and flagged[0]["high"] < 1 / 1.05
    assert main(["report", str(a), "--compare", str(b), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == doc
    assert main(["report", str(a), "--json", str(out)]) == 2  # a comparison needs its B


def test_two_real_runs_of_the_same_code_flag_nothing_with_one_repeat(run_a, tmp_path):
    again = list(rerun_records())
    b = write_run(tmp_path / "b", again)
    metrics, changes = compare_runs(load_run(run_a), load_run(b))
    assert set(changes.status_b) == {"absent"}  # B reran only run A's five timed ok cells
    a_train = next(r for r in run_a_records() if r["workload"] == "train" and r["dtype"] == "float64")
    b_train = next(r for r in again if r["workload"] == "train" and r["dtype"] == "float64")
    row = metrics[(metrics.metric == "tokens_per_s") & metrics.what.str.contains("float64")].iloc[0]
    assert row.ratio == pytest.approx(b_train["metrics"]["tokens_per_s"] / a_train["metrics"]["tokens_per_s"])
    assert not metrics.flagged.any()
    print(f"same code, two runs, one repeat each: {int(metrics.flagged.sum())}/{len(metrics)} metrics flagged")


def test_status_change_is_listed(run_a, tmp_path):
    recs = json.loads(json.dumps(list(run_a_records())))
    ok = next(r for r in recs if r["workload"] == "generate")
    ok.update(status="oom", reason="resident memory passed the budget", metrics={})
    metrics, changes = compare_runs(load_run(run_a), load_run(write_run(tmp_path / "b", recs)))
    assert changes.to_dict("records") == [{"what": "generate numpy tiny float32 cpu", "status_a": "ok",
                                           "status_b": "oom", "reason_b": "resident memory passed the budget"}]
    assert "token_ms" not in set(metrics.metric)


# --- export -------------------------------------------------------------------------------
def test_csv_and_parquet_keep_every_record(run_a, tmp_path):
    csv, parquet = tmp_path / "cells.csv", tmp_path / "cells.parquet"
    assert main(["report", str(run_a), "-o", str(tmp_path / "r.html"), "--csv", str(csv),
                 "--parquet", str(parquet)]) == 0
    assert (tmp_path / PLOTLY_JS).stat().st_size > 4_000_000  # the page's plotly.js, beside it
    recs = list(run_a_records())
    for df in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert df.cell_id.tolist() == [r["cell_id"] for r in recs]
        assert df.status.tolist() == [r["status"] for r in recs]
        tps = [r["metrics"].get("tokens_per_s", math.nan) if r["workload"] == "train" else math.nan for r in recs]
        train = df.workload == "train"
        np.testing.assert_allclose(df["metrics.tokens_per_s"][train], np.array(tps)[train.to_numpy()], rtol=1e-12)
        first = recs[0]["metrics"]["losses"]
        assert json.loads(df["metrics.losses"][0]) == pytest.approx(first)
        assert df["host.cpu_model"][0] == recs[0]["host"]["cpu_model"]
    # the diverged final loss ("nan" in JSON) is a float NaN in a numeric column
    table = records_table(recs)
    assert table["metrics.final_loss"].dtype == float
    assert table["metrics.final_loss"][[r["status"] == "diverged" for r in recs]].isna().all()


def test_run_without_records_yet_and_a_missing_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "cells.jsonl").write_text("")
    html = reports.write_report(tmp_path / "empty").read_text()
    assert "0 cells" in html and "No cell has a record yet" in html and figures_of(html) == []
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a gptbench run directory" in capsys.readouterr().err


def test_more_repeats_of_the_same_outcome_are_no_status_change(run_a, tmp_path):
    """An older run of one repeat against the same experiments run three times: the same
    statuses, so nothing is listed; a repeat that ended otherwise is."""
    three = repeated(list(run_a_records()))
    metrics, changes = compare_runs(load_run(run_a), load_run(write_run(tmp_path / "three", three)))
    ok_groups = set(load_run(run_a).cells.query("status == 'ok'").group)
    assert set(changes.status_b) == {"absent"} and len(changes) == len(set(load_run(run_a).cells.group) - ok_groups)
    three[0].update(status="oom", reason="resident memory passed the budget", metrics={})
    _, changes = compare_runs(load_run(run_a), load_run(write_run(tmp_path / "oom", three)))
    row = changes[changes.status_b == "ok, oom"]
    assert len(row) == 1 and row.iloc[0].status_a == "ok" and row.iloc[0].reason_b.startswith("resident memory")
