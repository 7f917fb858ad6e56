"""What the report says, section by section: frames (load.py) -> figures (figures.py) and
tables -> one page (html.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports import figures, fmt
from reports.compare import compare_runs, effect
from reports.headline import RULE, Headline, headline
from reports.html import Page, esc, table
from reports.load import STATUS_ORDER, Run, frontier_frame
from reports.stats import MIN_EFFECT

CHANGE_TITLES = {"what": "experiment", "status_a": "status in A", "status_b": "status in B", "reason_b": "reason in B"}
# the comparison's table: the forest plot's rows, largest change first
COMPARE_COLUMNS = [
    ("flagged", lambda r: "FLAG" if r["flagged"] else "", False), ("host", "host_a", False),
    ("experiment", "what", False), ("metric", lambda r: f"{r['metric']} ({r['unit']})", False),
    ("A (median)", lambda r: fmt.number(r["a"]), True), ("B (median)", lambda r: fmt.number(r["b"]), True),
    ("repeats A / B", lambda r: f"{r['repeats_a']} / {r['repeats_b']}", False),
    ("B/A", lambda r: fmt.number(r["ratio"]), True),
    ("95% interval", lambda r: f"{fmt.number(r['low'])}-{fmt.number(r['high'])}" if fmt.number(r["low"]) else "",
     False),
    ("contended", lambda r: "yes" if r["contended"] else "", False), ("note", "note", False)]

OPEN_FAILURES = 30  # more non-ok cells than this: their table starts folded


def _titled(df: pd.DataFrame, columns: list[tuple]) -> str:
    """df as a person reads it: columns (title, column or row -> text, numeric) in this order,
    numbers written by reports.fmt (one format per unit) and right-aligned."""
    def column(get):
        if isinstance(get, str):  # a column the frame may lack (an older record): empty cells
            return df[get] if get in df else pd.Series("", index=df.index)
        return df.apply(get, axis=1)

    shown = pd.DataFrame({title: column(get) if len(df) else [] for title, get, _ in columns})
    return table(shown, numeric=tuple(title for title, _, numeric in columns if numeric))


def _num(column: str, fmt_fn) -> callable:
    return lambda row: fmt_fn(row.get(column))


def _spread(median: str, q1: str, q3: str, fmt_fn) -> callable:
    return lambda row: fmt.spread(row.get(median), row.get(q1), row.get(q3), fmt_fn)


def _backend(row) -> str:
    """The implementation, and its device when not the CPU (as the figures' bars name it)."""
    device = row.get("device")
    return row["impl"] + (f" ({device})" if isinstance(device, str) and device != "cpu" else "")


IDENTITY = [("host", "host", False), ("backend", _backend, False), ("spec", "spec", False), ("dtype", "dtype", False)]
TRAIN_COLUMNS = IDENTITY + [
    ("tokens/s: median step [quartiles]", _spread("tokens_per_s", "tokens_per_s_q1", "tokens_per_s_q3", fmt.rate), True),
    ("step (ms): median [quartiles]", _spread("step_ms_median", "step_ms_q1", "step_ms_q3", fmt.ms), True),
    ("MFU", _num("mfu", fmt.pct), True),
    ("calibrated peak (GFLOP/s)", lambda row: fmt.rate(row.get("peak_flops_per_s", float("nan")) / 1e9), True),
]
GENERATE_COLUMNS = IDENTITY + [
    ("decode tokens/s", _num("decode_tokens_per_s", fmt.rate), True),
    ("per-token time (ms): median [quartiles]", _spread("token_ms_median", "token_ms_q1", "token_ms_q3", fmt.ms), True),
    ("time to first token (ms)", _num("time_to_first_token_ms", fmt.ms), True),
    ("overall tokens/s (prefill and refills included)", _num("tokens_per_s", fmt.rate), True),
]
DECODE_NOTE = ("Decode tokens/s is the batch size over the median per-token time (sampling and one step through "
               "the KV cache, after warm-up): the speed of steady decoding, the figure's bars. Overall tokens/s "
               "divides every new token by the whole timed generation, the prompt's prefill and the refills after "
               "the context window filled included, so it is lower; the time to first token is the prefill.")
FRONTIER_COLUMNS = IDENTITY + [
    ("status", "status", False),
    ("largest batch that fits (sequences)", _num("max_batch", fmt.count), True),
    ("its peak (MB)", _num("peak_mb_at_max", fmt.mb), True),
    ("its estimate (MB)", _num("estimate_mb_at_max", fmt.mb), True),
    ("budget (MB)", _num("binding_budget_mb", fmt.mb), True),
    ("largest batch by the estimate (sequences)", _num("estimated_max_batch", fmt.count), True),
    ("training tokens/s at the largest batch", _num("tokens_per_s_at_max", fmt.rate), True),
    ("probes", _num("n_probes", fmt.count), True),
]
SAMPLE_COLUMNS = [("host", "host", False), ("backend", "backend", False), ("spec", "spec", False),
                  ("dtype", "dtype", False), ("prompt", "prompt_text", False), ("sample", "sample_text", False),
                  ("time to first token (ms)", _num("time_to_first_token_ms", fmt.ms), True),
                  ("per-token time (ms, median)", _num("token_ms_median", fmt.ms), True)]


def _header(run: Run) -> str:
    info, cells = run.info, run.cells
    counts = cells.status.value_counts() if not cells.empty else pd.Series(dtype=int)
    chips = " ".join(f'<span class="status" style="background:{figures.STATUS_COLOURS.get(s, "#555")}">'
                     f"{esc(s)} {counts[s]}</span>" for s in STATUS_ORDER if s in counts)
    versions = sorted(cells.code_version.dropna().unique()) if not cells.empty else []
    return (f'<p class="meta">run directory {esc(run.path)} · started {esc(info.get("started", "?"))} · driver '
            f'{esc(info.get("driver_host", "?"))} · code {esc(", ".join(versions) or info.get("code_version", "?"))}'
            f"<br>{len(cells)} cells: {chips}</p>")


def _headline(page: Page, run: Run, h: Headline | None = None) -> None:
    """The page opens with it: time to quality per host, ranked only where conformance passed."""
    parts = page.section("headline", "Headline: time to target per host")
    h = h or headline(run.records)
    if not h.rows:
        parts.append("<p>No training cell in this run.</p>")
        return
    text = h.text()
    ok = [r["status"] == "ok" for r in h.rows]
    if len(text) <= OPEN_FAILURES:
        parts.append(table(text))
    else:  # a large run: the rows that ended ok, then the rest folded
        parts.append(table(text[ok]) + f"<details><summary>{len(text) - sum(ok)} rows that did not end ok</summary>"
                     + table(text[[not x for x in ok]]) + "</details>")
    # under the table: the winner per host, then the rule it was ranked by
    parts.append("".join(f"<p><b>{esc(s)}</b></p>" for s in h.sentences) + f'<p class="meta">{esc(RULE)}</p>')


def _status(page: Page, run: Run) -> None:
    parts = page.section("status", "Status")
    for title, fig in figures.status_grid(run.cells):
        page.figure(parts, title, fig)
        shown = [s for s in STATUS_ORDER if s in set(run.cells.status)]
        parts.append('<p class="meta">colour: the worst status of the square\'s cells: ' + " ".join(
            f'<span class="status" style="background:{figures.STATUS_COLOURS.get(s, "#555")}">{esc(s)}</span>'
            for s in shown) + "</p>")
    bad = run.cells[run.cells.status != "ok"] if not run.cells.empty else run.cells
    if bad.empty:
        parts.append("<p>Every cell is ok.</p>" if len(run.cells) else "<p>No cell has a record yet.</p>")
        return
    cols = ["status", "host", "workload", "backend", "spec", "dtype", "device", "cell_id", "reason", "traceback"]
    # a long list is folded so that a large run's figures stay one click away
    opened = " open" if len(bad) <= OPEN_FAILURES else ""
    parts.append(f"<details{opened}><summary><b>Cells that are not ok ({len(bad)})</b></summary>"
                 + table(bad[cols].sort_values(["status", "host", "workload", "backend"])
                         .rename(columns={"cell_id": "cell"}), pre=("traceback",))
                 + "</details>")


def _figures(page: Page, anchor: str, heading: str, made: list, empty: str) -> list[str]:
    """made: (title, figure) or (title, figure, note) from reports/figures.py."""
    parts = page.section(anchor, heading)
    for title, fig, *note in made:
        page.figure(parts, title, fig, *note)
    if not made:
        parts.append(f"<p>{esc(empty)}</p>")
    return parts


def _throughput(page: Page, run: Run, rank: dict) -> None:
    parts = _figures(page, "throughput", "Throughput and MFU", figures.throughput(run.cells, rank),
                     "No training or generation cell finished ok.")
    ok = run.cells[run.cells.status == "ok"]
    order = ["host", "spec", "impl", "dtype"]
    train, gen = ok[ok.workload == "train"], ok[ok.workload == "generate"]
    if not train.empty:
        parts.append("<details><summary>training numbers</summary>"
                     + _titled(train.sort_values(order), TRAIN_COLUMNS) + "</details>")
    if not gen.empty:
        parts.append(f"<details><summary>generation numbers</summary><p>{esc(DECODE_NOTE)}</p>"
                     + _titled(gen.sort_values(order), GENERATE_COLUMNS) + "</details>")


def _conformance(page: Page, run: Run) -> None:
    parts = page.section("conformance", "Conformance report cards")
    if not run.cards:
        parts.append("<p>No conformance cell or gate in this run.</p>")
    for c in run.cards:
        card = c["card"]
        rows = pd.DataFrame(card.get("rows", []))
        n_ok = int(rows.ok.sum()) if not rows.empty else 0
        verdict = (f'<span class="pass">PASS</span> {n_ok}/{len(rows)} checks' if card.get("ok") else
                   f'<span class="fail">FAIL</span> {n_ok}/{len(rows)} checks; first divergence '
                   f'{esc(card.get("first_failure"))}')
        spec = card.get("spec") or {}
        parts.append(f"<h3>{esc(card.get('backend'))} · {esc(spec.get('name'))} · {esc(card.get('device'))} "
                     f"{esc(card.get('dtype'))} on {esc(c['host'])}"
                     f"{' (gate of a ' + esc(c['workload']) + ' cell)' if c['workload'] != 'conformance' else ''}"
                     f"</h3><p>{verdict} against the {esc(card.get('reference', 'reference'))}; seed "
                     f"{esc(card.get('seed'))}, {esc(card.get('steps'))} steps, batch {esc(card.get('batch_size'))}</p>")
        parts += [f"<p class='meta'>note: {esc(n)}</p>" for n in card.get("notes", [])]
        if not rows.empty:
            tol = rows.tol.map(lambda t: "/".join(fmt.sci(t.get(k)) for k in ("atol", "rtol", "norm_rtol"))
                               if isinstance(t, dict) else "")
            shown = rows.assign(result=rows.ok.map({True: "ok", False: "FAIL"}), tol=tol,
                                worst_index=rows.worst_index.map(lambda i: "" if i is None else str(tuple(i))))
            cols = [("level", "level", False), ("tensor", "name", False),
                    ("max abs error", _num("max_abs", fmt.sci), True), ("max rel error", _num("max_rel", fmt.sci), True),
                    ("norm rel error", _num("norm_rel", fmt.sci), True), ("worst index", "worst_index", False),
                    ("tolerance atol/rtol/norm", "tol", False), ("result", "result", False),
                    ("note", lambda row: row.get("note") or "", False)]
            opened = "" if card.get("ok") else " open"
            parts.append(f"<details{opened}><summary>{len(rows)} checks</summary>" + _titled(shown, cols) + "</details>")


def _samples(page: Page, run: Run) -> None:
    parts = page.section("samples", "Generated samples")
    if run.samples.empty:
        parts.append("<p>No generation cell finished.</p>")
        return
    parts.append('<div class="samples">' + _titled(run.samples.sort_values(["host", "spec", "backend"]), SAMPLE_COLUMNS)
                 + "</div>")


def _frontier(page: Page, run: Run) -> None:
    parts = _figures(page, "frontier", "Memory frontier", figures.frontier(frontier_frame(run.records)),
                     "No frontier cell in this run.")
    cells = run.cells[run.cells.workload == "frontier"]
    if not cells.empty:
        parts.append("<details><summary>numbers</summary>"
                     + _titled(cells.sort_values(["host", "impl", "spec", "dtype"]), FRONTIER_COLUMNS) + "</details>")


def _environment(page: Page, run: Run) -> None:
    parts = page.section("environment", "Environment per host")
    parts.append(table(run.hosts, index=True) if not run.hosts.empty else "<p>No host information.</p>")


def _comparison(page: Page, a: Run, b: Run, include_contended: bool, comparison) -> None:
    metrics, changes = comparison or compare_runs(a, b, include_contended)
    parts = page.section("compare", "Comparison: run B / run A")
    n_flag = int(metrics.flagged.sum())
    parts.append(f"<p>A = {esc(a.path)}, B = {esc(b.path)}. {len(metrics)} metrics compared; "
                 f'<span class="flag">{n_flag} flagged</span>: the 95% interval of B/A, over both runs\' repeats, '
                 f"lies wholly beyond 1 &plusmn; {MIN_EFFECT:.0%}. A metric with one repeat in either run has no "
                 "measured run-to-run noise and is never flagged; nor is one measured under contention "
                 "(docs/reports.md, How sure).</p>")
    for title, fig in figures.comparison(metrics):
        page.figure(parts, title, fig)
    if not changes.empty:
        parts.append(f"<h3>Status changes ({len(changes)})</h3>" + table(changes.rename(columns=CHANGE_TITLES)))
    if not metrics.empty:
        ordered = metrics.assign(_e=metrics.apply(effect, axis=1)).sort_values(["flagged", "_e"], ascending=False)
        parts.append("<details><summary>every ratio</summary>" + _titled(ordered, COMPARE_COLUMNS) + "</details>")


def build(run: Run, b: Run | None = None, include_contended: bool = False, comparison=None) -> str:
    """The page's HTML for run, with a comparison against run b first (comparison: compare_runs'
    result, when the caller has it)."""
    page = Page(f"gptbench report: {Path(run.path).resolve().name}")
    h = headline(run.records)
    rank = figures.ranks(h.rows)  # the figures' bars in the headline's order
    _headline(page, run, h)
    if b is not None:
        _comparison(page, run, b, include_contended, comparison)
    _status(page, run)
    _figures(page, "loss", "Loss curves", figures.loss_curves(run.losses, run.cells), "No training cell has a loss curve.")
    _throughput(page, run, rank)
    _figures(page, "memory", "Peak memory", figures.memory(run.cells, rank), "No cell reported a peak.")
    _figures(page, "attention", "Attention", figures.attention(run.attention), "No attention cell finished.")
    _conformance(page, run)
    _samples(page, run)
    _environment(page, run)
    _frontier(page, run)
    return page.render(_header(run))

