"""The records as one flat table, written as CSV or Parquet.

One row per record. Nested dicts are flattened into dotted columns (`metrics.tokens_per_s`,
`host.cpu_model`); lists (loss curves, step times, attention rows) are kept as JSON text,
so nothing is dropped. Numbers written as "nan"/"inf" strings (JSON has neither) become
floats, so a numeric column stays numeric in Parquet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gptspec.errors import GptbenchError
from gptspec.files import atomic_path
from reports.rundir import REPORT_FIELDS, read_records


def records_table(records: list[dict]) -> pd.DataFrame:
    df = pd.json_normalize(records, sep=".")
    for col in df.columns:
        values = df[col]
        if values.map(lambda v: isinstance(v, (list, dict))).any():
            df[col] = values.map(lambda v: None if v is None else json.dumps(v))
        elif values.dtype == object:
            df[col] = _numeric_or_text(values)
    return df


def _numeric_or_text(values: pd.Series) -> pd.Series:
    """A column of numbers, None and 'nan'/'inf' strings -> float; anything else -> text."""
    nonnull = values.dropna()
    if not nonnull.empty and nonnull.map(lambda v: isinstance(v, (int, float, bool)) or v in ("nan", "inf", "-inf")).all() \
            and not nonnull.map(lambda v: isinstance(v, bool)).all():
        return pd.to_numeric(values, errors="coerce")
    return values.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))


def export(run_dir, csv: str | Path | None = None, parquet: str | Path | None = None) -> list[Path]:
    """Write the run's records to the given files; returns the paths written (none asked: the
    run is not read)."""
    if not (csv or parquet):
        return []
    table = records_table(read_records(run_dir, REPORT_FIELDS))
    written = []
    for path, write in ((csv, table.to_csv), (parquet, table.to_parquet)):
        if not path:
            continue
        try:  # whole or not at all, as the report
            with atomic_path(path) as tmp:
                write(tmp, index=False)
        except OSError as e:
            raise GptbenchError(f"cannot write {path} ({e.strerror or e}); the run's records are untouched.") from None
        written.append(Path(path))
    return written
