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
from gptspec.limits import quote

CELLS = "cells.jsonl"
HOSTS = "hosts"
RUN = "run.json"
MATRIX = "matrix.yaml"
LOCK = ".lock"


# every record field's JSON type (suite/record.py's Record; tests/test_limits.py holds them
# equal), each also null; a reader meets a damaged line as an error naming it, not a traceback
_FIELDS_OF = {
    int: "schema_version seed threads exit_code worker_pid attempts",
    str: "cell_id backend workload dtype device host_class code_version status reason traceback started ended "
         "host_fingerprint calibration_error signal stderr_tail node_id node_ip worker_code_version compile_cache "
         "compile_cache_state no_host_cause limit_enforced_by",
    dict: "spec options metrics implementation threads_seen memory_estimate gpu host gate node_labels machine",
    bool: "contended",
    float: "budget_mb gpu_budget_mb timeout_s peak_rss_mb peak_rss_sampled_mb ru_maxrss_mb rss_after_setup_mb "
           "memory_estimate_mb gpu_memory_estimate_mb memory_ratio gpu_peak_allocated_mb gpu_peak_reserved_mb wall_s "
           "setup_s workload_s roundtrip_s dispatch_s ray_overhead_s",
    list: "heavy_modules",
}
FIELD_TYPES = {name: t for t, names in _FIELDS_OF.items() for name in names.split()}
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object", float: "a number", list: "a list",
               bool: "true or false"}
# what `gptbench run --resume` needs of every record (its cell_id); what the report, the
# summary, the exports and --compare need besides (the cell's identity and how it ended)
RESUME_FIELDS = ("cell_id",)
REPORT_FIELDS = ("cell_id", "backend", "workload", "spec", "host_class", "status")


def read_records(run_dir, require: tuple[str, ...] = RESUME_FIELDS) -> list[dict]:
    """Every complete record of a run, in the order written. A last line cut short by a
    crash mid-write is skipped (it has no newline yet); any other bad line is an error naming
    the file, the line and the field: not JSON, not an object, a `require`d field missing or
    null, a field of the wrong type."""
    path = Path(run_dir) / CELLS
    if not path.is_file():
        raise GptbenchError(f"{run_dir} is not a gptbench run directory: {path} does not exist.")
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # a torn final write
            if line.strip():
                records.append(_record(line, path, n, require))
    return records


def _record(line: str, path: Path, n: int, require: tuple[str, ...]) -> dict:
    fix = ("Repair or remove that line (a line removed is a cell that `gptbench run --resume` runs again), "
           "or restore the file.")
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        raise GptbenchError(f"{path} line {n} is not a JSON record ({quote(str(e))}). {fix}") from None
    if not isinstance(record, dict):
        raise GptbenchError(f"{path} line {n} is {quote(record, 80)}, not a record (a JSON object). {fix}")
    missing = [k for k in require if record.get(k) is None]
    if missing:
        raise GptbenchError(f"{path} line {n}: the record has no {', '.join(missing)} (every record has "
                            f"{', '.join(require)}: docs/records.md). {fix}")
    for k, v in record.items():
        t = FIELD_TYPES.get(k)
        if t is None or v is None or isinstance(v, t) and (t is bool or not isinstance(v, bool)) or \
                t is float and isinstance(v, int) and not isinstance(v, bool):
            continue
        raise GptbenchError(f"{path} line {n}: field {k!r} is {quote(v, 80)}, not {_TYPE_NAMES[t]} "
                            f"(docs/records.md). {fix}")
    return record


def read_run_info(run_dir) -> dict:
    """run.json as a dict ({} when the folder has none); an error naming the file when it is
    not a JSON object."""
    path = Path(run_dir) / RUN
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise GptbenchError(f"{path} is not JSON ({quote(str(e))}): the run's description is damaged; restore it "
                            "(docs/run-dir.md lists its fields).") from None
    if not isinstance(info, dict):
        raise GptbenchError(f"{path} is {quote(info, 80)}, not a JSON object (docs/run-dir.md lists its fields).")
    return info


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
        try:
            env = json.loads(p.read_text(encoding="utf-8", errors="replace"))
        except (json.JSONDecodeError, RecursionError) as e:
            raise GptbenchError(f"{p} is not JSON ({quote(str(e))}): a host's captured environment is damaged; "
                                "remove it (each record holds its host too, and the next run writes it again).") \
                from None
        fingerprint = env.get("fingerprint") if isinstance(env, dict) else None
        hosts[fingerprint if isinstance(fingerprint, str) else p.stem] = env
    return hosts


def records_dataframe(run_dir):
    """The records as a pandas DataFrame, one row per cell (its last record), nested dicts kept
    as objects."""
    import pandas as pd

    return pd.DataFrame(latest(read_records(run_dir)))
