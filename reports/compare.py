"""Run B against run A: every metric of every experiment both ran, as the ratio B/A with an
interval, flagged only when the change is beyond the run-to-run noise (docs/reports.md).

Cells are matched by identity without the code version (reports.load.cell_key), and the
repeats of one experiment (cells that differ only by their `repeat` option) are pooled:
each repeat gives one value of each metric (its median tokens/s, its time to target). The
metrics are those each workload declares with compare=True (workloads.<name>.METRICS; a rate
and its reciprocal are one metric, so only one of them is declared), the peak RSS of every
cell, and attention's time per (T, D, pass) row.

The test (reports/stats.py ratio): the ratio of the two runs' medians over repeats, with a
bootstrap interval resampling both runs' repeats; **flagged** when the whole interval lies
beyond 1 +- MIN_EFFECT (5%). A side with one repeat has no measured run-to-run noise: its
ratio is shown, never flagged. A comparison where a cell of either run was measured under
contention (suite/machine.py) is not flagged unless include_contended: the difference may
be the other load's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import workloads
from reports import stats
from reports.load import Run

COLUMNS = ["workload", "backend", "spec", "dtype", "device", "host_a", "host_b", "what", "metric", "unit",
           "a", "b", "repeats_a", "repeats_b", "ratio", "low", "high", "flagged", "contended", "note"]
CHANGE_COLUMNS = ["what", "status_a", "status_b", "reason_b"]

# every cell's, whatever its workload: the runner measures it (a cells-table column of reports/load.py)
RECORD_METRICS = (workloads.Metric("peak_rss_mb", "MB", "the child's peak resident memory", compare=True),)


def _shown_metrics(workload) -> tuple[workloads.Metric, ...]:
    """What compare shows of a cell of `workload`, in this order."""
    return tuple(m for m in workloads.metrics(workload) if m.compare) + RECORD_METRICS


def _what(c) -> str:
    # c["dtype"], not c.dtype: on a pandas row that is the row's own dtype
    return f"{c['workload']} {c['backend']} {c['spec']} {c['dtype']} {c['device']}" + \
        (f" seed {c['seed']}" if c["seed"] else "")


def _row(first, what: str, metric: str, unit: str, a_values, b_values, contended: bool, host_a, host_b,
         include_contended: bool) -> dict:
    r = stats.ratio(a_values, b_values)
    a, b = stats.finite(a_values), stats.finite(b_values)
    note = r.note
    flagged = r.changed
    if flagged and contended and not include_contended:
        flagged, note = False, "measured under contention: not called (--include-contended calls it)"
    return dict(workload=first["workload"], backend=first["backend"], spec=first["spec"], dtype=first["dtype"],
                device=first["device"], host_a=host_a, host_b=host_b, what=what, metric=metric, unit=unit,
                a=float(np.median(a)) if a.size else None, b=float(np.median(b)) if b.size else None,
                repeats_a=int(a.size), repeats_b=int(b.size), ratio=r.ratio, low=r.low, high=r.high,
                flagged=bool(flagged), contended=bool(contended), note=note)


def _contended(*frames) -> bool:
    return any(bool(v) for f in frames for v in f["contended"] if v is not None and v == v)


def compare_runs(a: Run, b: Run, include_contended: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, status changes). metrics: one row per (experiment both ran ok, metric) in
    COLUMNS; status changes: experiments in one run only, or whose repeats ended with other
    statuses (the set of them: a run with more repeats of the same outcome changed nothing)."""
    rows = []
    ok_a, ok_b = a.cells[a.cells.status == "ok"], b.cells[b.cells.status == "ok"]
    ga, gb = dict(tuple(ok_a.groupby("group", sort=True))), dict(tuple(ok_b.groupby("group", sort=True)))
    for group in sorted(set(ga) & set(gb)):
        x, y = ga[group], gb[group]
        first = x.iloc[0]
        contended = _contended(x, y)
        for metric in _shown_metrics(first["workload"]):
            col = metric.column
            if col not in x or col not in y:
                continue
            if not (np.isfinite(x[col].astype(float)).any() and np.isfinite(y[col].astype(float)).any()):
                continue
            rows.append(_row(first, _what(first), metric.name, metric.unit, x[col].tolist(), y[col].tolist(),
                             contended, first["host"], y.iloc[0]["host"], include_contended))
    rows += _attention_rows(a, b, include_contended)
    metrics = pd.DataFrame(rows, columns=COLUMNS)
    changes = []
    for group in sorted(set(a.cells.group) | set(b.cells.group)):
        x, y = a.cells[a.cells.group == group], b.cells[b.cells.group == group]
        # the statuses an experiment's repeats ended with; another number of repeats is no change
        sa, sb = ", ".join(sorted(set(x.status))) or "absent", ", ".join(sorted(set(y.status))) or "absent"
        if sa != sb:
            reasons = [r for r in y[y.status != "ok"].reason if isinstance(r, str)]
            changes.append({"what": _what((x if len(x) else y).iloc[0]), "status_a": sa, "status_b": sb,
                            "reason_b": reasons[0] if reasons else None})
    return metrics, pd.DataFrame(changes, columns=CHANGE_COLUMNS)


def _attention_rows(a: Run, b: Run, include_contended: bool) -> list[dict]:
    """One row per (experiment, provider, T, D, pass): each repeat's median time."""
    if a.attention.empty or b.attention.empty:
        return []
    on = ["group", "provider", "T", "D", "pass"]
    ga = dict(tuple(a.attention.groupby(on, sort=True)))
    gb = dict(tuple(b.attention.groupby(on, sort=True)))
    rows = []
    for k in sorted(set(ga) & set(gb), key=str):
        x, y = ga[k], gb[k]
        first = x.iloc[0]
        _, provider, T, D, kind = k
        head = {"workload": "attention", "backend": provider, "spec": f"T={T} D={D}", "dtype": first["dtype"],
                "device": first["device"]}
        what = f"attention {provider} {first['dtype']} {first['device']} T={T} D={D} {kind}"
        rows.append(_row(head, what, "attention_ms", "ms", x["ms_median"].tolist(), y["ms_median"].tolist(),
                         _contended(x, y), first["host"], y.iloc[0]["host"], include_contended))
    return rows


def effect(row) -> float:
    """How large a change is, either way: |log ratio| (0 for no ratio)."""
    r = row["ratio"]
    return abs(math.log(r)) if r and r > 0 and math.isfinite(r) else 0.0


def summary_lines(metrics: pd.DataFrame, changes: pd.DataFrame, most: int = 15) -> list[str]:
    """What the terminal prints: the counts, then the flagged changes sorted by effect size,
    then the largest unflagged ratios, then the status changes."""
    n_flag = int(metrics.flagged.sum()) if not metrics.empty else 0
    lines = [f"compare: {len(metrics)} metrics, {n_flag} flagged (95% interval of B/A beyond "
             f"1 +- {stats.MIN_EFFECT:.0%}), {len(changes)} status changes"]
    if metrics.empty:
        return lines
    ranked = metrics.assign(_effect=metrics.apply(effect, axis=1)).sort_values(
        ["flagged", "_effect"], ascending=[False, False])
    for _, r in ranked.head(most).iterrows():
        interval = f"[{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None and r["low"] == r["low"] else \
            "(no interval)"
        mark = "CHANGED" if r["flagged"] else "       "
        ratio = "n/a" if r["ratio"] is None or r["ratio"] != r["ratio"] else f"{r['ratio']:.3f}"
        lines.append(f"  {mark} {r['host_a']} · {r['what']} · {r['metric']}: B/A {ratio} {interval}"
                     f" (repeats {r['repeats_a']}/{r['repeats_b']})" + (f" — {r['note']}" if r["note"] else ""))
    if len(metrics) > most:
        lines.append(f"  ... {len(metrics) - most} more in the report")
    for _, c in changes.iterrows():
        lines.append(f"  STATUS  {c['what']}: {c['status_a']} -> {c['status_b']}")
    return lines


def to_json(metrics: pd.DataFrame) -> list[dict]:
    """The machine-readable verdict of `gptbench report A --compare B --json FILE`: one object
    per compared metric (docs/reports.md)."""
    out = []
    for r in metrics.to_dict("records"):
        def num(v):
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)

        out.append({"cell": {k: r[k] for k in ("workload", "backend", "spec", "dtype", "device")} |
                    {"host": r["host_a"], "host_b": r["host_b"]},
                    "what": r["what"], "metric": r["metric"], "unit": r["unit"], "a": num(r["a"]), "b": num(r["b"]),
                    "repeats_a": r["repeats_a"], "repeats_b": r["repeats_b"], "ratio": num(r["ratio"]),
                    "low": num(r["low"]), "high": num(r["high"]), "flagged": r["flagged"],
                    "contended": r["contended"], "note": r["note"] or None})
    return out
