"""`gptbench run`: a matrix through Ray into a run directory, then the report.

Kept out of cli.py because it is the driver: it imports ray, pydantic and yaml, which the
other commands (and the low-RAM box) never need.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import workloads
from gptspec.errors import GptbenchError
from gptspec.files import write_private
from gptspec.limits import quote
from reports.rundir import REPORT_FIELDS, RUN, latest, read_hosts, read_records, read_run_info
from suite import env, loopback, tempdirs
from suite.store import RunStore


def run(matrix_path: str | None, address: str | None, out: str | None, resume: str | None,
        preflight: bool = False) -> int:
    # what a driver or runner killed with SIGKILL left: Ray's agents, temp dirs, a cell's helpers
    for folder in tempdirs.sweep(tempdirs.DRIVER_PREFIX, "/tmp") + tempdirs.sweep(tempdirs.CELL_PREFIX):
        print(f"removed {folder}, left by a gptbench process that was killed, and ended its processes",
              file=sys.stderr)
    temp_dir = None if address else tempdirs.make(tempdirs.DRIVER_PREFIX, "/tmp")
    local = _local_ray_env(temp_dir) if temp_dir else {}
    before = {k: os.environ.get(k) for k in local}
    try:
        os.environ.update(local)  # before Ray is imported: it reads these once
        return _run(matrix_path, address, out, resume, temp_dir, preflight)
    finally:
        for k, v in before.items():  # this process's environment as it was (a caller's, a test's)
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _local_ray_env(temp_dir: Path) -> dict:
    """The local one-node Ray of a run without --address: its own token, mode 0600, in its
    temp dir (Ray would write ~/.ray/auth_token world-readable); every port on loopback
    (suite/loopback.py); and the marker by which a later run finds what is left of this one
    after a SIGKILL (suite/tempdirs.py)."""
    token = write_private(temp_dir / "auth_token", uuid.uuid4().hex)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), **loopback.ENV,
            tempdirs.MARKER: str(temp_dir)}


def _run(matrix_path, address, out, resume, temp_dir, preflight) -> int:
    from suite import dispatch
    from suite import matrix as M

    code_version = env.code_version()
    if resume:
        if matrix_path:
            raise GptbenchError("--resume runs the matrix recorded in the run directory; give no MATRIX with it.")
        info, mx = _checked_run(resume, code_version)  # before its lock is taken or Ray starts
        store = RunStore.open(resume)
        for note in store.notes:
            print(note, file=sys.stderr)
        if info["code_version"] != code_version:
            store.close()
            raise GptbenchError(f"{resume} was measured with code {info['code_version'][:100]}, this is "
                                f"{code_version}: one run compares one version of the code. Check it out, or start "
                                "a new run.")
    else:
        mx, text = M.load(matrix_path) if matrix_path else (M.default_matrix(), None)
        run_dir = Path(out or f"runs/{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{mx.name}").resolve()
        store = RunStore.create(run_dir, {"code_version": code_version, "matrix_source": matrix_path or "embedded default",
                                          "matrix": mx.model_dump(mode="json")}, text)
    import ray

    try:
        with store:
            print(dispatch.connect(address, str(temp_dir) if temp_dir else None), file=sys.stderr)
            outcome = _run_with_bar(mx, store, code_version, preflight)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    print(f"{outcome.written} record(s) written, {outcome.skipped} already there, of {outcome.total} cells: "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcome.statuses.items())), file=sys.stderr)
    if outcome.dispatch_s:
        print(f"dispatch overhead per cell (Ray + the child, everything but the workload): median "
              f"{statistics.median(outcome.dispatch_s):.2f} s, max {max(outcome.dispatch_s):.2f} s; Ray's part: "
              f"median {statistics.median(outcome.ray_overhead_s):.2f} s", file=sys.stderr)
    if outcome.lost_node:
        print(f"{outcome.lost_node} cell(s) lost their node (no_host, lost_node): once it is back in the pool, "
              f"run them with\n  gptbench run --resume {store.dir}", file=sys.stderr)
    if preflight:
        print(f"pre-flight only: {outcome.feasible} cell(s) can run on the live pool; run them with\n"
              f"  gptbench run --resume {store.dir}", file=sys.stderr)
        return 0
    if outcome.interrupted:
        print(f"interrupted: every finished cell's record is in {store.dir}/cells.jsonl; finish the run with\n"
              f"  gptbench run --resume {store.dir}", file=sys.stderr)
        return 130
    report(store.dir)
    return 0


def _checked_run(run_dir, code_version: str):
    """(run.json, its matrix) of a run to resume, with every file of the folder read and
    checked first: a damaged one is an error naming the file, the line and the field, before
    the folder is locked or Ray started (docs/run-dir.md). The matrix of a run measured by
    other code is not validated (this code's fields may differ): the resume is refused for
    that, by name, and the matrix is None."""
    from suite import matrix as M

    path = Path(run_dir)
    if not (path / RUN).is_file():
        raise GptbenchError(f"cannot resume {path}: it has no {RUN}, so it is not a gptbench run directory.")
    info = read_run_info(path)
    for field, kind in (("code_version", str), ("matrix", dict)):
        if not isinstance(info.get(field), kind):
            raise GptbenchError(f"{path / RUN}: field {field!r} is {quote(info.get(field), 80)}, not "
                                f"{'a string' if kind is str else 'an object'}: the run's description is damaged; "
                                "restore it (docs/run-dir.md).")
    mx = M.validate(info["matrix"], f"{path / RUN} (field 'matrix')") if info["code_version"] == code_version else None
    read_records(path, REPORT_FIELDS)  # every line, as the summary at the end will read them
    read_hosts(path)
    return info, mx


def _run_with_bar(mx, store, code_version, preflight=False):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from suite import dispatch

    console = Console(stderr=True, highlight=False)
    columns = (TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("cells", total=None)
        return dispatch.run_matrix(mx, store, code_version,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total),
                                   log=bar.console.print, preflight=preflight)


def report(run_dir: Path) -> None:
    """A summary table (job logs show it), then the HTML report (reports/)."""
    summary(run_dir)
    try:
        from reports import write_report

        path = write_report(run_dir, run_dir / "report.html")
    except ImportError as e:  # the driver may lack the report extra (pandas, plotly)
        print(f"no HTML report: {e}; `pip install gptbench[report]`, then `gptbench report {run_dir}`",
              file=sys.stderr)
        return
    print(f"report: {path}")


def _tokens_per_s(metrics: dict, declared) -> str:
    """The first tokens/s metric the workload declares for summaries (train's median step,
    generate's decode rate after warm-up); empty for a workload without one."""
    for d in declared:
        value = metrics.get(d.column)
        if d.unit == "tokens/s" and d.summary and isinstance(value, (int, float)):
            return f"{value:,.0f}"
    return ""


def summary(run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run_dir}")
    for col in ("backend", "workload", "spec", "host class", "node", "status", "tokens/s", "peak RSS MB",
                "budget MB", "overhead s"):
        table.add_column(col)
    records = latest(read_records(run_dir, REPORT_FIELDS))
    declared = {w: workloads.metrics(w) for w in {r["workload"] for r in records}}
    for r in records:
        table.add_row(r["backend"], r["workload"], r["spec"].get("name", ""), r["host_class"], r.get("node_ip") or "-",
                      r["status"], _tokens_per_s(r.get("metrics") or {}, declared[r["workload"]]),
                      f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "",
                      f"{r['budget_mb']:.0f}" if r.get("budget_mb") else "",
                      f"{r['dispatch_s']:.2f}" if r.get("dispatch_s") is not None else "")
    console = Console(highlight=False)
    if not console.is_terminal:  # job logs and pipes: no 80-column squeeze
        console = Console(highlight=False, width=160)
    console.print(table)
    _print_headline(console, records)


def _print_headline(console, records: list[dict]) -> None:
    """The report's headline (reports/headline.py), last, where a terminal's eye lands."""
    try:
        from reports.headline import RULE, headline
    except ImportError:  # pandas: the cluster and report extras bring it
        return
    from rich.table import Table
    from rich.text import Text

    h = headline(records)
    if not h.rows:
        return
    text = h.text()
    table = Table(title="headline: time to target per host")
    for col in text.columns:
        table.add_column(Text(col))  # Text: "[95% interval]" is not rich markup
    for row in text.itertuples(index=False):
        table.add_row(*map(Text, row))
    console.print(table)
    for line in (RULE, *h.sentences):
        console.print(Text(line))
