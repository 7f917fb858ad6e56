"""The records as typed tables, written as CSV or Parquet (docs/reports.md, Export).

The wide table: one row per record, led by `run_id` and `code_version` (the commit the run
measured), so the exports of several runs concatenate and stay apart. Nested fields are
dotted columns (`metrics.tokens_per_s`, `host.cpu_model`); a nested copy of a top-level
field holding the same values (`metrics.spec.*` of `spec.*`, `metrics.seed` of `seed`,
`host.code_version`) is left out. Lists (loss curves, step times, attention rows) and
objects whose keys are data rather than field names (`metrics.compile_s_by_graph`, keyed by
graph and shape) are JSON text. Types are the values' own: booleans are booleans, whole
numbers nullable integers, `"nan"`/`"inf"` (JSON has neither) floats, `started`/`ended`
UTC timestamps, and a value a record lacks is a null -- never the text "NaN".

The long table: one row per training step of every record with a loss curve.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from gptspec.errors import GptbenchError
from gptspec.files import atomic_path
from reports.rundir import REPORT_FIELDS, latest, read_records, read_run_info

# a dict whose keys all look like this is a record's fields (flattened into columns); any
# other key ("train (32, 16)") makes it data, kept whole as JSON text
_FIELD_NAME = re.compile(r"^[A-Za-z_][\w./-]*$")
# where a nested copy of a top-level field can sit: metrics.spec.* (conformance), metrics.seed,
# metrics.config.seed (train), host.code_version
_COPY_PREFIXES = ("metrics.", "metrics.config.", "metrics.settings.", "host.")
_ALIASES = {"host.fingerprint": "host_fingerprint"}
_TIMES = ("started", "ended")
LEAD = ["run_id", "code_version", "cell_id"]
LONG_COLUMNS = ["run_id", "cell_id", "step", "train_loss", "val_loss", "seconds"]


def run_id(run_info: dict) -> str:
    """A run's id, the same on every export of it: the driver host and the UTC start time."""
    started = pd.Timestamp(run_info["started"]).tz_convert("UTC").strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{run_info.get('driver_host', 'unknown')}-{started}Z"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fields_only(value):
    """A record with data-keyed objects turned into JSON text, so json_normalize leaves them whole."""
    if isinstance(value, dict):
        if value and not all(isinstance(k, str) and _FIELD_NAME.match(k) for k in value):
            return json.dumps(value)
        return {k: _fields_only(v) for k, v in value.items()}
    return value


def records_table(records: list[dict], run_id_value: str | None = None) -> pd.DataFrame:
    df = pd.json_normalize([_fields_only(r) for r in records], sep=".")
    for col in df.columns:
        df[col] = _typed(col, df[col])
    df = df.drop(columns=[c for c in df.columns if _is_copy(df, c)])
    df.insert(0, "run_id", pd.Series([run_id_value] * len(df), dtype="string"))
    return df[[c for c in LEAD if c in df.columns] + [c for c in df.columns if c not in LEAD]]


def _typed(col: str, values: pd.Series) -> pd.Series:
    nonnull = values[~values.map(_missing)]
    if nonnull.map(lambda v: isinstance(v, (list, dict))).any():
        return values.map(lambda v: None if _missing(v) else json.dumps(v)).astype("string")
    if col in _TIMES:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    if nonnull.empty:
        return values.map(lambda _: None).astype("string") if values.dtype == object else values
    if nonnull.map(lambda v: isinstance(v, bool)).all():
        return values.map(lambda v: None if _missing(v) else bool(v)).astype("boolean")
    if nonnull.map(lambda v: isinstance(v, int) and not isinstance(v, bool)).all():
        return values.map(lambda v: None if _missing(v) else int(v)).astype("Int64")
    if nonnull.map(lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool))
                   or v in ("nan", "inf", "-inf")).all():
        return pd.to_numeric(values.map(lambda v: None if v is None else v), errors="coerce").astype("float64")
    return values.map(lambda v: None if _missing(v) else str(v)).astype("string")


def _is_copy(df: pd.DataFrame, col: str) -> bool:
    """Whether `col` is a nested copy of another column: the same value wherever it has one."""
    bases = [_ALIASES[col]] if col in _ALIASES else [col[len(p):] for p in _COPY_PREFIXES if col.startswith(p)]
    has = df[col].notna()
    for base in bases:
        if base in df.columns and base != col:
            pairs = zip(df[col][has].tolist(), df[base][has].tolist())
            if all(not pd.isna(b) and a == b for a, b in pairs):
                return True
    return False


def steps_table(records: list[dict], run_id_value: str | None = None) -> pd.DataFrame:
    """One row per training step of each record with a loss curve. `step` counts the
    optimizer updates done: train_loss is the loss of step's batch (computed before its
    update), seconds the cumulative step time once it is done (the clock of
    time_to_target_s), val_loss the validation loss evaluated after that many updates (null
    where none was). A validation loss with no step row of its own (none) gets one."""
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        losses, step_ms = m.get("losses"), m.get("step_ms") or []
        if not isinstance(losses, list):
            continue
        val = {int(s): _float(v) for s, v in m.get("val_losses") or []}
        elapsed = 0.0
        for k in range(1, max(len(losses), max(val, default=0)) + 1):
            if k <= len(step_ms):
                elapsed += step_ms[k - 1] / 1e3
            rows.append({"run_id": run_id_value, "cell_id": r.get("cell_id"), "step": k,
                         "train_loss": _float(losses[k - 1]) if k <= len(losses) else None,
                         "val_loss": val.get(k), "seconds": elapsed if k <= len(step_ms) else None})
    df = pd.DataFrame(rows, columns=LONG_COLUMNS)
    return df.astype({"run_id": "string", "cell_id": "string", "step": "Int64", "train_loss": "float64",
                      "val_loss": "float64", "seconds": "float64"})


def _float(v) -> float | None:
    return None if v is None else float(v)  # float("nan") of a diverged loss stays NaN: a number, not missing


def export(run, csv=None, parquet=None, long_csv=None, long_parquet=None) -> list[Path]:
    """Write the run's tables to the given files; returns the paths written (none asked: the
    run is not read). run: a run directory, or its reports.load.Run already read."""
    from reports.load import Run

    wide, long = [p for p in (csv, parquet)], [p for p in (long_csv, long_parquet)]
    if not any(wide + long):
        return []
    if isinstance(run, Run):
        records, info, run_dir = run.records, run.info, run.path
    else:
        records, info, run_dir = latest(read_records(run, REPORT_FIELDS)), read_run_info(run), run
    rid = run_id(info) if info.get("started") else Path(run_dir).resolve().name
    tables = {}
    if any(wide):
        tables["wide"] = records_table(records, rid)
    if any(long):
        tables["long"] = steps_table(records, rid)
    written = []
    for path, table, fmt in ((csv, "wide", "csv"), (parquet, "wide", "parquet"),
                             (long_csv, "long", "csv"), (long_parquet, "long", "parquet")):
        if not path:
            continue
        try:  # whole or not at all, as the report
            with atomic_path(path) as tmp:
                getattr(tables[table], f"to_{fmt}")(tmp, index=False)
        except OSError as e:
            raise GptbenchError(f"cannot write {path} ({e.strerror or e}); the run's records are untouched.") from None
        written.append(Path(path))
    return written
