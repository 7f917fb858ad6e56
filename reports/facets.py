"""Small multiples for figures that must stay readable at hundreds of cells: one panel per
(host, spec), wrapped FACET_COLUMNS to a row, each panel with its own y axis (a tiny model's
tokens/s and gpt2-124m's differ by orders of magnitude), the same colour for the same series
in every panel and one legend entry per series that toggles it everywhere.

The panels' axes are laid out here rather than by plotly's make_subplots, and the figure is
made once from plain dicts: make_subplots and per-trace updates cost seconds per figure at
a thousand cells."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative

FACET_COLUMNS = 4
PANEL_HEIGHT = 260  # px per row of panels
GAP_X, GAP_Y = 0.05, 0.3  # between panels: fraction of the width; fraction of a row's height


class Facets:
    """A figure of panels, one per key (host, spec) in the order given."""

    def __init__(self, keys: list[tuple[str, str]], series: list[str], ytitle: str, log_y: bool = False):
        self.keys = list(keys)
        self.cols = min(FACET_COLUMNS, len(self.keys))
        self.rows = math.ceil(len(self.keys) / self.cols)
        colours = qualitative.Plotly
        self.colour = {s: colours[i % len(colours)] for i, s in enumerate(series)}
        self.log_y = log_y
        self.traces: list[dict] = []
        self.shapes: list[dict] = []
        self.annotations: list[dict] = []
        self.layout: dict = {}
        width = (1 - GAP_X * (self.cols - 1)) / self.cols
        height = 1 / (self.rows + GAP_Y * (self.rows - 1))
        for i, (host, spec) in enumerate(self.keys):
            r, c = divmod(i, self.cols)
            x0, y1 = c * (width + GAP_X), 1 - r * height * (1 + GAP_Y)
            n = "" if i == 0 else str(i + 1)
            # the same implementation in the same place in every panel
            self.layout[f"xaxis{n}"] = dict(domain=[x0, x0 + width], anchor=f"y{n}", tickangle=-30,
                                            tickfont=dict(size=10), categoryorder="category ascending")
            self.layout[f"yaxis{n}"] = dict(domain=[y1 - height, y1], anchor=f"x{n}", type="log" if log_y else "linear",
                                            title=dict(text=ytitle) if c == 0 else None)
            self.annotations.append(dict(text=f"{host} · {spec}", x=x0 + width / 2, y=y1, xref="paper", yref="paper",
                                         xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=12)))
        self._shown: set[str] = set()

    def _axes(self, key) -> tuple[str, str]:
        n = self.keys.index(key) + 1
        return ("x", "y") if n == 1 else (f"x{n}", f"y{n}")

    def add(self, key, series: str, trace: dict) -> None:
        """A trace (a plotly trace as a dict, with its "type") into key's panel, coloured and
        grouped as `series`; its first panel names it in the legend."""
        x, y = self._axes(key)
        marker = {**trace.get("marker", {}), "color": self.colour[series]}
        self.traces.append({**trace, "marker": marker, "xaxis": x, "yaxis": y, "name": series,
                            "legendgroup": series, "showlegend": series not in self._shown})
        self._shown.add(series)

    def hline(self, key, y: float, text: str, colour: str) -> None:
        """A dashed line at y across key's panel, labelled at its left end."""
        x, ya = self._axes(key)
        self.shapes.append(dict(type="line", xref=f"{x} domain", x0=0, x1=1, yref=ya, y0=y, y1=y,
                                line=dict(color=colour, dash="dash", width=1)))
        # an annotation's y on a log axis is log10 of the value (a shape's is the value itself)
        self.annotations.append(dict(text=text, xref=f"{x} domain", x=0, yref=ya, y=math.log10(y) if self.log_y else y,
                                     xanchor="left", yanchor="bottom", showarrow=False,
                                     font=dict(size=10, color=colour)))

    def figure(self, **layout) -> go.Figure:
        return go.Figure(data=self.traces, layout=dict(
            height=120 + PANEL_HEIGHT * self.rows, template="plotly_white", margin=dict(l=60, r=20, t=60, b=40),
            legend=dict(font=dict(size=11)), shapes=self.shapes, annotations=self.annotations, **self.layout,
            **layout))
