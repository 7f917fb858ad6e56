"""What the report says, section by section: frames (load.py) -> figures (figures.py) and
tables -> one page (html.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports import figures
from reports.compare import compare_runs
from reports.stats import MIN_EFFECT
from reports.headline import RULE, headline
from reports.html import Page, esc, table
from reports.load import STATUS_ORDER, Run, frontier_frame

OPEN_FAILURES = 30  # more non-ok cells than this: their table starts folded


def _header(run: Run) -> str:
    info, cells = run.info, run.cells
    counts = cells.status.value_counts() if not cells.empty else pd.Series(dtype=int)
    chips = " ".join(f'<span class="status" style="background:{figures.STATUS_COLOURS.get(s, "#555")}">'
                     f"{esc(s)} {counts[s]}</span>" for s in STATUS_ORDER if s in counts)
    versions = sorted(cells.code_version.dropna().unique()) if not cells.empty else []
    return (f'<p class="meta">run directory {esc(run.path)} · started {esc(info.get("started", "?"))} · driver '
            f'{esc(info.get("driver_host", "?"))} · code {esc(", ".join(versions) or info.get("code_version", "?"))}'
            f"<br>{len(cells)} cells: {chips}</p>")


def _headline(page: Page, run: Run) -> None:
    """The page opens with it: time to quality per host, ranked only where conformance passed."""
    parts = page.section("headline", "Headline: time to target per host")
    h = headline(run.records)
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
    bad = run.cells[run.cells.status != "ok"] if not run.cells.empty else run.cells
    if bad.empty:
        parts.append("<p>Every cell is ok.</p>" if len(run.cells) else "<p>No cell has a record yet.</p>")
        return
    cols = ["status", "host", "workload", "backend", "spec", "dtype", "device", "cell_id", "reason", "traceback"]
    # a long list is folded so that a large run's figures stay one click away
    opened = " open" if len(bad) <= OPEN_FAILURES else ""
    parts.append(f"<details{opened}><summary><b>Cells that are not ok ({len(bad)})</b></summary>"
                 + table(bad[cols].sort_values(["status", "host", "workload", "backend"]), pre=("traceback",))
                 + "</details>")


def _figures(page: Page, anchor: str, heading: str, made: list, empty: str) -> list[str]:
    parts = page.section(anchor, heading)
    for title, fig in made:
        page.figure(parts, title, fig)
    if not made:
        parts.append(f"<p>{esc(empty)}</p>")
    return parts


def _throughput(page: Page, run: Run) -> None:
    parts = _figures(page, "throughput", "Throughput and MFU", figures.throughput(run.cells),
                     "No training or generation cell finished ok.")
    ok = run.cells[(run.cells.status == "ok") & run.cells.workload.isin(["train", "generate"])]
    if not ok.empty:
        cols = [c for c in ("host", "workload", "backend", "spec", "dtype", "tokens_per_s", "tokens_per_s_q1",
                            "tokens_per_s_q3", "step_ms_median", "step_ms_iqr", "mfu", "peak_flops_per_s",
                            "decode_tokens_per_s", "time_to_first_token_ms", "token_ms_median", "token_ms_iqr")
                if c in ok]
        parts.append("<details><summary>numbers</summary>" + table(ok[cols].sort_values(cols[:4])) + "</details>")


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
            tol = rows.tol.map(lambda t: f"{t.get('atol'):.0e}/{t.get('rtol'):.0e}/{t.get('norm_rtol'):.0e}"
                               if isinstance(t, dict) else "")
            shown = rows.assign(result=rows.ok.map({True: "ok", False: "FAIL"}), tol=tol,
                                worst_index=rows.worst_index.map(lambda i: "" if i is None else str(tuple(i))))
            cols = [c for c in ("level", "name", "max_abs", "max_rel", "norm_rel", "worst_index", "tol", "result",
                                "note") if c in shown]
            opened = "" if card.get("ok") else " open"
            parts.append(f"<details{opened}><summary>{len(rows)} checks</summary>"
                         + table(shown[cols].rename(columns={"tol": "atol/rtol/norm"}), numeric_digits=3)
                         + "</details>")


def _samples(page: Page, run: Run) -> None:
    parts = page.section("samples", "Generated samples")
    if run.samples.empty:
        parts.append("<p>No generation cell finished.</p>")
        return
    parts.append('<div class="samples">' + table(run.samples.sort_values(["host", "spec", "backend"])) + "</div>")


def _frontier(page: Page, run: Run) -> None:
    parts = _figures(page, "frontier", "Memory frontier", figures.frontier(frontier_frame(run.records)),
                     "No frontier cell in this run.")
    cells = run.cells[run.cells.workload == "frontier"]
    cols = [c for c in ("host", "backend", "spec", "dtype", "status", "max_batch", "peak_mb_at_max",
                        "estimate_mb_at_max", "binding_budget_mb", "estimated_max_batch", "tokens_per_s_at_max", "n_probes")
            if c in cells]
    if not cells.empty:
        parts.append("<details><summary>numbers</summary>" + table(cells[cols].sort_values(cols[:4])) + "</details>")


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
        parts.append(f"<h3>Status changes ({len(changes)})</h3>" + table(changes))
    if not metrics.empty:
        shown = metrics.sort_values(["flagged", "what"], ascending=[False, True]).assign(
            flagged=metrics.flagged.map({True: "FLAG", False: ""}))[
            ["host_a", "what", "metric", "unit", "a", "b", "repeats_a", "repeats_b", "ratio", "low", "high", "flagged",
             "contended", "note"]]
        parts.append("<details><summary>every ratio</summary>" + table(shown) + "</details>")


def build(run: Run, b: Run | None = None, include_contended: bool = False, comparison=None) -> str:
    """The page's HTML for run, with a comparison against run b first (comparison: compare_runs'
    result, when the caller has it)."""
    page = Page(f"gptbench report: {Path(run.path).resolve().name}")
    _headline(page, run)
    if b is not None:
        _comparison(page, run, b, include_contended, comparison)
    _status(page, run)
    _figures(page, "loss", "Loss curves", figures.loss_curves(run.losses, run.cells), "No training cell has a loss curve.")
    _throughput(page, run)
    _figures(page, "memory", "Peak memory", figures.memory(run.cells), "No cell reported a peak.")
    _figures(page, "attention", "Attention", figures.attention(run.attention), "No attention cell finished.")
    _conformance(page, run)
    _samples(page, run)
    _environment(page, run)
    _frontier(page, run)
    return page.render(_header(run))

