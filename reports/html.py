"""Page assembly: sections of figures and tables into one HTML page that opens offline.

plotly.js is not inside the page: it is one file beside it, `plotly-<version>.min.js`
(write_plotly), that every report of the folder shares (a run's report and its compare
pages), loaded by a relative <script src>. The page itself holds only its figures, so it
weighs what its data weighs; the browser caches the library across the folder's pages. A
page copied elsewhere needs that file beside it; without it the page says so instead of
drawing.

Every figure is a JSON object in one `application/json` block, without its template (the
one template, plotly_white, is in the block once) and drawn by Plotly.newPlot. Nothing is
fetched from the network: no CDN, no fonts, no images (the browser test runs with the
network off and fails on any request). When every figure has been drawn the script sets
`data-rendered` on <body> to their count (the browser test and the load-time measurement
wait for it); a figure that fails to draw logs a console error and stops the drawing. Figures
are drawn one per task from the top (window.gptbenchDrawnMs: when each finished), so the
page shows and scrolls while a large run's figures are still being drawn.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from gptspec.files import write_text_atomic
from reports import fmt

TEMPLATE = "plotly_white"
PLOTLY_JS = f"plotly-{get_plotlyjs_version()}.min.js"  # the version in the name: folders never mix two

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
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre { white-space: pre-wrap; font-size: .8em; max-height: 24em; overflow: auto; background: #f8f8f8; margin: 0; }
.figure { min-height: 200px; margin: .3em 0 1.2em; }
.fail, .flag { color: #b00; font-weight: bold; } .pass { color: #070; font-weight: bold; }
.status { padding: 0 4px; border-radius: 3px; color: white; }
.missing { background: #fee; border: 1px solid #b00; padding: .5em; }
figure { margin: 0; } figcaption { font-weight: 600; margin-top: .6em; }
figcaption .note { font-weight: normal; color: #555; }
"""

DRAW = """
(function () {
  const figures = JSON.parse(document.getElementById('figures').textContent);
  if (typeof Plotly === 'undefined') {
    const p = document.createElement('p');
    p.className = 'missing';
    p.textContent = '%(js)s is missing beside this page, so its figures cannot be drawn: copy it from the ' +
      'run directory, or run `gptbench report` again.';
    document.body.prepend(p);
    console.error('%(js)s not loaded');
    return;
  }
  const config = {responsive: true, displaylogo: false};
  // one figure per task, top of the page first: the browser paints and answers input between
  // figures, so the headline and the first figures show while a large page draws the rest
  const drawn = window.gptbenchDrawnMs = [];
  function draw(i) {
    if (i === figures.specs.length) { document.body.dataset.rendered = String(i); return; }
    const spec = figures.specs[i];
    Plotly.newPlot('fig-' + i, spec.data, Object.assign({template: figures.template}, spec.layout), config)
      .then(() => { drawn.push(Math.round(performance.now())); setTimeout(() => draw(i + 1), 0); },
            e => console.error('figure ' + i + ' failed to draw: ' + e));
  }
  draw(0);
})();
""" % {"js": PLOTLY_JS}


def write_plotly(folder) -> Path:
    """The folder's shared plotly.js (written when absent or not this version's)."""
    path = Path(folder) / PLOTLY_JS
    js = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(js.encode()):
        write_text_atomic(path, js)
    return path


def esc(x) -> str:
    return "" if x is None or (isinstance(x, float) and x != x) else html.escape(str(x))


def table(df: pd.DataFrame, pre: tuple = (), index: bool = False, numeric: tuple = ()) -> str:
    """An HTML table. Columns in `pre` hold long text (tracebacks) folded in <details>; those
    in `numeric` (already formatted by reports.fmt) and any float left are right-aligned, a
    float written by fmt.number."""
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
                cells.append(f'<td class="num">{fmt.number(v)}</td>')
            elif col in numeric:
                cells.append(f'<td class="num">{esc(v)}</td>')
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

    def figure(self, parts: list[str], title: str, fig, note: str = "") -> None:
        """A figure under its caption (title, then `note` in plain weight)."""
        i = len(self.figures)
        spec = json.loads(pio.to_json(fig, validate=False))
        spec.get("layout", {}).pop("template", None)  # once for the page (DRAW)
        self.figures.append(spec)
        note_html = f' <span class="note">{esc(note)}</span>' if note else ""
        parts.append(f'<figure><figcaption>{esc(title)}{note_html}</figcaption>'
                     f'<div class="figure" id="fig-{i}" data-title="{esc(title)}"></div></figure>')

    def render(self, header: str) -> str:
        nav = "".join(f'<a href="#{a}">{esc(h)}</a>' for a, h, _ in self.sections)
        body = "".join(f'<section id="{a}"><h2>{esc(h)}</h2>{"".join(p)}</section>' for a, h, p in self.sections)
        template = pio.templates[TEMPLATE].to_plotly_json() if self.figures else {}
        # "</" inside a script block would end it early
        block = json.dumps({"template": template, "specs": self.figures}, separators=(",", ":")).replace("</", "<\\/")
        return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{esc(self.title)}</title><style>{STYLE}</style>"
                f'<script src="{PLOTLY_JS}"></script></head><body>'
                f"<h1>{esc(self.title)}</h1>{header}<nav>{nav}</nav>{body}"
                f'<script type="application/json" id="figures">{block}</script>'
                f"<script>{DRAW}</script></body></html>")
