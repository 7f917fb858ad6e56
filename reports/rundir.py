"""A run directory's layout and its read side (docs/run-dir.md).

    RUN_DIR/
      run.json        what was run: matrix as given, code version, start time, driver host
      matrix.yaml     the matrix file as given (when one was given)
      hosts/          one JSON per host fingerprint: the environment of every host used
      cells.jsonl     one record per line (docs/records.md), appended and fsynced per record

Readers never need Ray; the one writer is suite/store.py (RunStore), held by the driver.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from gptspec.errors import GptbenchError

CELLS = "cells.jsonl"
HOSTS = "hosts"
RUN = "run.json"
MATRIX = "matrix.yaml"
LOCK = ".lock"


def read_records(run_dir) -> list[dict]:
    """Every complete record of a run, in the order written. A last line cut short by a
    crash mid-write is skipped (it has no newline yet); any other bad line is an error."""
    path = Path(run_dir) / CELLS
    if not path.is_file():
        raise GptbenchError(f"{run_dir} is not a gptbench run directory: {path} does not exist.")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # a torn final write
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise GptbenchError(f"{path} line {n} is not a JSON record ({e}).") from None
    return records


def latest(records: list[dict]) -> list[dict]:
    """One record per cell, in the order written: the last of its cell_id's (a cell that
    `--resume` runs again, a `no_host` after a lost node, has its new record appended)."""
    last = {r.get("cell_id"): i for i, r in enumerate(records)}
    return [r for i, r in enumerate(records) if r.get("cell_id") is None or last[r["cell_id"]] == i]


def host_path(run_dir, fingerprint: str) -> Path:
    """hosts/<fingerprint>.json. A fingerprint comes from a worker host (suite/env.py: 16 hex
    digits); one that is not a plain name (`../../x`, a slash, a dot first) is never a path:
    it is filed under its hash, and read_hosts keys the file by the fingerprint inside."""
    name = fingerprint if _PLAIN.fullmatch(fingerprint) else "x" + hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return Path(run_dir) / HOSTS / f"{name}.json"


_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def read_hosts(run_dir) -> dict[str, dict]:
    """host fingerprint -> captured environment."""
    folder = Path(run_dir) / HOSTS
    hosts = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        env = json.loads(p.read_text())
        fingerprint = env.get("fingerprint") if isinstance(env, dict) else None
        hosts[fingerprint if isinstance(fingerprint, str) else p.stem] = env
    return hosts


def records_dataframe(run_dir):
    """The records as a pandas DataFrame, one row per cell (its last record), nested dicts kept
    as objects."""
    import pandas as pd

    return pd.DataFrame(latest(read_records(run_dir)))
