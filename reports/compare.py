"""Run B against run A: every metric of every cell both ran, as the ratio B/A.

Cells are matched by identity without the code version (reports.load.cell_key), so the
same matrix run on other code lines up. The metrics are those each workload declares with
compare=True (workloads.<name>.METRICS), the peak RSS of every cell, and attention's time per
(T, D, pass) row. A metric is a median over samples (training steps, generated tokens,
attention repeats) with its interquartile interval [q1, q3], or a value measured once.

The noise rule: a ratio is **flagged** only when the two runs' interquartile intervals do
not overlap, i.e. the middle halves of the two sets of samples are disjoint. The ratio's
own interval [B.q1/A.q3, B.q3/A.q1] is shown with it. Metrics measured once (peak
memory, time to first token, final validation loss) have no measured noise: they are
shown, never flagged. Attention records keep only the median and the IQR, so their
interval is median +- IQR/2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import workloads
from reports.load import Run

COLUMNS = ["what", "metric", "a", "a_low", "a_high", "b", "b_low", "b_high", "ratio", "ratio_low", "ratio_high",
           "flagged", "host_a", "host_b"]

# every cell's, whatever its workload: the runner measures it (a cells-table column of reports/load.py)
RECORD_METRICS = (workloads.Metric("peak_rss_mb", "MB", "the child's peak resident memory", compare=True),)


def _shown_metrics(workload) -> tuple[workloads.Metric, ...]:
    """What compare shows of a cell of `workload`, in this order."""
    return tuple(m for m in workloads.metrics(workload) if m.compare) + RECORD_METRICS


def _row(what, metric, a, b, host_a, host_b) -> dict:
    """a, b: (median, q1, q3); q1/q3 NaN when the metric has no measured spread."""
    (am, al, ah), (bm, bl, bh) = a, b
    spread = all(np.isfinite(v) for v in (al, ah, bl, bh))
    flagged = bool(spread and (bh < al or bl > ah))  # the interquartile intervals are disjoint
    ratio = bm / am if am else np.nan
    lo, hi = (bl / ah, bh / al) if spread and al > 0 and ah > 0 else (ratio, ratio)
    return dict(what=what, metric=metric, a=am, a_low=al, a_high=ah, b=bm, b_low=bl, b_high=bh, ratio=ratio,
                ratio_low=lo, ratio_high=hi, flagged=flagged, host_a=host_a, host_b=host_b)


def _what(c) -> str:
    # c["dtype"], not c.dtype: on a pandas row that is the row's own dtype
    return f"{c['workload']} {c['backend']} {c['spec']} {c['dtype']} {c['device']}" + \
        (f" seed {c['seed']}" if c["seed"] else "")


def compare_runs(a: Run, b: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, status changes). metrics: one row per (cell both ran ok, metric) in COLUMNS;
    status changes: cells in one run only, or whose status differs."""
    ca, cb = a.cells.set_index("key"), b.cells.set_index("key")
    shown = {w: _shown_metrics(w) for w in set(ca.workload)}
    rows = []
    for key in ca.index.intersection(cb.index):
        x, y = ca.loc[key], cb.loc[key]
        if x.status != "ok" or y.status != "ok":
            continue
        for metric in shown[x.workload]:
            med, spread = metric.column, metric.spread
            if med not in x or not np.isfinite(x[med]) or not np.isfinite(y[med]):
                continue
            get = (lambda c: (c[med], c[spread[0]], c[spread[1]])) if spread else (lambda c: (c[med], np.nan, np.nan))
            rows.append(_row(_what(x), metric.name, get(x), get(y), x.host, y.host))
    rows += _attention_rows(a, b)
    metrics = pd.DataFrame(rows, columns=COLUMNS)
    changes = []
    for key in ca.index.union(cb.index):
        sa = ca.loc[key].status if key in ca.index else "absent"
        sb = cb.loc[key].status if key in cb.index else "absent"
        if sa != sb:
            c = ca.loc[key] if key in ca.index else cb.loc[key]
            changes.append({"what": _what(c), "status_a": sa, "status_b": sb,
                            "reason_b": cb.loc[key].reason if key in cb.index else None})
    return metrics, pd.DataFrame(changes, columns=["what", "status_a", "status_b", "reason_b"])


def _attention_rows(a: Run, b: Run) -> list[dict]:
    if a.attention.empty or b.attention.empty:
        return []
    on = ["key", "T", "D", "pass"]
    both = a.attention.merge(b.attention, on=on, suffixes=("_a", "_b"))
    rows = []
    for d in both.to_dict("records"):  # not itertuples: it renames the column "pass"
        def stats(side):
            med, iqr = d[f"ms_median_{side}"], d[f"ms_iqr_{side}"]
            return med, med - iqr / 2, med + iqr / 2

        what = f"attention {d['provider_a']} {d['dtype_a']} {d['device_a']} T={d['T']} D={d['D']} {d['pass']}"
        rows.append(_row(what, "attention_ms", stats("a"), stats("b"), d["host_a"], d["host_b"]))
    return rows
