"""The headline (docs/reports.md): on each host, which implementation reaches the quality
target fastest, at what speed and memory, and whether the run proved it computes the same
function as the reference. The report opens with it, `gptbench run` prints it, and `gptbench
report --headline-md` writes it as Markdown (docs/results/ and the README hold it verbatim).

One row per (host, backend, device, spec, dtype) of the run's train cells; several cells of a
row (seeds, repeats) are pooled: medians of their times, tokens/s and MFU, the largest peak.

The ranking rule: a row is **ranked** only when a conformance cell or a gate of the same
backend, device and dtype passed on that host in this run, and none failed. Ranked rows of a
(host, spec) are ordered by time to target; where no ranked row reached the target, by
training tokens/s. Everything else is shown, unranked, with the reason.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pandas as pd

from reports.load import host_label, impl_label, worst_status

RULE = ("Ranked within each host and spec by time to target (by training tokens/s where no ranked row reached "
        "it), and only where a conformance cell or gate of the same backend, device and dtype passed on that host "
        "in this run; the rest is shown unranked.")
# the raw table (rows); TEXT_COLUMNS is what a person reads (text())
COLUMNS = ["host", "backend", "label", "device", "spec", "dtype", "options", "cells", "status", "conformance",
           "conformance_detail", "target_val_loss", "target_reached", "time_to_target_s", "steps_to_target",
           "steps_trained", "best_val_loss", "compile_s", "tokens_per_s", "tokens_per_s_q1", "tokens_per_s_q3", "mfu",
           "peak_mb", "budget_mb", "memory", "ranked", "rank", "rank_by", "unranked_because"]
TEXT_COLUMNS = ["host", "backend", "spec", "dtype", "conformance", "target", "time to target",
                "tokens/s (median [q1-q3])", "MFU", "peak / budget", "rank"]


@dataclass
class Headline:
    rows: list[dict]  # COLUMNS (None where unknown), sorted by host, spec, rank
    sentences: list[str]  # one per host: its winner and the ratio to the NumPy reference

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def text(self) -> pd.DataFrame:
        """The table as a person reads it: TEXT_COLUMNS, every cell a string."""
        return pd.DataFrame([_text_row(r) for r in self.rows], columns=TEXT_COLUMNS)

    def markdown(self) -> str:
        t = self.text()
        esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(t.columns) + " |", "|" + " --- |" * len(t.columns)]
        lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in t.itertuples(index=False)]
        return "\n".join(lines) + "\n\n" + RULE + "\n\n" + " ".join(self.sentences) + "\n"


# --- conformance --------------------------------------------------------------------------------
def _key(r: dict) -> tuple:
    return host_label(r), r.get("backend"), r.get("device"), r.get("dtype")


def conformance(records: list[dict]) -> dict[tuple, tuple[str, str]]:
    """(host, backend, device, dtype) -> (pass | fail | another status, detail): every conformance
    cell and every gate (a gate's card is the train cell's `gate`). A failure anywhere wins,
    then a pass; a conformance cell that ended otherwise (crash, timeout) proved nothing."""
    seen: dict[tuple, list[tuple[str, str]]] = {}
    for r in records:
        if r.get("workload") == "conformance":
            card = r.get("metrics") or {}
            status = r.get("status") or "crash"
            if status == "ok" and card.get("ok", True):
                seen.setdefault(_key(r), []).append(("pass", ""))
            elif status == "nonconformant" or card.get("ok") is False:
                seen.setdefault(_key(r), []).append(("fail", card.get("first_failure") or r.get("reason") or ""))
            else:
                seen.setdefault(_key(r), []).append((status, r.get("reason") or ""))
        gate = r.get("gate")
        if isinstance(gate, dict) and "ok" in gate:
            seen.setdefault(_key(r), []).append(("pass", "gate") if gate["ok"] else
                                                ("fail", gate.get("first_failure") or "gate"))
    out = {}
    for key, results in seen.items():
        out[key] = next((x for x in results if x[0] == "fail"), None) or \
            next((x for x in results if x[0] == "pass"), None) or results[0]
    return out


# --- one row per (host, backend, device, spec, dtype) -------------------------------------------
def _numbers(values) -> list[float]:
    """The finite numbers among values (a record writes NaN as the string "nan")."""
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]


def _median(values):
    values = _numbers(values)
    return statistics.median(values) if values else None


def _compile_in_steps(m: dict):
    """torch.compile's seconds inside the step times that time to target sums: the training
    graphs' (compile_s_by_graph "train ..."), not the evaluation's "loss ..." graphs, whose
    time is evaluation time; a record without the breakdown gives its compile_s."""
    by_graph = m.get("compile_s_by_graph")
    if isinstance(by_graph, dict) and by_graph:
        return sum(_numbers(v for k, v in by_graph.items() if str(k).startswith("train ")))
    return m.get("compile_s")


def _reached(m: dict) -> bool:
    """Whether a cell's metrics reached its target (a record older than `target_reached` says it
    by a step to target)."""
    return bool(m.get("target_reached", m.get("steps_to_target") is not None))


def _row(key: tuple, cells: list[dict], proof: tuple[str, str] | None) -> dict:
    host, backend, device, spec, dtype = key
    ok = [r for r in cells if r.get("status") == "ok"]
    metrics = [r.get("metrics") or {} for r in ok]
    every = [r.get("metrics") or {} for r in cells]  # a diverged cell has metrics too
    with_target = [m for m in every if m.get("target_val_loss") is not None]
    # reached only when every ok cell of the row reached it: one lucky seed does not count
    reached = bool(metrics) and all(_reached(m) for m in metrics)
    gpu = device not in (None, "cpu")
    peaks = [r.get("gpu_peak_allocated_mb" if gpu else "peak_rss_mb") for r in cells]
    status, detail = proof or ("none", "")
    return {
        "host": host, "backend": backend, "label": next((impl_label(r) for r in ok), impl_label(cells[0])),
        "device": device, "spec": spec, "dtype": dtype, "cells": len(cells),
        "status": worst_status(r.get("status") for r in cells),
        "conformance": status, "conformance_detail": detail,
        "target_val_loss": with_target[0]["target_val_loss"] if with_target else None,
        "target_reached": reached if with_target else None,
        "time_to_target_s": _median(m.get("time_to_target_s") for m in metrics) if reached else None,
        "steps_to_target": _median(m.get("steps_to_target") for m in metrics) if reached else None,
        "steps_trained": max(_numbers(m.get("steps_trained", len(m.get("losses") or [])) for m in every),
                             default=None),
        "best_val_loss": min(_numbers(m.get("best_val_loss") for m in every), default=None),
        "compile_s": _median(_compile_in_steps(m) for m in metrics),
        **{k: _median(m.get(k) for m in metrics) for k in ("tokens_per_s", "tokens_per_s_q1", "tokens_per_s_q3",
                                                           "mfu")},
        "peak_mb": max(_numbers(peaks), default=None),
        "budget_mb": next((b for r in cells if (b := r.get("gpu_budget_mb" if gpu else "budget_mb")) is not None),
                          None),
        "memory": "GPU" if gpu else "RAM",
        "ranked": False, "rank": None, "rank_by": None, "unranked_because": None,
    }


def _why_unranked(row: dict) -> str | None:
    if row["status"] != "ok":
        return f"status {row['status']}"
    if row["conformance"] == "pass":
        return None
    if row["conformance"] == "fail":
        return "conformance failed"
    if row["conformance"] == "none":
        return "no conformance cell in this run"
    return f"conformance cell {row['conformance']}"


def _rank(rows: list[dict]) -> None:
    """Rank the rows of one (host, spec) in place."""
    for r in rows:
        r["unranked_because"] = _why_unranked(r)
    eligible = [r for r in rows if r["unranked_because"] is None]
    reached = sorted((r for r in eligible if r["target_reached"]), key=lambda r: r["time_to_target_s"])
    if reached:
        order, by = reached, "time to target"
        for r in eligible:
            if not r["target_reached"]:
                r["unranked_because"] = "target not reached"
    else:
        order = sorted((r for r in eligible if r["tokens_per_s"] is not None), key=lambda r: -r["tokens_per_s"])
        by = "tokens/s"
    for i, r in enumerate(order, 1):
        r.update(ranked=True, rank=i, rank_by=by)


def _options(r: dict) -> str:
    """The cell's options that make it another experiment (a repeat or a gate does not)."""
    opts = {k: v for k, v in (r.get("options") or {}).items() if k not in ("repeat", "gate")}
    return ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))


def headline(records: list[dict]) -> Headline:
    """The headline of a run's records (any order, any statuses)."""
    proofs = conformance(records)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("workload") == "train":
            spec = r.get("spec") or {}
            key = (host_label(r), r.get("backend"), r.get("device"), spec.get("name", "?"), r.get("dtype"), _options(r))
            groups.setdefault(key, []).append(r)
    rows = [_row(key[:5], cells, proofs.get((key[0], key[1], key[2], key[4]))) for key, cells in groups.items()]
    # rows that differ only by their options name the options
    variants: dict[tuple, int] = {}
    for key in groups:
        variants[key[:5]] = variants.get(key[:5], 0) + 1
    for row, key in zip(rows, groups):
        row["options"] = key[5] if variants[key[:5]] > 1 else ""
    by_task: dict[tuple, list[dict]] = {}
    for r in rows:
        by_task.setdefault((r["host"], r["spec"]), []).append(r)
    for task in by_task.values():
        _rank(task)
    rows.sort(key=lambda r: (r["host"], r["spec"], r["rank"] is None, r["rank"] or 0, r["label"], r["dtype"],
                             r["options"]))
    sentences = [_sentence(host, [(spec, t) for (h, spec), t in sorted(by_task.items()) if h == host])
                 for host in sorted({h for h, _ in by_task})]
    return Headline(rows, sentences)


# --- what a person reads -------------------------------------------------------------------------
def _name(r: dict) -> str:
    return f"{r['label']} {r['dtype']}" + ("" if r["device"] in (None, "cpu") else f" on {r['device']}") + \
        (f" ({r['options']})" if r["options"] else "")


def _reference(rows: list[dict], like: dict) -> dict | None:
    """The NumPy reference's row of a (host, spec): the winner's dtype, else float32, else any."""
    numpy = [r for r in rows if r["backend"] == "numpy" and r["device"] in (None, "cpu")]
    return next((r for r in numpy if r["dtype"] == like["dtype"]), None) or \
        next((r for r in numpy if r["dtype"] == "float32"), None) or (numpy[0] if numpy else None)


def _clause(spec: str, rows: list[dict]) -> str:
    first = next((r for r in rows if r["rank"] == 1), None)
    if first is None:
        return f"nothing on {spec} is ranked (no row ended ok with a passing conformance cell in this run)"
    ref = _reference(rows, first)
    if first["rank_by"] == "time to target":
        text = (f"{_name(first)} reaches {spec}'s target ({first['target_val_loss']:.4g}) first, in "
                f"{first['time_to_target_s']:.3g} s")
        if ref is first:
            return text + ", and is the NumPy reference itself"
        if ref is None:
            return text + f"; no NumPy reference trained {spec} on this host"
        if ref["time_to_target_s"] is None:
            return text + f"; the NumPy reference ({_name(ref)}) " + (
                f"ended {ref['status']}" if ref["status"] != "ok" else
                f"did not reach it in {ref['steps_trained']} steps")
        return text + (f", {ref['time_to_target_s'] / first['time_to_target_s']:.2g}x the NumPy reference's speed "
                       f"({_name(ref)}: {ref['time_to_target_s']:.3g} s)")
    text = (f"no ranked row reached {spec}'s target, so by training tokens/s {_name(first)} is fastest at "
            f"{first['tokens_per_s']:,.0f}")
    if ref is first:
        return text + ", and is the NumPy reference itself"
    if ref is None or ref["tokens_per_s"] is None:
        return text + f"; no NumPy reference has tokens/s for {spec} on this host"
    return text + f", {first['tokens_per_s'] / ref['tokens_per_s']:.2g}x the NumPy reference's {ref['tokens_per_s']:,.0f}"


def _sentence(host: str, tasks: list[tuple[str, list[dict]]]) -> str:
    return f"On {host}: " + "; ".join(_clause(spec, rows) for spec, rows in tasks) + "."


def _text_row(r: dict) -> list[str]:
    def num(v, fmt):
        return "" if v is None or v != v else format(v, fmt)

    if r["status"] != "ok" and r["target_reached"] is None and r["tokens_per_s"] is None:
        time = r["status"]
    elif r["target_val_loss"] is None:
        time = "no target"
    elif r["target_reached"]:
        time = f"{r['time_to_target_s']:.3g} s (step {r['steps_to_target']:.0f})"
        if r["compile_s"] is not None:
            time += f", compile {r['compile_s']:.3g} s of it"
    else:
        time = f"not reached in {r['steps_trained']} steps" + (
            f" (best {r['best_val_loss']:.3f})" if r["best_val_loss"] is not None else "")
        if r["status"] != "ok":
            time = f"{r['status']}: {time}"
    if r["cells"] > 1:
        time += f" [{r['cells']} cells]"
    tps = num(r["tokens_per_s"], ",.0f")
    if tps and r["tokens_per_s_q1"] is not None:
        tps += f" [{r['tokens_per_s_q1']:,.0f}-{r['tokens_per_s_q3']:,.0f}]"
    memory = ""
    if r["peak_mb"] is not None:
        memory = ("GPU " if r["memory"] == "GPU" else "") + f"{r['peak_mb']:,.0f}"
        memory += f" / {r['budget_mb']:,.0f} MB" if r["budget_mb"] else " MB (no budget)"
    proof = {"pass": "pass", "none": "none in this run"}.get(r["conformance"], r["conformance"])
    if r["conformance"] == "fail":
        proof = "FAIL" + (f": {r['conformance_detail']}" if r["conformance_detail"] else "")
    rank = str(r["rank"]) + (" (by tokens/s)" if r["rank_by"] == "tokens/s" else "") if r["ranked"] else \
        f"unranked: {r['unranked_because']}"
    backend = r["label"] + ("" if r["device"] in (None, "cpu") else f" ({r['device']})") + \
        (f" [{r['options']}]" if r["options"] else "")
    return [r["host"], backend, r["spec"],
            r["dtype"], proof, num(r["target_val_loss"], ".4g"), time, tps,
            num(None if r["mfu"] is None else 100 * r["mfu"], ".2g") + ("%" if r["mfu"] is not None else ""),
            memory, rank]
