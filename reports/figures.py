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

from reports.facets import Facets, colours_for
from reports.load import STATUS_ORDER, STATUS_RANK, worst_status

STATUS_COLOURS = {"ok": "#2ca02c", "unavailable": "#bdbdbd", "no_host": "#9e9e9e", "nonconformant": "#9467bd",
                  "diverged": "#ff7f0e", "timeout": "#8c564b", "oom": "#d62728", "crash": "#7f0000"}
# a curve longer than this is thinned (every k-th step, the last kept) so a thousand-cell
# page stays small; validation points are never thinned
MAX_CURVE_POINTS = 400
HEIGHT = 380
# validation losses this close at every evaluation are one curve in the step figure (and the
# caption says so): under a pixel of a loss axis a few nats tall, far under the run-to-run
# drift of float32 training (backends computing the same function differ by ~0.003 after 400 steps)
COINCIDE_NATS = 0.005
MAX_BOX_POINTS = 200
MAX_MARKED_CURVES = 60


def _layout(fig: go.Figure, **kw) -> go.Figure:
    base = dict(height=HEIGHT, margin=dict(l=60, r=20, t=40, b=50), template="plotly_white",
                legend=dict(font=dict(size=11)))
    fig.update_layout(**{**base, **kw})
    return fig


def _clean(values) -> list:
    """NaN -> None (JSON null: a gap), floats as Python floats."""
    return [None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v) for v in values]


def status_grid(cells: pd.DataFrame) -> list:
    """Host x (backend, workload), coloured by the worst status of the cells in each square
    (STATUS_COLOURS); the text lists the counts per status."""
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
        showscale=False))  # the key is the page's row of status chips (report.py): a colour bar's 8 labels overlap
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


def coinciding(losses: pd.DataFrame, tol: float = COINCIDE_NATS) -> list[tuple[list[str], float]]:
    """Groups (two or more) of a panel's cells whose validation losses agree within `tol` at
    every evaluation (the same steps): the same function computed, whichever backend; drawn
    apart they would hide each other. Each: (cell ids in the frame's order, the largest spread
    between them at any evaluation)."""
    val = losses[losses.kind == "val"]
    groups: list[tuple[tuple, np.ndarray, list[str], np.ndarray, np.ndarray]] = []
    for cell_id, c in val.groupby("cell_id", sort=False):
        steps, ys = tuple(c.step), c.loss.to_numpy(dtype=float)
        if not steps or not np.isfinite(ys).all():
            continue
        for g_steps, anchor, ids, lo, hi in groups:
            if g_steps == steps and np.abs(ys - anchor).max() <= tol:
                ids.append(cell_id)
                np.minimum(lo, ys, out=lo)
                np.maximum(hi, ys, out=hi)
                break
        else:
            groups.append((steps, ys, [cell_id], ys.copy(), ys.copy()))
    return [(ids, float((hi - lo).max())) for _, _, ids, lo, hi in groups if len(ids) > 1]


def _alike(labels: list[str]) -> str:
    """One name for coinciding cells: "numpy = torch = jax float32" (a shared last word once)."""
    words = [lab.rsplit(" ", 1) for lab in labels]
    if all(len(w) == 2 for w in words) and len({w[1] for w in words}) == 1:
        return " = ".join(w[0] for w in words) + " " + words[0][1]
    return " = ".join(labels)


def _agreement(spread: float) -> str:
    if spread < 5e-4:
        return "identical validation losses at every evaluation (to 3 decimals)"
    return f"validation losses within {spread:.3f} nats of each other at every evaluation"


def _hlines(facets: Facets, key, cells: pd.DataFrame, targets) -> None:
    """The target(s) and, on a synthetic corpus, the exact entropy floor across key's panel."""
    for target in sorted(set(targets)):
        facets.hline(key, float(target), f"target {target:.4g}", "#d62728")
    for floor in cells.entropy_floor.dropna().unique() if "entropy_floor" in cells else []:
        facets.hline(key, float(floor), f"entropy floor {floor:.4g}", "black")


class _Merged:
    """Traces of one panel gathered per series: each cell's points, a null between cells (a
    gap in the line), so a figure holds a trace per series and panel, not per cell (seeds
    and repeats of an implementation share its colour and legend entry)."""

    def __init__(self):
        self.points: dict[str, dict[str, list]] = {}

    def extend(self, series: str, x: list, y: list, custom: list) -> None:
        p = self.points.setdefault(series, {"x": [], "y": [], "customdata": []})
        if p["x"]:
            p["x"].append(None), p["y"].append(None), p["customdata"].append(None)
        p["x"] += x
        p["y"] += y
        p["customdata"] += custom

    def add_to(self, facets: Facets, key, trace: dict, name_suffix: str = "", legend: bool = True) -> None:
        for series, p in self.points.items():
            facets.add(key, series, {**trace, **p})
            facets.traces[-1].update(name=series + name_suffix, showlegend=facets.traces[-1]["showlegend"] and legend)


def loss_curves(losses: pd.DataFrame, cells: pd.DataFrame) -> list:
    """Two figures, a panel per (host, spec): validation loss against training seconds (the
    step times up to each evaluation, as time to target counts them), so the first curve to
    cross the target line is the fastest to it; and the training loss against steps with the
    validation losses as diamonds. A colour per series (implementation and dtype: seeds and
    repeats share it; a cell's id is in its hover). Cells whose validation losses coincide
    (coinciding) are one curve in the step figure, named by all of them, and the caption says so."""
    if losses.empty:
        return []
    keys = sorted(set(zip(losses.host, losses.spec)))
    cell = losses.drop_duplicates("cell_id").set_index("cell_id")
    colours = colours_for(sorted(set(cell.series)))
    by_time = Facets(keys, [], "validation loss (nats/token)", xtitle="training seconds", colours=colours)
    by_step = Facets(keys, [], "loss (nats/token)", xtitle="step", colours=colours)
    # each evaluation a diamond while a person can tell them apart; beyond, lines (an SVG node
    # per point is most of a thousand-cell figure's drawing time)
    marked = len(cell) <= MAX_MARKED_CURVES  # beyond, validation shows in the seconds figure only
    mode = "lines+markers" if marked else "lines"
    notes = []
    for key in keys:
        grp = losses[(losses.host == key[0]) & (losses.spec == key[1])]
        sel = cells[(cells.host == key[0]) & (cells.spec == key[1]) & (cells.workload == "train")]
        targets = grp.target.dropna().unique()
        _hlines(by_time, key, sel, targets)
        _hlines(by_step, key, sel, targets)
        groups = coinciding(grp)
        first_of = {ids[0]: ids for ids, _ in groups}
        hidden = {c for ids, _ in groups for c in ids[1:]}
        val_time, train_step, val_step = _Merged(), _Merged(), _Merged()
        for cell_id, c in grp.groupby("cell_id", sort=False):
            label, series = cell.label[cell_id], cell.series[cell_id]
            va = c[(c.kind == "val") & c.seconds.notna() & c.loss.notna()]
            if not va.empty:
                val_time.extend(series, _clean(va.seconds), _clean(va.loss),
                                [[label, s, cell_id] for s in va.step.tolist()])
            if cell_id in hidden:
                continue
            members = first_of.get(cell_id, [cell_id])
            name = _alike([cell.series[i] for i in members]) if len(members) > 1 else series
            by_step.colour.setdefault(name, colours[series])
            tr = c[c.kind == "train"]
            steps, ys = _thin(tr.step.tolist(), _clean(tr.loss))
            train_step.extend(name, steps, ys, [f"{_alike([cell.label[i] for i in members])} ({cell_id})"] * len(steps))
            va = c[c.kind == "val"]
            if marked and not va.empty:
                val_step.extend(name, va.step.tolist(), _clean(va.loss), [cell.label[cell_id]] * len(va))
        val_time.add_to(by_time, key, dict(
            type="scatter", mode=mode, line=dict(width=1.5), marker=dict(size=7, symbol="diamond"),
            hovertemplate="%{customdata[0]}<br>%{x:,.3r} s (step %{customdata[1]})<br>validation %{y:.4f}"
                          "<extra>%{customdata[2]}</extra>"))
        train_step.add_to(by_step, key, dict(type="scatter", mode="lines", line=dict(width=1.5),
                                             hovertemplate="%{customdata}<br>step %{x}<br>loss %{y:.4f}<extra></extra>"))
        val_step.add_to(by_step, key, dict(type="scatter", mode="markers",
                                           marker=dict(size=9, symbol="diamond", line=dict(width=1)),
                                           hovertemplate="%{customdata} validation<br>step %{x}<br>loss %{y:.4f}"
                                                         "<extra></extra>"), " val", legend=False)
        for ids, spread in groups:
            names = [cell.label[i] for i in ids]
            names = names if len(names) <= 6 else names[:5] + [f"{len(names) - 5} more cells"]
            notes.append(f"{key[1]} on {key[0]}: " + ", ".join(names) + f": {_agreement(spread)}; "
                         "shown as one curve in the step figure")
    note = _join_notes(notes)
    return [("Validation loss against training seconds (step times summed, evaluation excluded, as time to "
             "target counts them; dashed red: the target)", by_time.figure(), note),
            ("Training loss against step" + (" (diamonds: validation)" if marked else ""), by_step.figure(), note)]


def _join_notes(notes: list[str], most: int = 4) -> str:
    shown = notes[:most] + ([f"and {len(notes) - most} more such groups"] if len(notes) > most else [])
    return ". ".join(shown) + ("." if shown else "")


def _x(df: pd.DataFrame) -> pd.Series:
    """A panel's x: the implementation, and its device when not the CPU."""
    return df.impl + np.where(df.device.fillna("cpu") == "cpu", "", " (" + df.device.fillna("") + ")")


def _series(df: pd.DataFrame) -> pd.Series:
    return df.dtype.astype(str)


def ranks(headline_rows: list[dict]) -> dict[tuple, int]:
    """(host, spec, bar x, dtype) -> the headline's rank (reports.headline.headline(...).rows;
    the best where options split one bar into several rows); unranked rows are absent."""
    out: dict[tuple, int] = {}
    for r in headline_rows:
        if r.get("rank") is None:
            continue
        x = r["label"] + ("" if r["device"] in (None, "cpu") else f" ({r['device']})")
        key = (r["host"], r["spec"], x, r["dtype"])
        out[key] = min(out.get(key, r["rank"]), r["rank"])
    return out


def _panel_order(g: pd.DataFrame, rank: dict[tuple, int], key) -> list[str]:
    """A panel's bars: by the best headline rank of their implementation, the unranked after
    them by their value, the largest first."""
    best: dict[str, tuple] = {}
    for x, series, y in zip(g.x, g.series, g.y):
        r = rank.get((*key, x, series))
        mine = (0 if r is not None else 1, r if r is not None else 0, -(y if y == y else -np.inf))
        best[x] = min(best.get(x, mine), mine)
    return sorted(best, key=lambda x: (*best[x], x))


def _facet_bars(cells: pd.DataFrame, value: str, low: str | None, high: str | None, ytitle: str,
                scale: float = 1.0, rank: dict[tuple, int] | None = None) -> go.Figure:
    """A panel per (host, spec), a bar per implementation, a colour per dtype. Cells sharing a
    bar (seeds, repeats) are pooled: the median of their values, whiskers from the lowest low
    to the highest high (one cell: its own quartiles). Bars in the headline's rank order
    (`rank`, from ranks()), each ranked bar labelled "#rank"; unranked ones after them."""
    rank = rank or {}
    cells = cells.assign(x=_x(cells), series=_series(cells), lo=cells[low] if low else np.nan,
                         hi=cells[high] if high else np.nan)
    bars = cells.groupby(["host", "spec", "series", "x"], sort=True).agg(
        y=(value, "median"), lo=("lo", "min"), hi=("hi", "max"), n=("cell_id", "size"),
        ids=("cell_id", lambda c: " ".join(i[:6] for i in c))).reset_index()
    keys = sorted(set(zip(bars.host, bars.spec)))
    facets = Facets(keys, sorted(bars.series.unique()), ytitle)
    for key, g in bars.groupby(["host", "spec"], sort=True):
        facets.order(key, _panel_order(g, rank, key))
    for (host, spec, series), g in bars.groupby(["host", "spec", "series"], sort=True):
        y = g.y * scale
        text = [f"#{rank[(host, spec, x, series)]}" if (host, spec, x, series) in rank else "" for x in g.x]
        trace = dict(type="bar", x=g.x.tolist(), y=_clean(y), customdata=list(zip(g.n.tolist(), g.ids.tolist())),
                     text=text, textposition="inside", insidetextanchor="start", textfont=dict(size=11),
                     hovertemplate=f"%{{x}} {series}<br>{host} · {spec}<br>%{{y:,.3r}}"
                                   "<br>%{customdata[0]} cell(s): %{customdata[1]}<extra></extra>")
        if low and high:
            trace["error_y"] = dict(type="data", symmetric=False, array=_clean(g.hi * scale - y),
                                    arrayminus=_clean(y - g.lo * scale))
        facets.add((host, spec), series, trace)
    return facets.figure(barmode="group")


def throughput(cells: pd.DataFrame, rank: dict[tuple, int] | None = None) -> list:
    """tokens/s per (host, spec) panel, a bar per implementation and a colour per dtype: training
    (median step, quartile whiskers) and MFU in the headline's rank order (`rank`, from
    ranks()); decoding (median token, quartiles of the per-token times), fastest first."""
    out = []
    ok = cells[cells.status == "ok"]
    train = ok[ok.workload == "train"].dropna(subset=["tokens_per_s"]) if "tokens_per_s" in ok else ok.iloc[:0]
    if not train.empty:
        out.append(("Training throughput (tokens/s, median step; whiskers: quartiles; #: the headline's rank)",
                    _facet_bars(train, "tokens_per_s", "tokens_per_s_q1", "tokens_per_s_q3", "tokens/s", rank=rank)))
        with_mfu = train.dropna(subset=["mfu"])
        if not with_mfu.empty:
            out.append(("MFU (% of each host's calibrated GEMM peak for the cell's dtype; #: the headline's rank)",
                        _facet_bars(with_mfu, "mfu", None, None, "MFU (%)", scale=100.0, rank=rank)))
    gen = ok[ok.workload == "generate"]
    if not gen.empty and "decode_tokens_per_s" in gen:
        gen = gen.dropna(subset=["decode_tokens_per_s"])
        # per-token time quartiles -> tokens/s quartiles (the slow quartile is the low one)
        gen = gen.assign(decode_q1=1e3 / gen.token_ms_q3, decode_q3=1e3 / gen.token_ms_q1)
        out.append(("Decode throughput (tokens/s: the batch over the median per-token time, prefill excluded; "
                    "whiskers: quartiles)",
                    _facet_bars(gen, "decode_tokens_per_s", "decode_q1", "decode_q3", "tokens/s")))
    return out


def memory(cells: pd.DataFrame, rank: dict[tuple, int] | None = None) -> list:
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
        facets.order((host, spec), _panel_order(g.assign(series=_series(g), y=np.nan), rank or {}, (host, spec)))
        for col, name, colour in (("budget_mb", "RAM budget", "#d62728"), ("gpu_budget_mb", "GPU budget", "#2ca02c")):
            for budget in g[col].dropna().unique():
                facets.hline((host, spec), float(budget), f"{name} {budget:,.0f} MB", colour)
    out.append(("Peak memory against the host's budget (MB, log axis; circle: RAM, diamond: GPU, x: not ok)",
                facets.figure(scattermode="group")))
    est = ran.dropna(subset=["memory_ratio"])
    if not est.empty:
        colours = qualitative.Plotly
        # every cell a point while they can be told apart; beyond, the boxes and their outliers
        points = "all" if len(est) <= MAX_BOX_POINTS else "outliers"
        boxes = [dict(type="box", x=g.x.tolist(), y=_clean(g.memory_ratio), name=workload, boxpoints=points, jitter=0.4,
                      pointpos=0, marker=dict(size=4, color=colours[i % len(colours)]), customdata=g.cell_id.tolist(),
                      hovertemplate="%{x}<br>peak / estimate %{y:.2f}<extra>%{customdata}</extra>")
                 for i, (workload, g) in enumerate(est.groupby("workload", sort=True))]
        fig = go.Figure(data=boxes)
        fig.add_hline(y=1.0, line=dict(color="black", dash="dot"))
        best = {}
        for (host, spec, x, _), r in (rank or {}).items():
            best[x] = min(best.get(x, r), r)
        order = sorted(set(est.x), key=lambda x: (x not in best, best.get(x, 0), x))
        _layout(fig, boxmode="group", yaxis_title="measured peak / estimate",
                xaxis=dict(tickangle=-30, categoryorder="array", categoryarray=order))
        out.append(("Memory estimate: measured peak RSS / estimate per implementation (1: exact)", fig))
    return out


def attention(att: pd.DataFrame) -> list:
    """TFLOP/s against sequence length, a panel per (host, dtype, pass), a line per provider and
    head dim (several cells of one: the median per T); the T axis (log) labelled at the
    measured lengths."""
    if att.empty:
        return []
    att = att.assign(series=att.provider.astype(str) + " D=" + att.D.astype(str))
    keys = sorted(set(zip(att.host, att.dtype, att["pass"])))
    facets = Facets(keys, sorted(att.series.unique()), "TFLOP/s", xtitle="sequence length T", log_x=True)
    for key, g in att.groupby(["host", "dtype", "pass"], sort=True):
        facets.x_ticks(key, g["T"].tolist())
        for series, c in g.groupby("series", sort=True):
            c = c.groupby("T", as_index=False).tflops_per_s.median()  # repeats of a cell: their median
            facets.add(key, series, dict(type="scatter", x=c["T"].tolist(), y=_clean(c.tflops_per_s),
                                         mode="lines+markers", line=dict(width=1.5),
                                         hovertemplate=f"{series}<br>T %{{x}}<br>%{{y:.3r}} TFLOP/s<extra></extra>"))
    return [("Attention: TFLOP/s against sequence length T (a panel per host, dtype and pass)", facets.figure())]


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
        _layout(fig, xaxis_title="batch size (sequences)", yaxis=dict(title="peak memory (MB)", tickformat=","))
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
