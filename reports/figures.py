"""Plotly figures of one run's frames (reports/load.py): one function per section.

Values go to plotly as Python lists, not NumPy arrays, so the page's JSON holds plain numbers
(plotly encodes arrays as base64 blobs) and the browser test can read back what was plotted.
Each function returns a list of (title, figure); an empty list when the run has nothing
for the section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from reports.facets import Facets
from reports.load import STATUS_ORDER, STATUS_RANK, worst_status

STATUS_COLOURS = {"ok": "#2ca02c", "unavailable": "#bdbdbd", "no_host": "#9e9e9e", "nonconformant": "#9467bd",
                  "diverged": "#ff7f0e", "timeout": "#8c564b", "oom": "#d62728", "crash": "#7f0000"}
# a curve longer than this is thinned (every k-th step, the last kept) so a thousand-cell
# page stays small; validation points are never thinned
MAX_CURVE_POINTS = 400
HEIGHT = 380


def _layout(fig: go.Figure, **kw) -> go.Figure:
    base = dict(height=HEIGHT, margin=dict(l=60, r=20, t=40, b=50), template="plotly_white",
                legend=dict(font=dict(size=11)))
    fig.update_layout(**{**base, **kw})
    return fig


def _clean(values) -> list:
    """NaN -> None (JSON null: a gap), floats as Python floats."""
    return [None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v) for v in values]


def status_grid(cells: pd.DataFrame) -> list:
    """Host x (backend, workload), coloured by the worst status of the cells in each square;
    the text lists the counts per status."""
    if cells.empty:
        return []
    cols = sorted({(b, w) for b, w in zip(cells.backend, cells.workload)}, key=lambda t: (t[1], t[0]))
    hosts = sorted(cells.host.unique())
    z, text = [], []
    for h in hosts:
        zrow, trow = [], []
        for b, w in cols:
            sel = cells[(cells.host == h) & (cells.backend == b) & (cells.workload == w)]
            if sel.empty:
                zrow.append(None)
                trow.append("")
                continue
            counts = sel.status.value_counts()
            worst = worst_status(counts.index)
            zrow.append(STATUS_RANK.get(worst, 0))
            trow.append("<br>".join(f"{s} {n}" for s, n in sorted(counts.items(), key=lambda t: STATUS_RANK.get(t[0], 0))))
        z.append(zrow)
        text.append(trow)
    n = len(STATUS_ORDER)
    # a stepped colour scale: status i owns the band [i/n, (i+1)/n]
    scale = []
    for i, s in enumerate(STATUS_ORDER):
        scale += [[i / n, STATUS_COLOURS[s]], [(i + 1) / n, STATUS_COLOURS[s]]]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{w}<br>{b}" for b, w in cols], y=hosts, text=text, texttemplate="%{text}",
        colorscale=scale, zmin=-0.5, zmax=n - 0.5, xgap=2, ygap=2, hovertemplate="%{y}<br>%{x}<br>%{text}<extra></extra>",
        colorbar=dict(tickvals=list(range(n)), ticktext=list(STATUS_ORDER), title="worst status")))
    _layout(fig, height=max(220, 90 + 60 * len(hosts)), xaxis=dict(side="top"), yaxis=dict(autorange="reversed"))
    return [("Status: host x workload x backend", fig)]


def _thin(steps: list, losses: list) -> tuple[list, list]:
    if len(steps) <= MAX_CURVE_POINTS:
        return steps, losses
    k = -(-len(steps) // MAX_CURVE_POINTS)
    idx = list(range(0, len(steps), k))
    if idx[-1] != len(steps) - 1:
        idx.append(len(steps) - 1)
    return [steps[i] for i in idx], [losses[i] for i in idx]


def loss_curves(losses: pd.DataFrame, cells: pd.DataFrame) -> list:
    """One figure per (host, spec): training loss per cell, validation markers in the same
    colour, and the entropy floor when the corpus is synthetic (its floor is known)."""
    out = []
    if losses.empty:
        return out
    colours = qualitative.Plotly
    for (host, spec), grp in losses.groupby(["host", "spec"], sort=True):
        fig = go.Figure()
        for i, (cell_id, c) in enumerate(grp.groupby("cell_id", sort=False)):
            colour = colours[i % len(colours)]
            label = c.label.iloc[0]
            tr = c[c.kind == "train"]
            steps, ys = _thin(tr.step.tolist(), _clean(tr.loss))
            fig.add_trace(go.Scatter(x=steps, y=ys, mode="lines", name=label, legendgroup=cell_id,
                                     line=dict(color=colour, width=1.5), meta=cell_id,
                                     hovertemplate=f"{label}<br>step %{{x}}<br>loss %{{y:.4f}}<extra>{cell_id}</extra>"))
            va = c[c.kind == "val"]
            if not va.empty:
                fig.add_trace(go.Scatter(x=va.step.tolist(), y=_clean(va.loss), mode="markers", name=f"{label} val",
                                         legendgroup=cell_id, showlegend=False, meta=cell_id,
                                         marker=dict(color=colour, size=9, symbol="diamond", line=dict(width=1)),
                                         hovertemplate=f"{label} validation<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>"))
        sel = cells[(cells.host == host) & (cells.spec == spec) & (cells.workload == "train")]
        floors = sel.entropy_floor.dropna().unique() if "entropy_floor" in sel else []
        for floor in floors:
            fig.add_hline(y=float(floor), line=dict(dash="dash", color="black", width=1),
                          annotation_text=f"entropy floor {floor:.4f}", annotation_position="bottom left")
        _layout(fig, xaxis_title="step", yaxis_title="loss (nats/token)")
        out.append((f"Loss: {spec} on {host}", fig))
    return out


def _x(df: pd.DataFrame) -> pd.Series:
    """A panel's x: the implementation, and its device when not the CPU."""
    return df.impl + np.where(df.device.fillna("cpu") == "cpu", "", " (" + df.device.fillna("") + ")")


def _series(df: pd.DataFrame) -> pd.Series:
    return df.dtype.astype(str)


def _facet_bars(cells: pd.DataFrame, value: str, low: str | None, high: str | None, ytitle: str,
                scale: float = 1.0) -> go.Figure:
    """A panel per (host, spec), a bar per implementation, a colour per dtype. Cells sharing a
    bar (seeds, repeats) are pooled: the median of their values, whiskers from the lowest low
    to the highest high (one cell: its own quartiles)."""
    cells = cells.assign(x=_x(cells), series=_series(cells), lo=cells[low] if low else np.nan,
                         hi=cells[high] if high else np.nan)
    bars = cells.groupby(["host", "spec", "series", "x"], sort=True).agg(
        y=(value, "median"), lo=("lo", "min"), hi=("hi", "max"), n=("cell_id", "size"),
        ids=("cell_id", lambda c: " ".join(i[:6] for i in c))).reset_index()
    keys = sorted(set(zip(bars.host, bars.spec)))
    facets = Facets(keys, sorted(bars.series.unique()), ytitle)
    for (host, spec, series), g in bars.groupby(["host", "spec", "series"], sort=True):
        y = g.y * scale
        trace = dict(type="bar", x=g.x.tolist(), y=_clean(y), customdata=list(zip(g.n.tolist(), g.ids.tolist())),
                     hovertemplate=f"%{{x}} {series}<br>{host} · {spec}<br>%{{y:,.4g}}"
                                   "<br>%{customdata[0]} cell(s): %{customdata[1]}<extra></extra>")
        if low and high:
            trace["error_y"] = dict(type="data", symmetric=False, array=_clean(g.hi * scale - y),
                                    arrayminus=_clean(y - g.lo * scale))
        facets.add((host, spec), series, trace)
    return facets.figure(barmode="group")


def throughput(cells: pd.DataFrame) -> list:
    """tokens/s per (host, spec) panel, a bar per implementation and a colour per dtype: training
    (median step, quartile whiskers) and decoding (median token, quartiles of the per-token
    times); MFU of training."""
    out = []
    ok = cells[cells.status == "ok"]
    train = ok[ok.workload == "train"].dropna(subset=["tokens_per_s"]) if "tokens_per_s" in ok else ok.iloc[:0]
    if not train.empty:
        out.append(("Training throughput (tokens/s, median step; whiskers: quartiles)",
                    _facet_bars(train, "tokens_per_s", "tokens_per_s_q1", "tokens_per_s_q3", "tokens/s")))
        with_mfu = train.dropna(subset=["mfu"])
        if not with_mfu.empty:
            out.append(("MFU (% of each host's calibrated GEMM peak for the cell's dtype)",
                        _facet_bars(with_mfu, "mfu", None, None, "MFU (%)", scale=100.0)))
    gen = ok[ok.workload == "generate"]
    if not gen.empty and "decode_tokens_per_s" in gen:
        gen = gen.dropna(subset=["decode_tokens_per_s"])
        # per-token time quartiles -> tokens/s quartiles (the slow quartile is the low one)
        gen = gen.assign(decode_q1=1e3 / gen.token_ms_q3, decode_q3=1e3 / gen.token_ms_q1)
        out.append(("Decoding throughput (tokens/s per sequence, median token; whiskers: quartiles)",
                    _facet_bars(gen, "decode_tokens_per_s", "decode_q1", "decode_q3", "tokens/s")))
    return out


def memory(cells: pd.DataFrame) -> list:
    """Peak against budget: a panel per (host, spec), a point per cell at its implementation,
    a colour per workload; RAM peaks as circles, GPU peaks as diamonds, a cell that did not end
    ok as an x; the host's RAM (and VRAM) budget dashed. Then the estimate's error: measured
    peak / estimate per implementation and workload."""
    out = []
    ran = cells.dropna(subset=["peak_rss_mb"])
    if ran.empty:
        return out
    ran = ran.assign(x=_x(ran))
    keys = sorted(set(zip(ran.host, ran.spec)))
    # log: a 50 MB cell and a 64 GB budget in one panel
    facets = Facets(keys, sorted(ran.workload.unique()), "MB", log_y=True)
    for (host, spec, workload), g in ran.groupby(["host", "spec", "workload"], sort=True):
        for col, kind, symbol in (("peak_rss_mb", "RAM", "circle"), ("gpu_peak_allocated_mb", "GPU", "diamond")):
            shown = g.dropna(subset=[col])
            if shown.empty:
                continue
            facets.add((host, spec), workload, dict(
                type="scatter", x=shown.x.tolist(), y=_clean(shown[col]), mode="markers",
                marker=dict(symbol=[symbol if st == "ok" else "x" for st in shown.status], size=9,
                            line=dict(width=1, color="white")),
                customdata=list(zip(shown.dtype.tolist(), shown.status.tolist(), _clean(shown.memory_estimate_mb),
                                    shown.cell_id.tolist())),
                hovertemplate=f"%{{x}} %{{customdata[0]}} {workload}<br>{kind} peak %{{y:,.1f}} MB "
                              "(estimate %{customdata[2]:,.0f} MB)<br>%{customdata[1]}<extra>%{customdata[3]}</extra>"))
    for (host, spec), g in ran.groupby(["host", "spec"], sort=True):
        for col, name, colour in (("budget_mb", "RAM budget", "#d62728"), ("gpu_budget_mb", "GPU budget", "#2ca02c")):
            for budget in g[col].dropna().unique():
                facets.hline((host, spec), float(budget), f"{name} {budget:,.0f} MB", colour)
    out.append(("Peak memory against the host's budget (MB, log; circle: RAM, diamond: GPU, x: not ok)",
                facets.figure(scattermode="group")))
    est = ran.dropna(subset=["memory_ratio"])
    if not est.empty:
        colours = qualitative.Plotly
        boxes = [dict(type="box", x=g.x.tolist(), y=_clean(g.memory_ratio), name=workload, boxpoints="all", jitter=0.4,
                      pointpos=0, marker=dict(size=4, color=colours[i % len(colours)]), customdata=g.cell_id.tolist(),
                      hovertemplate="%{x}<br>peak / estimate %{y:.2f}<extra>%{customdata}</extra>")
                 for i, (workload, g) in enumerate(est.groupby("workload", sort=True))]
        fig = go.Figure(data=boxes)
        fig.add_hline(y=1.0, line=dict(color="black", dash="dot"))
        _layout(fig, boxmode="group", yaxis_title="measured peak / estimate", xaxis=dict(tickangle=-30))
        out.append(("Memory estimate: measured peak RSS / estimate per implementation (1: exact)", fig))
    return out


def attention(att: pd.DataFrame) -> list:
    """Per (host, dtype, pass): TFLOP/s against sequence length, a line per provider and head dim."""
    out = []
    if att.empty:
        return out
    for (host, dtype, kind), g in att.groupby(["host", "dtype", "pass"], sort=True):
        fig = go.Figure()
        for (prov, D), c in g.groupby(["provider", "D"], sort=True):
            c = c.sort_values("T")
            fig.add_trace(go.Scatter(x=c["T"].tolist(), y=_clean(c.tflops_per_s), mode="lines+markers",
                                     name=f"{prov} D={D}",
                                     hovertemplate=f"{prov} D={D}<br>T %{{x}}<br>%{{y:.4g}} TFLOP/s<extra></extra>"))
        _layout(fig, xaxis=dict(title="sequence length T", type="log"), yaxis_title="TFLOP/s")
        out.append((f"Attention {kind}: {host}, {dtype}", fig))
    return out


def frontier(probes: pd.DataFrame) -> list:
    """Per host: every frontier probe's measured peak against its batch size (filled: it fit;
    a cross: oom), a line per (backend, dtype, spec) through the probes that fit, the
    estimate of each probe dotted beside it, the budget dashed, max_batch marked."""
    out = []
    if probes.empty:
        return out
    colours = qualitative.Plotly
    for host, g in probes.groupby("host", sort=True):
        fig = go.Figure()
        for i, ((label, spec), c) in enumerate(g.groupby(["label", "spec"], sort=True)):
            colour, name = colours[i % len(colours)], f"{label} {spec}"
            c = c.sort_values("batch_size")
            fit = c[c.status.isin(["ok", "diverged"])]
            failed = c[~c.status.isin(["ok", "diverged"])]
            fig.add_trace(go.Scatter(x=fit.batch_size.tolist(), y=_clean(fit.peak_mb), mode="lines+markers", name=name,
                                     legendgroup=name, line=dict(color=colour), marker=dict(size=8),
                                     hovertemplate=f"{name}<br>batch %{{x}}: fits<br>peak %{{y:,.0f}} MB<extra></extra>"))
            fig.add_trace(go.Scatter(x=c.batch_size.tolist(), y=_clean(c.estimate_mb), mode="lines", name=f"{name} estimate",
                                     legendgroup=name, line=dict(color=colour, dash="dot", width=1),
                                     hovertemplate=f"{name} estimate<br>batch %{{x}}<br>%{{y:,.0f}} MB<extra></extra>"))
            if not failed.empty:
                fig.add_trace(go.Scatter(x=failed.batch_size.tolist(), y=_clean(failed.peak_mb), mode="markers",
                                         name=f"{name} {'/'.join(sorted(failed.status.unique()))}", legendgroup=name,
                                         marker=dict(color=colour, size=11, symbol="x"), customdata=failed.status.tolist(),
                                         hovertemplate=f"{name}<br>batch %{{x}}: %{{customdata}}<br>peak when stopped "
                                                       f"%{{y:,.0f}} MB<extra></extra>"))
            best = fit[fit.batch_size == c.max_batch.iloc[0]]
            if not best.empty:
                fig.add_annotation(x=float(best.batch_size.iloc[0]), y=float(best.peak_mb.iloc[0]), ax=0, ay=-30,
                                   text=f"max batch {int(best.batch_size.iloc[0])}", font=dict(color=colour))
        for budget in g.budget_mb.dropna().unique():
            fig.add_hline(y=float(budget), line=dict(color="#d62728", dash="dash"),
                          annotation_text=f"budget {budget:,.0f} MB", annotation_position="top left")
        _layout(fig, xaxis_title="batch size (sequences)", yaxis_title="peak memory (MB)")
        out.append((f"Memory frontier on {host}: the largest batch whose training step fits", fig))
    return out


def comparison(table: pd.DataFrame) -> list:
    """Ratio B/A per metric with its 95% interval over both runs' repeats (reports/stats.py);
    flagged ones in red, rows named by host; the axis on top, where the eye starts."""
    if table.empty:
        return []
    t = table.reset_index(drop=True)
    y = (t.host_a + " · " + t.what + " · " + t.metric).tolist()
    low, high = t.low.astype(float).fillna(t.ratio.astype(float)), t.high.astype(float).fillna(t.ratio.astype(float))
    fig = go.Figure(go.Scatter(
        x=_clean(t.ratio), y=y, mode="markers",
        marker=dict(color=["#d62728" if f else "#7f7f7f" for f in t.flagged], size=9),
        error_x=dict(type="data", symmetric=False, array=_clean(high - t.ratio), arrayminus=_clean(t.ratio - low)),
        hovertemplate="%{y}<br>B/A %{x:.3f}<extra></extra>"))
    fig.add_vline(x=1.0, line=dict(color="black", dash="dot"))
    _layout(fig, xaxis=dict(title="B / A", type="log", side="top"), height=max(HEIGHT, 80 + 22 * len(t)),
            yaxis=dict(autorange="reversed", tickfont=dict(size=9)), margin=dict(l=460, r=20, t=70, b=30))
    return [("Run B / run A per metric (bars: 95% interval over both runs' repeats, none with one repeat; red: "
             "flagged, beyond 1 +- 5%)", fig)]
