"""Frames from a run directory's records (docs/records.md): one job, turning nested
records into the flat pandas tables that the figures, the compare view and the exports use.

A record of any status yields a row in `cells`, with the scalar metrics its workload declares
(workloads.<name>.METRICS) as columns; metrics a record does not have (a crashed cell has
none) are NaN, never an error. Non-finite numbers arrive as the strings "nan"/"inf"
(JSON has neither) and become floats here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import workloads
from reports import fmt
from reports.rundir import REPORT_FIELDS, latest, read_hosts, read_records, read_run_info

# worst first: a grid square holding several cells takes the colour of its worst status
STATUS_ORDER = ("crash", "oom", "timeout", "diverged", "nonconformant", "no_host", "unavailable", "ok")
STATUS_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}  # an unknown status ranks with crash, the worst


def worst_status(statuses) -> str:
    """The worst of statuses by STATUS_ORDER (a missing one counts as crash)."""
    return min((s or "crash" for s in statuses), key=lambda s: STATUS_RANK.get(s, 0))
NO_HOST = "(no host)"

RECORD_SCALARS = ("peak_rss_mb", "peak_rss_sampled_mb", "memory_estimate_mb", "budget_mb",
                  "gpu_peak_allocated_mb", "gpu_peak_reserved_mb", "gpu_memory_estimate_mb", "gpu_budget_mb",
                  "wall_s", "memory_ratio")


def num(x) -> float:
    """A record number as float: None -> nan, 'nan'/'inf' strings -> floats."""
    if x is None:
        return np.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return np.nan


def host_label(r: dict) -> str:
    """What a person calls the machine: the dispatcher's host class when it set one, else the
    host name; a `no_host` cell ran nowhere."""
    if r.get("host_class") not in (None, "", "any"):
        return r["host_class"]
    host = r.get("host") or {}
    return host.get("hostname") or (r.get("host_fingerprint") or "")[:8] or NO_HOST


def impl_label(r: dict) -> str:
    """The implementation's own name (record field `implementation`), else the backend as the
    cell named it (a record of a cell that never ran has no implementation)."""
    return (r.get("implementation") or {}).get("name") or r.get("backend") or "?"


def cell_label(r: dict) -> str:
    """A trace name: the backend, and whatever else distinguishes cells sharing a figure."""
    parts = [impl_label(r), r.get("dtype", "float32")]
    if r.get("device", "cpu") != "cpu":
        parts.append(r["device"])
    if r.get("seed"):
        parts.append(f"seed {r['seed']}")
    return " ".join(parts)


def cell_key(r: dict) -> str:
    """The cell's identity without the code version: what a rerun of other code shares."""
    ident = {k: r.get(k) for k in ("backend", "workload", "spec", "dtype", "device", "host_class", "seed",
                                   "options")}
    return json.dumps(ident, sort_keys=True)


def group_key(r: dict) -> str:
    """The cell's identity without its repeat index: the repeats of one experiment share it."""
    opts = {k: v for k, v in (r.get("options") or {}).items() if k != "repeat"}
    return cell_key({**r, "options": opts})


def _spec_name(r: dict) -> str:
    spec = r.get("spec")
    return spec.get("name", "?") if isinstance(spec, dict) else str(spec)


def _quartiles(samples) -> tuple[float, float, float]:
    xs = np.array([num(s) for s in samples or []], dtype=float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return np.nan, np.nan, np.nan
    q1, med, q3 = np.percentile(xs, [25, 50, 75])
    return float(q1), float(med), float(q3)


def _metric_columns(metric: workloads.Metric, m: dict) -> dict:
    """The cells table's columns of one declared metric: its value and, for a median, its
    quartiles (kept in the record, or computed here from the samples)."""
    cols = {metric.column: num(m.get(metric.column))}
    if metric.quartiles:
        cols.update({k: num(m.get(k)) for k in metric.quartiles})
    elif metric.samples:
        q1, _, q3 = _quartiles(metric.samples(m))
        cols.update(zip(metric.spread, (q1, q3)))
    return cols


def cells_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record: identity, status, reason, memory and the workload's scalar metrics."""
    declared = {w: workloads.metrics(w) for w in {r.get("workload") for r in records}}
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        row = {"cell_id": r.get("cell_id"), "key": cell_key(r), "group": group_key(r),
               "repeat": (r.get("options") or {}).get("repeat"), "contended": r.get("contended"),
               "host": host_label(r),
               "host_fingerprint": r.get("host_fingerprint"), "backend": r.get("backend"),
               "workload": r.get("workload"), "spec": _spec_name(r), "dtype": r.get("dtype"),
               "device": r.get("device"), "seed": r.get("seed"), "impl": impl_label(r), "label": cell_label(r),
               "options": json.dumps(r.get("options") or {}, sort_keys=True),
               "status": r.get("status") or "crash", "reason": r.get("reason"), "traceback": r.get("traceback"),
               "code_version": r.get("code_version")}
        row.update({k: num(r.get(k)) for k in RECORD_SCALARS})
        for metric in declared[r.get("workload")]:
            row.update(_metric_columns(metric, m))
        rows.append(row)
    # the columns every section reads exist even in a run with no record yet
    base = ["cell_id", "key", "group", "repeat", "contended", "host", "backend", "workload", "spec", "dtype", "device", "seed", "impl", "label", "status",
            "reason", "traceback", "code_version", *RECORD_SCALARS]
    df = pd.DataFrame(rows)
    return df.reindex(columns=list(df.columns) + [c for c in base if c not in df.columns])


def loss_frame(records: list[dict]) -> pd.DataFrame:
    """Long table of train and validation losses: one row per (cell, kind, step), with
    `seconds`, the training seconds before that loss was known: the step times summed up to
    it (a train loss: through its own step; an evaluation after step s: the first s steps),
    evaluation time excluded, as time_to_target_s counts them (workloads/train.py). NaN when
    the record has no step times."""
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        if r.get("workload") != "train" or not m.get("losses"):
            continue
        status = "" if r.get("status") == "ok" else f" ({r.get('status')})"
        # series: what shares a colour in the loss figures (seeds and repeats of one implementation)
        series = " ".join([impl_label(r), r.get("dtype", "float32")] + ([r["device"]] if r.get("device", "cpu") != "cpu"
                                                                         else []))
        base = {"cell_id": r["cell_id"], "host": host_label(r), "spec": _spec_name(r), "label": cell_label(r) + status,
                "series": series + status, "target": num(m.get("target_val_loss"))}
        step_ms = [num(t) for t in m.get("step_ms") or []]
        # elapsed[s]: seconds of the first s steps
        elapsed = np.concatenate([[0.0], np.cumsum(step_ms) / 1e3]) if step_ms else None

        def at(s):
            return float(elapsed[s]) if elapsed is not None and s < len(elapsed) else np.nan

        rows += [{**base, "kind": "train", "step": i, "loss": num(v), "seconds": at(i + 1)}
                 for i, v in enumerate(m["losses"])]
        rows += [{**base, "kind": "val", "step": int(s), "loss": num(v), "seconds": at(int(s))}
                 for s, v in m.get("val_losses") or []]
    return pd.DataFrame(rows, columns=["cell_id", "host", "spec", "label", "series", "target", "kind", "step", "loss",
                                       "seconds"])


def attention_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (attention cell, T, D, pass)."""
    rows = []
    for r in records:
        if r.get("workload") != "attention":
            continue
        for row in (r.get("metrics") or {}).get("rows", []):
            rows.append({"cell_id": r["cell_id"], "key": cell_key(r), "group": group_key(r), "host": host_label(r),
                         "dtype": r.get("dtype"), "device": r.get("device"), "contended": r.get("contended"), **row})
    return pd.DataFrame(rows)


def frontier_frame(records: list[dict]) -> pd.DataFrame:
    """One row per probe of every frontier cell (workloads/frontier.py), with the cell's
    max_batch; a cell that ended without a frontier keeps its probes."""
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        if r.get("workload") != "frontier":
            continue
        base = {"cell_id": r["cell_id"], "host": host_label(r), "spec": _spec_name(r), "label": cell_label(r),
                "cell_status": r.get("status"), "max_batch": num(m.get("max_batch"))}
        rows += [{**base, **{k: p.get(k) for k in ("batch_size", "status", "peak_mb", "estimate_mb", "budget_mb")}}
                 for p in m.get("probes") or []]
    return pd.DataFrame(rows, columns=["cell_id", "host", "spec", "label", "cell_status", "max_batch", "batch_size",
                                       "status", "peak_mb", "estimate_mb", "budget_mb"])


def conformance_cards(records: list[dict]) -> list[dict]:
    """The report cards (workloads/conformance/ladder.py): conformance cells, and gates run before
    another workload. Each: {cell_id, host, status, card}."""
    cards = []
    for r in records:
        card = (r.get("metrics") or {}) if r.get("workload") == "conformance" else r.get("gate")
        if isinstance(card, dict) and "rows" in card:
            cards.append({"cell_id": r["cell_id"], "host": host_label(r), "status": r.get("status"),
                          "workload": r.get("workload"), "card": card})
    return cards


def samples_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        m = r.get("metrics") or {}
        if r.get("workload") == "generate" and "sample_text" in m:
            rows.append({"host": host_label(r), "backend": r["backend"], "spec": _spec_name(r), "dtype": r.get("dtype"),
                         "prompt_text": m.get("prompt_text"), "sample_text": m["sample_text"],
                         "time_to_first_token_ms": num(m.get("time_to_first_token_ms")),
                         "token_ms_median": num(m.get("token_ms_median"))})
    return pd.DataFrame(rows)


def hosts_table(records: list[dict], hosts: dict[str, dict]) -> pd.DataFrame:
    """One column per host: its captured environment (hosts/ first, else the records'), the
    frameworks its cells imported with their versions (frameworks_used) and the calibrated
    peaks its cells were measured against."""
    envs, peaks = {}, {}
    frameworks = frameworks_used(records)
    for r in records:
        fp = r.get("host_fingerprint")
        if not fp:
            continue
        envs.setdefault(fp, dict(hosts.get(fp) or r.get("host") or {}))
        envs[fp].setdefault("_label", host_label(r))
        peak = num((r.get("metrics") or {}).get("peak_flops_per_s"))
        if np.isfinite(peak):
            peaks.setdefault(fp, {})[f"{r.get('device', 'cpu')} {r.get('dtype')}"] = peak
    for fp, env in hosts.items():  # a host with no record (e.g. only used by a failed dispatch)
        envs.setdefault(fp, {**env, "_label": env.get("hostname", fp[:8])})
    cols = {}
    for fp, env in envs.items():
        libs = env.get("libraries") or {}
        used = frameworks.get(fp, {})
        cols[f"{env['_label']} ({fp[:8]})"] = {
            "fingerprint": fp, "host name": env.get("hostname"), "CPU": env.get("cpu_model"),
            "cores (logical/physical)": f"{env.get('cores_logical')}/{env.get('cores_physical')}",
            "RAM (MB)": fmt.count(env.get("ram_mb")),
            "GPUs": ", ".join(f"{g.get('name')} {fmt.count(g.get('memory_mb'))} MB (driver {g.get('driver')})"
                              for g in env.get("gpus") or []) or "none",
            "platform": env.get("platform"), "Python": env.get("python"),
            "frameworks its cells imported": ", ".join(
                f"{k} {used[k] or libs.get(k) or '(version not recorded)'}" for k in sorted(used)) or "none recorded",
            "other libraries installed": ", ".join(f"{k} {v}" for k, v in libs.items() if v and k not in used),
            "code version": env.get("code_version"),
            "calibrated peak (GFLOP/s)": ", ".join(f"{k} {fmt.rate(v / 1e9)}" for k, v in sorted(peaks.get(fp, {}).items()))
            or "not measured",
        }
    return pd.DataFrame(cols)


def frameworks_used(records: list[dict]) -> dict[str, dict[str, str | None]]:
    """host fingerprint -> {framework: version} of what its cells imported: each record's
    `implementation.versions` (what the backend reports, e.g. a plugin's tensorflow) and its
    `heavy_modules` (what the child had imported, versions from the former where it has them,
    else None). Whatever a cell of the run imported, whichever backend it was."""
    out: dict[str, dict[str, str | None]] = {}
    for r in records:
        fp = r.get("host_fingerprint")
        if not fp:
            continue
        seen = out.setdefault(fp, {})
        versions = (r.get("implementation") or {}).get("versions") or {}
        for name, version in versions.items() if isinstance(versions, dict) else ():
            if name != "error" and version:
                seen[name] = str(version)
        for name in r.get("heavy_modules") or []:
            seen.setdefault(name, None)
    return out


@dataclass
class Run:
    """Everything the report needs from one run directory."""
    path: Path
    info: dict
    records: list[dict]
    cells: pd.DataFrame
    losses: pd.DataFrame
    attention: pd.DataFrame
    samples: pd.DataFrame
    hosts: pd.DataFrame
    cards: list[dict] = field(default_factory=list)


def load_run(run_dir) -> Run:
    path = Path(run_dir)
    records = latest(read_records(path, REPORT_FIELDS))  # a cell run again by --resume: its last record
    info = read_run_info(path)
    return Run(path=path, info=info, records=records, cells=cells_frame(records), losses=loss_frame(records),
               attention=attention_frame(records), samples=samples_frame(records),
               hosts=hosts_table(records, read_hosts(path)), cards=conformance_cards(records))
