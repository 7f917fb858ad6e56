"""Page assembly: sections of figures and tables into one self-contained HTML file.

plotly.js is embedded once, in one script tag; every figure is a JSON object in one
`application/json` block that a small script draws with Plotly.newPlot. Nothing is fetched:
no CDN, no fonts, no images (the browser test runs with the network off and fails on any
request). When every figure has been drawn the script sets `data-rendered` on <body> to
their count (the browser test and the load-time measurement wait for it); a figure that
fails to draw logs a console error.
"""

from __future__ import annotations

import html
import json

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 2em 3em; color: #222; max-width: 1500px; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 2px solid #ddd; padding-top: .6em; }
.meta { color: #555; font-size: .9em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
/* a long sample without spaces wraps instead of widening the page; the columns before it do not */
.samples td { overflow-wrap: anywhere; } .samples td:nth-child(-n+5) { white-space: nowrap; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; font-size: .8em; max-height: 24em; overflow: auto; background: #f8f8f8; margin: 0; }
.figure { min-height: 200px; margin: .3em 0 1.2em; }
.fail, .flag { color: #b00; font-weight: bold; } .pass { color: #070; font-weight: bold; }
.status { padding: 0 4px; border-radius: 3px; color: white; }
figure { margin: 0; } figcaption { font-weight: 600; margin-top: .6em; }
"""

DRAW = """
(function () {
  const specs = JSON.parse(document.getElementById('figures').textContent);
  const config = {responsive: true, displaylogo: false};
  Promise.all(specs.map((spec, i) =>
    Plotly.newPlot('fig-' + i, spec.data, spec.layout, config).catch(e => {
      console.error('figure ' + i + ' failed to draw: ' + e); throw e; })
  )).then(() => { document.body.dataset.rendered = String(specs.length); });
})();
"""


def esc(x) -> str:
    return "" if x is None or (isinstance(x, float) and x != x) else html.escape(str(x))


def fmt(x, digits: int = 4) -> str:
    if isinstance(x, float):
        return "" if x != x else f"{x:.{digits}g}"
    return esc(x)


def table(df: pd.DataFrame, pre: tuple = (), index: bool = False, numeric_digits: int = 4) -> str:
    """An HTML table; columns in `pre` hold long text (tracebacks) folded in <details>."""
    if df.empty:
        return ""
    head = ([esc(df.index.name or "")] if index else []) + [esc(c) for c in df.columns]
    out = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for idx, row in df.iterrows():
        cells = [f"<th>{esc(idx)}</th>"] if index else []
        for col, v in row.items():
            if col in pre and isinstance(v, str) and v:
                cells.append(f"<td><details><summary>show</summary><pre>{esc(v)}</pre></details></td>")
            elif isinstance(v, float):
                cells.append(f'<td class="num">{fmt(v, numeric_digits)}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class Page:
    """Sections in order; figures collected for the one drawing script."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[tuple[str, str, list[str]]] = []  # (anchor, heading, html parts)
        self.figures: list[dict] = []

    def section(self, anchor: str, heading: str) -> list[str]:
        parts: list[str] = []
        self.sections.append((anchor, heading, parts))
        return parts

    def figure(self, parts: list[str], title: str, fig) -> None:
        i = len(self.figures)
        self.figures.append(json.loads(pio.to_json(fig, validate=False)))
        parts.append(f'<figure><figcaption>{esc(title)}</figcaption>'
                     f'<div class="figure" id="fig-{i}" data-title="{esc(title)}"></div></figure>')

    def render(self, header: str) -> str:
        nav = "".join(f'<a href="#{a}">{esc(h)}</a>' for a, h, _ in self.sections)
        body = "".join(f'<section id="{a}"><h2>{esc(h)}</h2>{"".join(p)}</section>' for a, h, p in self.sections)
        # "</" inside a script block would end it early
        specs = json.dumps(self.figures, separators=(",", ":")).replace("</", "<\\/")
        return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{esc(self.title)}</title><style>{STYLE}</style>"
                f"<script>{get_plotlyjs()}</script></head><body>"
                f"<h1>{esc(self.title)}</h1>{header}<nav>{nav}</nav>{body}"
                f'<script type="application/json" id="figures">{specs}</script>'
                f"<script>{DRAW}</script></body></html>")
