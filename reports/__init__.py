"""HTML reports of a run directory (docs/reports.md): one offline page (plotly.js beside it,
shared by the folder's pages) with status, loss, throughput, MFU, memory, attention,
conformance, samples and environment; a comparison of two runs; exports of the records as CSV and Parquet.

Needs the `report` extra (pandas, plotly, pyarrow); nothing here is imported by a cell.
"""

from __future__ import annotations

from pathlib import Path

from gptspec.errors import GptbenchError
from gptspec.files import write_text_atomic


def write_report(run_dir, out_path=None, compare=None) -> Path:
    """Write the report of run_dir (with a comparison against run `compare`, its B, first) and
    return its path. Default: RUN_DIR/report.html, or RUN_DIR/compare-<B's name>.html."""
    from reports.html import PLOTLY_JS, write_plotly
    from reports.report import build

    run_dir = Path(run_dir)
    if out_path is None:
        name = "report.html" if compare is None else f"compare-{Path(compare).resolve().name}.html"
        out_path = run_dir / name
    out_path = Path(out_path)
    page = build(run_dir, compare)
    # plotly.js first: a page never names a file that is not there
    for path, write in ((out_path.parent / PLOTLY_JS, lambda: write_plotly(out_path.parent)),
                        (out_path, lambda: write_text_atomic(out_path, page))):
        try:  # whole or not at all: a full disk leaves the previous page (or none), never half of one
            write()
        except OSError as e:
            raise GptbenchError(f"cannot write {path} ({e.strerror or e}); the run's records are untouched. "
                                f"Free space (or give -o elsewhere), then `gptbench report {run_dir}`.") from None
    return out_path
