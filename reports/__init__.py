"""HTML reports of a run directory (docs/reports.md): one offline page (plotly.js beside it,
shared by the folder's pages) with status, loss, throughput, MFU, memory, attention,
conformance, samples and environment; a comparison of two runs; exports of the records as CSV and Parquet.

Needs the `report` extra (pandas, plotly, pyarrow); nothing here is imported by a cell.
"""

from __future__ import annotations

from pathlib import Path

from gptspec.errors import GptbenchError
from gptspec.files import write_text_atomic


def write_report(run, out_path=None, compare=None, include_contended=False, comparison=None) -> Path:
    """Write the report of `run` (a run directory, or its reports.load.Run) with a comparison
    against run `compare` (its B: a directory or a Run) first, and return its path. Default:
    RUN_DIR/report.html, or RUN_DIR/compare-<B's name>.html. comparison: compare_runs' result
    when the caller has it already (the CLI prints and exports it too)."""
    from reports.html import PLOTLY_JS, write_plotly
    from reports.load import Run, load_run
    from reports.report import build

    a = run if isinstance(run, Run) else load_run(run)
    b = compare if compare is None or isinstance(compare, Run) else load_run(compare)
    if out_path is None:
        name = "report.html" if b is None else f"compare-{Path(b.path).resolve().name}.html"
        out_path = a.path / name
    out_path = Path(out_path)
    page = build(a, b, include_contended, comparison)
    # plotly.js first: a page never names a file that is not there
    for path, write in ((out_path.parent / PLOTLY_JS, lambda: write_plotly(out_path.parent)),
                        (out_path, lambda: write_text_atomic(out_path, page))):
        try:  # whole or not at all: a full disk leaves the previous page (or none), never half of one
            write()
        except OSError as e:
            raise GptbenchError(f"cannot write {path} ({e.strerror or e}); the run's records are untouched. "
                                f"Free space (or give -o elsewhere), then `gptbench report {a.path}`.") from None
    return out_path
