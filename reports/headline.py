"""The headline (docs/reports.md): on each host, which implementation reaches the quality
target fastest, at what speed and memory, and whether the run proved it computes the same
function as the reference. The report opens with it, `gptbench run` prints it, and `gptbench
report --headline-md` writes it as Markdown (docs/results/ and the README hold it verbatim).

One row per (host, backend, device, spec, dtype, options) of the run's train cells; the cells
of a row (its repeats, seeds) are pooled: each cell gives one value of each figure, and the
row's figure is their median with a 95% interval (reports/stats.py: the percentile bootstrap
over the cells; [min, max] below 6 repeats; none with one), the largest peak.

The ranking rule: a row is **ranked** only when a conformance cell or a gate of the same
backend, device and dtype passed on that host in this run, and none failed. Ranked rows of a
(host, spec) are compared by time to target; where no ranked row reached the target, by
training tokens/s. A row's rank is 1 + the number of rows told apart from it and better
(stats.told_apart: disjoint intervals, medians more than 5% apart); rows that cannot be told
apart share a rank (`1=`) and name each other (`tied_with`); a row of one repeat has no
interval and is told apart from nothing. Everything else is shown, unranked, with the reason.
A row with a cell measured under contention (suite/machine.py) says so.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pandas as pd

from reports import fmt, stats
from reports.load import host_label, impl_label, worst_status

RULE = ("Ranked within each host and spec by time to target (by training tokens/s where no ranked row reached "
        "it), and only where a conformance cell or gate of the same backend, device and dtype passed on that host "
        "in this run; the rest is shown unranked. Figures are medians over repeats with a 95% interval (the "
        "bootstrap over repeats; [min-max] below 6 repeats); rows whose intervals overlap, or whose medians are "
        "within 5%, cannot be told apart and share a rank (1=).")
# the raw table (rows); TEXT_COLUMNS is what a person reads (text())
COLUMNS = ["host", "backend", "label", "device", "spec", "dtype", "options", "cells", "repeats", "status",
           "conformance", "conformance_detail", "target_val_loss", "target_reached", "time_to_target_s",
           "time_to_target_low", "time_to_target_high", "steps_to_target", "steps_trained", "best_val_loss",
           "compile_s", "compile_source", "tokens_per_s", "tokens_per_s_low", "tokens_per_s_high", "mfu", "mfu_low",
           "mfu_high", "peak_mb", "budget_mb", "memory", "contended", "ranked", "rank", "tied_with", "rank_by",
           "unranked_because"]
TEXT_COLUMNS = ["host", "backend", "spec", "dtype", "conformance", "target", "time to target [95% interval]",
                "tokens/s [95% interval]", "MFU", "peak / budget", "repeats", "rank"]
# the share of the time to target below which its compilation is not spelled out in the text
COMPILE_SHOWN_FROM = 0.02


@dataclass
class Headline:
    rows: list[dict]  # COLUMNS (None where unknown), sorted by host, spec, rank
    sentences: list[str]  # one per host: its winner and the ratio to the NumPy reference

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def text(self) -> pd.DataFrame:
        """The table as a person reads it: TEXT_COLUMNS, every cell a string."""
        return pd.DataFrame([_text_row(r, self.rows) for r in self.rows], columns=TEXT_COLUMNS)

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
    return stats.finite(values).tolist()


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


def _estimates(values) -> tuple:
    e = stats.estimate(values)
    return e.median, e.low, e.high


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
    ttt = _estimates(m.get("time_to_target_s") for m in metrics) if reached else (None, None, None)
    tps, mfu = _estimates(m.get("tokens_per_s") for m in metrics), _estimates(m.get("mfu") for m in metrics)
    sources = {m.get("compile_source") for m in metrics if m.get("compile_source")}
    steps = _numbers(m.get("steps_trained", len(m.get("losses") or [])) for m in every)
    return {
        "host": host, "backend": backend, "label": next((impl_label(r) for r in ok), impl_label(cells[0])),
        "device": device, "spec": spec, "dtype": dtype, "cells": len(cells), "repeats": len(metrics),
        "status": worst_status(r.get("status") for r in cells),
        "conformance": status, "conformance_detail": detail,
        "target_val_loss": with_target[0]["target_val_loss"] if with_target else None,
        "target_reached": reached if with_target else None,
        "time_to_target_s": ttt[0], "time_to_target_low": ttt[1], "time_to_target_high": ttt[2],
        "steps_to_target": _median(m.get("steps_to_target") for m in metrics) if reached else None,
        "steps_trained": int(max(steps)) if steps else None,
        "best_val_loss": min(_numbers(m.get("best_val_loss") for m in every), default=None),
        "compile_s": _median(_compile_in_steps(m) for m in metrics),
        "compile_source": sources.pop() if len(sources) == 1 else None,
        "tokens_per_s": tps[0], "tokens_per_s_low": tps[1], "tokens_per_s_high": tps[2],
        "mfu": mfu[0], "mfu_low": mfu[1], "mfu_high": mfu[2],
        "peak_mb": max(_numbers(peaks), default=None),
        "budget_mb": next((b for r in cells if (b := r.get("gpu_budget_mb" if gpu else "budget_mb")) is not None),
                          None),
        "memory": "GPU" if gpu else "RAM",
        "contended": any(r.get("contended") is True for r in cells),
        "ranked": False, "rank": None, "tied_with": [], "rank_by": None, "unranked_because": None,
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


def _estimate(r: dict, by: str) -> stats.Estimate:
    """The row's figure that ranks it, as an estimate (lower is better for time: negated
    tokens/s would flip the interval, so the caller says which way is better)."""
    col = "time_to_target" if by == "time to target" else "tokens_per_s"
    med = r[col + "_s"] if col == "time_to_target" else r[col]
    return stats.Estimate(med, r[col + "_low"], r[col + "_high"], r["repeats"])


def _rank(rows: list[dict]) -> None:
    """Rank the rows of one (host, spec) in place (module doc: ties share a rank)."""
    for r in rows:
        r["unranked_because"] = _why_unranked(r)
    eligible = [r for r in rows if r["unranked_because"] is None]
    reached = [r for r in eligible if r["target_reached"]]
    if reached:
        order, by = reached, "time to target"
        for r in eligible:
            if not r["target_reached"]:
                r["unranked_because"] = "target not reached"
    else:
        order, by = [r for r in eligible if r["tokens_per_s"] is not None], "tokens/s"
    better = (lambda x, y: x.median < y.median) if by == "time to target" else (lambda x, y: x.median > y.median)
    est = {id(r): _estimate(r, by) for r in order}
    for r in order:
        mine = est[id(r)]
        apart = {id(o) for o in order if o is not r and stats.told_apart(est[id(o)], mine)}
        r.update(ranked=True, rank_by=by, rank=1 + sum(1 for o in order if id(o) in apart and better(est[id(o)], mine)),
                 tied_with=[_name(o) for o in order if o is not r and id(o) not in apart])


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
    rows.sort(key=lambda r: (r["host"], r["spec"], r["rank"] is None, r["rank"] or 0,
                             (r["time_to_target_s"] if r["rank_by"] == "time to target" else -(r["tokens_per_s"] or 0))
                             if r["ranked"] else 0, r["label"], r["dtype"], r["options"]))
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


def _interval(r: dict, col: str, unit: str = "") -> str:
    """'12.5 s [11.9-13.1]', or '12.5 s (one repeat: no interval)' (reports/fmt.py's numbers)."""
    med = r[col + ("_s" if col == "time_to_target" else "")]
    low, high = r[col + "_low"], r[col + "_high"]
    text = fmt.number(med) + unit
    if low is None:
        return text + (" (one repeat: no interval)" if r["repeats"] == 1 else "")
    return text + f" [{fmt.number(low)}-{fmt.number(high)}]"


def _tie(first: dict, rows: list[dict]) -> str:
    tied = [o for o in rows if o is not first and o["ranked"] and _name(o) in first["tied_with"]]
    if not tied:
        return ""
    why = "one repeat: no interval to tell them apart" if min(o["repeats"] for o in [first, *tied]) < 2 else \
        "their intervals overlap or are within 5%"
    return f", tied with {', '.join(_name(o) for o in tied)} ({why})"


def _clause(spec: str, rows: list[dict]) -> str:
    firsts = sorted((r for r in rows if r["rank"] == 1),
                    key=lambda r: r["time_to_target_s"] if r["rank_by"] == "time to target" else -r["tokens_per_s"])
    if not firsts:
        return f"nothing on {spec} is ranked (no row ended ok with a passing conformance cell in this run)"
    first = firsts[0]
    ref = _reference(rows, first)
    contended = " (measured under contention)" if first["contended"] else ""
    if first["rank_by"] == "time to target":
        text = (f"{_name(first)} reaches {spec}'s target ({first['target_val_loss']:.4g}) first, in "
                f"{_interval(first, 'time_to_target', ' s')}{contended}{_tie(first, rows)}")
        if ref is first:
            return text + ", and is the NumPy reference itself"
        if ref is None:
            return text + f"; no NumPy reference trained {spec} on this host"
        if ref["time_to_target_s"] is None:
            return text + f"; the NumPy reference ({_name(ref)}) " + (
                f"ended {ref['status']}" if ref["status"] != "ok" else
                f"did not reach it in {ref['steps_trained']} steps")
        return text + (f", {ref['time_to_target_s'] / first['time_to_target_s']:.2g}x the NumPy reference's speed "
                       f"({_name(ref)}: {fmt.seconds(ref['time_to_target_s'])} s)")
    text = (f"no ranked row reached {spec}'s target, so by training tokens/s {_name(first)} is fastest at "
            f"{_interval(first, 'tokens_per_s')}{contended}{_tie(first, rows)}")
    if ref is first:
        return text + ", and is the NumPy reference itself"
    if ref is None or ref["tokens_per_s"] is None:
        return text + f"; no NumPy reference has tokens/s for {spec} on this host"
    return text + f", {first['tokens_per_s'] / ref['tokens_per_s']:.2g}x the NumPy reference's {fmt.rate(ref['tokens_per_s'])}"


def _sentence(host: str, tasks: list[tuple[str, list[dict]]]) -> str:
    return f"On {host}: " + "; ".join(_clause(spec, rows) for spec, rows in tasks) + "."


def _rank_text(r: dict, rows: list[dict]) -> str:
    if not r["ranked"]:
        return f"unranked: {r['unranked_because']}"
    shared = any(o is not r and o["ranked"] and o["rank"] == r["rank"] and o["host"] == r["host"]
                 and o["spec"] == r["spec"] for o in rows)
    return f"{r['rank']}{'=' if shared else ''}" + (" (by tokens/s)" if r["rank_by"] == "tokens/s" else "")


def _text_row(r: dict, rows: list[dict]) -> list[str]:
    if r["status"] != "ok" and r["target_reached"] is None and r["tokens_per_s"] is None:
        time = r["status"]
    elif r["target_val_loss"] is None:
        time = "no target"
    elif r["target_reached"]:
        time = _interval(r, "time_to_target", " s") + f" (step {fmt.count(r['steps_to_target'])})"
        if r["compile_s"] and r["compile_s"] >= COMPILE_SHOWN_FROM * r["time_to_target_s"]:
            time += f", compile {fmt.seconds(r['compile_s'])} s of it"
    else:
        time = f"not reached in {r['steps_trained']} steps" + (
            f" (best {r['best_val_loss']:.3f})" if r["best_val_loss"] is not None else "")
        if r["status"] != "ok":
            time = f"{r['status']}: {time}"
    tps = _interval(r, "tokens_per_s") if r["tokens_per_s"] is not None else ""
    memory = ""
    if r["peak_mb"] is not None:
        memory = ("GPU " if r["memory"] == "GPU" else "") + fmt.mb(r["peak_mb"])
        memory += f" / {fmt.mb(r['budget_mb'])} MB" if r["budget_mb"] else " MB (no budget)"
    proof = {"pass": "pass", "none": "none in this run"}.get(r["conformance"], r["conformance"])
    if r["conformance"] == "fail":
        proof = "FAIL" + (f": {r['conformance_detail']}" if r["conformance_detail"] else "")
    rank = _rank_text(r, rows) + (" · contended" if r["contended"] else "")
    backend = r["label"] + ("" if r["device"] in (None, "cpu") else f" ({r['device']})") + \
        (f" [{r['options']}]" if r["options"] else "")
    repeats = str(r["repeats"]) + (f" of {r['cells']}" if r["cells"] != r["repeats"] else "")
    return [r["host"], backend, r["spec"],
            r["dtype"], proof, ("" if r["target_val_loss"] is None else f"{r['target_val_loss']:.4g}"), time, tps,
            fmt.pct(r["mfu"]),
            memory, repeats, rank]


def to_json(h: Headline) -> list[dict]:
    """The machine-readable verdict of `gptbench report RUN --headline-json FILE` (docs/reports.md)."""
    def est(r, col):
        med = r[col + ("_s" if col == "time_to_target" else "")]
        return None if med is None else {"median": med, "low": r[col + "_low"], "high": r[col + "_high"]}

    out = []
    for r in h.rows:
        out.append({"host": r["host"], "backend": r["label"], "backend_name": r["backend"], "device": r["device"],
                    "spec": r["spec"], "dtype": r["dtype"], "options": r["options"], "status": r["status"],
                    "conformance": r["conformance"], "rank": r["rank"], "rank_by": r["rank_by"],
                    "tied_with": r["tied_with"], "unranked_because": r["unranked_because"],
                    "repeats": r["repeats"], "interval_coverage": stats.coverage(r["repeats"]) if r["repeats"] < 6
                    else stats.CONFIDENCE,
                    "target_val_loss": r["target_val_loss"], "target_reached": r["target_reached"],
                    "steps_to_target": r["steps_to_target"], "time_to_target_s": est(r, "time_to_target"),
                    "tokens_per_s": est(r, "tokens_per_s"), "mfu": est(r, "mfu"), "compile_s": r["compile_s"],
                    "compile_source": r["compile_source"], "contended": r["contended"], "peak_mb": r["peak_mb"],
                    "budget_mb": r["budget_mb"]})
    return out
