"""Small multiples for figures that must stay readable at hundreds of cells: one panel per key
(host and spec, or host, dtype and pass), wrapped FACET_COLUMNS to a row, each panel with its
own y axis (a tiny model's tokens/s and gpt2-124m's differ by orders of magnitude), the same
colour for the same series in every panel and one legend entry per series that toggles it
everywhere.

The panels' axes are laid out here rather than by plotly's make_subplots, and the figure is
made once from plain dicts: make_subplots and per-trace updates cost seconds per figure at
a thousand cells.

Log axes carry the values a person reads, never plotly's minor labels ("3, 2, 9 8 7"): the
measured values where given (log_x_ticks: T = 64, 128, 256), else round numbers 1-2-5 per
decade written in full ("3,000")."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative

from reports import fmt

FACET_COLUMNS = 4
PANEL_HEIGHT = 260  # px per row of panels
GAP_X, GAP_Y = 0.05, 0.3  # between panels: fraction of the width; fraction of a row's height
# finer steps per decade, tried in turn until a panel's range holds at least 3 ticks
MANTISSAS = ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9))


def log_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Round values spanning [lo, hi] on a log axis: the coarsest of MANTISSAS' sets that gives
    more than max_ticks/2 ticks (and at least 3), else the finest with at most max_ticks."""
    if not (lo > 0 and hi >= lo):
        return []
    best: list[float] = []
    for mantissas in MANTISSAS:
        ticks = [float(f"{m * 10.0 ** e:.6g}") for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in mantissas if lo / 1.05 <= m * 10.0 ** e <= hi * 1.05]
        if len(ticks) > max_ticks and best:
            break
        best = ticks
        if len(ticks) >= 3 and len(ticks) > max_ticks // 2:
            break
    return best


def colours_for(series: list[str]) -> dict[str, str]:
    palette = qualitative.Plotly
    return {s: palette[i % len(palette)] for i, s in enumerate(series)}


class Facets:
    """A figure of panels, one per key (a tuple of names) in the order given."""

    def __init__(self, keys: list[tuple], series: list[str], ytitle: str, log_y: bool = False,
                 xtitle: str | None = None, log_x: bool = False, colours: dict[str, str] | None = None):
        self.keys = list(keys)
        self.cols = min(FACET_COLUMNS, len(self.keys))
        self.rows = math.ceil(len(self.keys) / self.cols)
        self.colour = {**colours_for(series), **(colours or {})}
        self.log_y = log_y
        self.traces: list[dict] = []
        self.shapes: list[dict] = []
        self.annotations: list[dict] = []
        self.layout: dict = {}
        self._hlines: dict[int, list[float]] = {}
        width = (1 - GAP_X * (self.cols - 1)) / self.cols
        height = 1 / (self.rows + GAP_Y * (self.rows - 1))
        for i, key in enumerate(self.keys):
            r, c = divmod(i, self.cols)
            x0, y1 = c * (width + GAP_X), 1 - r * height * (1 + GAP_Y)
            n = "" if i == 0 else str(i + 1)
            xaxis = dict(domain=[x0, x0 + width], anchor=f"y{n}", tickfont=dict(size=10))
            if xtitle is None:  # categories: the same implementation in the same place in every panel
                xaxis.update(tickangle=-30, categoryorder="category ascending")
            else:
                xaxis.update(title=dict(text=xtitle, font=dict(size=11)), type="log" if log_x else "linear")
            self.layout[f"xaxis{n}"] = xaxis
            # clamped: three rows' arithmetic ends at -1e-16, which plotly refuses
            self.layout[f"yaxis{n}"] = dict(domain=[max(0.0, y1 - height), min(1.0, y1)], anchor=f"x{n}",
                                            type="log" if log_y else "linear",
                                            title=dict(text=ytitle) if c == 0 else None,
                                            **({} if log_y else {"tickformat": ","}))
            self.annotations.append(dict(text=" · ".join(str(k) for k in key), x=x0 + width / 2, y=y1, xref="paper",
                                         yref="paper", xanchor="center", yanchor="bottom", showarrow=False,
                                         font=dict(size=12)))
        self._shown: set[str] = set()

    def _n(self, key) -> str:
        n = self.keys.index(key) + 1
        return "" if n == 1 else str(n)

    def _axes(self, key) -> tuple[str, str]:
        n = self._n(key)
        return f"x{n}", f"y{n}"

    def order(self, key, categories: list[str]) -> None:
        """key's panel shows its categories in this order (e.g. the headline's rank)."""
        self.layout[f"xaxis{self._n(key)}"].update(categoryorder="array", categoryarray=list(categories))

    def x_ticks(self, key, values) -> None:
        """key's x axis labelled at exactly these values (the measured ones)."""
        vals = sorted(set(values))
        self.layout[f"xaxis{self._n(key)}"].update(tickvals=vals, ticktext=[fmt.tick(v) for v in vals])

    def add(self, key, series: str, trace: dict) -> None:
        """A trace (a plotly trace as a dict, with its "type") into key's panel, coloured and
        grouped as `series`; its first panel names it in the legend."""
        x, y = self._axes(key)
        colour = self.colour[series]
        marker = {**trace.get("marker", {}), "color": colour}
        extra = {"line": {**trace["line"], "color": colour}} if "line" in trace else {}
        self.traces.append({**trace, "marker": marker, **extra, "xaxis": x, "yaxis": y, "name": series,
                            "legendgroup": series, "showlegend": series not in self._shown})
        self._shown.add(series)

    def hline(self, key, y: float, text: str, colour: str) -> None:
        """A dashed line at y across key's panel, labelled at its left end."""
        x, ya = self._axes(key)
        self._hlines.setdefault(self.keys.index(key), []).append(y)
        self.shapes.append(dict(type="line", xref=f"{x} domain", x0=0, x1=1, yref=ya, y0=y, y1=y,
                                line=dict(color=colour, dash="dash", width=1)))
        # an annotation's y on a log axis is log10 of the value (a shape's is the value itself)
        self.annotations.append(dict(text=text, xref=f"{x} domain", x=0, yref=ya, y=math.log10(y) if self.log_y else y,
                                     xanchor="left", yanchor="bottom", showarrow=False,
                                     font=dict(size=10, color=colour)))

    def _log_y_ticks(self) -> None:
        ys: dict[int, list[float]] = {i: list(v) for i, v in self._hlines.items()}
        for t in self.traces:
            i = int(t["yaxis"][1:] or 1) - 1
            ys.setdefault(i, []).extend(v for v in t.get("y") or [] if isinstance(v, (int, float)) and v > 0)
        for i, values in ys.items():
            ticks = log_ticks(min(values), max(values)) if values else []
            if ticks:
                n = "" if i == 0 else str(i + 1)
                self.layout[f"yaxis{n}"].update(tickvals=ticks, ticktext=[fmt.tick(v) for v in ticks])

    def figure(self, **layout) -> go.Figure:
        if self.log_y:
            self._log_y_ticks()
        # plotly's own legend place, right of the panels: the margin grows to hold it
        return go.Figure(data=self.traces, layout=dict(
            height=120 + PANEL_HEIGHT * self.rows, template="plotly_white", margin=dict(l=60, r=20, t=60, b=40),
            legend=dict(font=dict(size=11)), shapes=self.shapes, annotations=self.annotations, **self.layout, **layout))
