"""Workloads declare themselves (workloads/__init__.py): their options are typed, defaulted
and range-checked by one function; the matrix, the report's cells table, compare and the
summaries read the declarations. A workload written as one new module, with no other file
edited, is taken up by all of them; docs/records.md's tables are the declarations."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import workloads
from gptspec.errors import GptbenchError
from reports.compare import compare_runs
from reports.load import load_run
from suite import matrix as M
from suite.cell import Cell, execute
from suite.cli import _print_cell_summary
from suite.memory import estimate_fields
from suite.record import Limits
from suite.run_cmd import summary

DOCS = Path(__file__).resolve().parents[1] / "docs"


# --- options ----------------------------------------------------------------------------------
def test_defaults_are_the_workloads_own_and_follow_the_spec():
    opts = {w: {s: workloads.options(Cell.make("numpy", w, s)) for s in ("tiny", "lumgpt")} for w in workloads.names()}
    assert opts["train"]["tiny"] == {"steps": 200, "batch_size": 32, "lr": 1e-2, "lr_warmup_steps": 10,
                                     "eval_interval": 20, "eval_batches": 4, "warmup_steps": 2, "seq_len": None,
                                     "target_val_loss": None, "min_lr": None, "beta1": 0.9, "beta2": 0.95,
                                     "weight_decay": 0.1, "corpus": "synthetic", "tokenizer": "char"}
    assert (opts["train"]["lumgpt"]["batch_size"], opts["train"]["lumgpt"]["lr"]) == (8, 3e-3)  # the preset's
    assert opts["generate"]["tiny"] == {"max_new_tokens": 64, "prompt_tokens": 8, "batch_size": 1, "temperature": 1.0,
                                        "top_k": None, "warmup_tokens": 64, "weights": None, "pretrain_steps": 0,
                                        "corpus": "synthetic", "tokenizer": "char", "window": "refill"}
    assert workloads.options(Cell.make("numpy", "generate", "tiny", options={"max_new_tokens": 9}))["warmup_tokens"] == 9
    assert opts["frontier"]["lumgpt"] == {"seq_len": 128, "probe_steps": 2, "batch_limit": 4096, "resolution": 1}
    assert opts["attention"]["tiny"] == {"batch_size": 8, "n_head": 2, "seq_lens": [16], "head_dims": [16],
                                         "passes": ["forward", "backward", "fwd_bwd"], "repeats": 10, "warmup": 2}
    lumgpt = Cell.make("numpy", "attention", "lumgpt").spec
    assert opts["attention"]["lumgpt"]["seq_lens"] == [lumgpt["block_size"]]
    assert opts["conformance"]["tiny"] == {"steps": 50, "batch_size": 8}
    # a default may follow an option given before it: evaluation every tenth of the steps
    assert workloads.options(Cell.make("numpy", "train", "tiny", options={"steps": 60}))["eval_interval"] == 6
    # a spec that is no preset: the generic batch size and learning rate
    other = Cell.make("numpy", "train", {**Cell.make("numpy", "train", "tiny").spec, "name": "custom"})
    assert (workloads.options(other)["batch_size"], workloads.options(other)["lr"]) == (8, 1e-3)


def test_given_options_are_typed_and_runner_options_left_to_the_runner():
    cell = Cell.make("numpy", "train", "tiny", options={"lr": 1, "steps": 7, "gate": "conformance", "repeat": 3})
    opts = workloads.options(cell)
    assert opts["lr"] == 1.0 and isinstance(opts["lr"], float) and opts["steps"] == 7
    assert not {"gate", "repeat"} & set(opts)
    # a list default is the cell's own copy
    a = workloads.options(Cell.make("numpy", "attention", "tiny"))
    a["passes"].append("x")
    assert workloads.options(Cell.make("numpy", "attention", "tiny"))["passes"] == ["forward", "backward", "fwd_bwd"]


@pytest.mark.parametrize("workload, raw, problems", [
    ("train", {"stepz": 3}, {"stepz": "unknown option; allowed: steps, batch_size, lr, "}),
    ("train", {"steps": 0}, {"steps": "expected an integer >= 1, got 0"}),
    ("train", {"steps": 2.5, "lr": "fast"}, {"steps": "expected an integer >= 1, got 2.5",
                                             "lr": "expected a number >= 0, got 'fast'"}),
    ("train", {"steps": True}, {"steps": "expected an integer >= 1, got True"}),
    ("train", {"lr": "1e-3"}, {"lr": "write 1.0e-3"}),
    ("train", {"tokenizer": "bpe"}, {"tokenizer": "expected one of 'char', 'byte', got 'bpe'"}),
    ("train", {"batch_size": None}, {"batch_size": "expected an integer >= 1, got None"}),
    ("generate", {"top_k": 0}, {"top_k": "expected an integer >= 1 or null, got 0"}),
    ("attention", {"seq_lens": 64}, {"seq_lens": "expected a non-empty list of integers >= 1, got 64"}),
    ("attention", {"seq_lens": []}, {"seq_lens": "a non-empty list"}),
    ("attention", {"head_dims": [16, 0]}, {"head_dims": "got [16, 0]"}),
    ("attention", {"passes": ["fwd"]}, {"passes": "expected a non-empty list of 'forward', 'backward', 'fwd_bwd'"}),
    ("conformance", {"threads": 2, "gate": "nosuch"}, {"threads": "unknown option",
                                                       "gate": "expected one of 'attention', 'conformance', "}),
])
def test_bad_options_are_named_with_what_is_allowed(workload, raw, problems):
    with pytest.raises(workloads.OptionError) as err:
        workloads.check_options(workload, raw)
    got = dict(err.value.problems)
    assert set(got) == set(problems)
    for option, needle in problems.items():
        assert needle in got[option]
        assert f"workload {workload!r} option {option!r}: " in str(err.value)
    assert "\n" not in str(err.value)  # one paragraph on the command line


def test_nullable_options_take_null_and_the_others_keep_their_value():
    assert workloads.check_options("generate", {"top_k": None, "weights": None, "temperature": 0}) == \
        {"top_k": None, "weights": None, "temperature": 0.0}
    assert workloads.check_options("attention", {"seq_lens": [32, 64], "passes": ["forward"]}) == \
        {"seq_lens": [32, 64], "passes": ["forward"]}


def test_a_declaration_the_checks_cannot_read_fails_when_written():
    with pytest.raises(TypeError, match="option 'fast': type <class 'bool'> is not int, float, str"):
        workloads.Option("fast", bool, False)


def test_every_workload_declares_itself_and_gradcheck_is_none():
    assert workloads.names() == ["attention", "conformance", "frontier", "generate", "train"]
    for name in workloads.names():
        module = workloads.load(name)
        assert all(hasattr(module, x) for x in ("OPTIONS", "METRICS", "run", "memory_estimate"))
        assert len({o.name for o in module.OPTIONS}) == len(module.OPTIONS)
    with pytest.raises(GptbenchError, match="unknown workload 'gradcheck'; known: attention, conformance"):
        workloads.load("gradcheck")


# --- one new module, no other file edited ---------------------------------------------------
@pytest.fixture
def prefill(tmp_path, monkeypatch):
    """workloads.prefill: docs/adding-a-workload.md's module, in a folder the workloads package
    also searches; no file of the project is edited."""
    code = re.search(r"```python\n(.*?)```", (DOCS / "adding-a-workload.md").read_text(), re.S).group(1)
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "prefill.py").write_text(code)
    monkeypatch.setattr(workloads, "__path__", [*workloads.__path__, str(folder)])
    yield
    sys.modules.pop("workloads.prefill", None)


def _record(cell: Cell, out: dict, cell_id: str, speed: float = 1.0) -> dict:
    """A run directory's record of `cell` from the child's part (suite.cell.execute), its
    times divided by `speed`."""
    m = json.loads(json.dumps(out["metrics"]))
    m["forward_ms"] = [t / speed for t in m["forward_ms"]]
    m["forward_ms_median"] /= speed
    m["tokens_per_s"] *= speed
    return {"cell_id": cell_id, **cell.to_dict(), "status": out["status"], "metrics": m, "peak_rss_mb": 50.0,
            "wall_s": 1.0, "threads": 1, "heavy_modules": ["numpy"], "node_ip": None, "budget_mb": 700.0,
            "dispatch_s": 0.5, **estimate_fields(cell)}


def _run_dir(path: Path, records: list[dict]) -> Path:
    path.mkdir()
    (path / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_new_workload_module_is_taken_up_everywhere(prefill, tmp_path, capsys):
    assert "prefill" in workloads.names()
    # the matrix: its options checked against its declaration, at parse time; the default matrix runs it
    text = "backends: [numpy]\nworkloads: {prefill: {options: %s}}\nspecs: [tiny]\nhost_classes: {cpu: {budget_mb: 500}}\n"
    (cell, _), = M.parse(text % "{repeats: 7, batch_size: 2}", "m.yaml").cells()
    with pytest.raises(GptbenchError, match=r"workloads\.prefill\.options\.repeats: expected an integer >= 1, got 0"):
        M.parse(text % "{repeats: 0}", "m.yaml")
    assert "prefill" in {c.workload for c, _ in M.default_matrix().cells()}
    assert workloads.options(cell) == {"batch_size": 2, "seq_len": 16, "repeats": 7}  # tiny's block_size

    # the cell child, as suite.cell runs it, and its memory estimate
    out = execute({"cell": cell.to_dict(), "limits": Limits(threads=1).to_dict()}).to_dict()
    assert out["status"] == "ok", out.get("traceback")
    ms = out["metrics"]["forward_ms"]
    assert len(ms) == 7 and out["metrics"]["tokens_per_s"] == pytest.approx(2 * 16 / (np.median(ms) / 1e3))
    assert estimate_fields(cell)["memory_estimate"]["kv_cache_mb"] > 0

    # the report's cells table: the declared value and the quartiles of its samples
    a = _run_dir(tmp_path / "a", [_record(cell, out, "p0")])
    b = _run_dir(tmp_path / "b", [_record(cell, out, "p0", speed=0.5)])
    row = load_run(a).cells.iloc[0]
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    assert (row.forward_ms_median, row.forward_ms_q1, row.forward_ms_q3) == pytest.approx((med, q1, q3))
    assert row.tokens_per_s == pytest.approx(out["metrics"]["tokens_per_s"])

    # compare: its declared metric, B/A (one repeat a side: shown, with no interval, never flagged)
    metrics, _ = compare_runs(load_run(a), load_run(b))
    forward = metrics[metrics.metric == "forward_ms"].iloc[0]
    assert forward.ratio == pytest.approx(2.0) and forward.low is None and not forward.flagged
    assert set(metrics.metric) == {"forward_ms", "peak_rss_mb"}

    # the summaries: `gptbench cell`'s line and the run table's tokens/s column
    tps = f"{out['metrics']['tokens_per_s']:,.0f}"
    _print_cell_summary(_record(cell, out, "p0"))
    assert f"forward {med:.2f} ms  tokens/s {tps}" in capsys.readouterr().out
    summary(a)
    assert re.search(rf"prefill .*│ ok +│ {tps} +│", capsys.readouterr().out)


# --- the documentation is the declarations ----------------------------------------------------
def _value(v) -> str:
    return v.__doc__ if callable(v) else f"`{json.dumps(v)}`"


def declared_tables(options, metrics) -> str:
    """docs/records.md's tables of declared options and metrics."""
    lines = ["| option | default | allowed | |", "| --- | --- | --- | --- |"]
    lines += [f"| `{o.name}` | {_value(o.default)} | {o.expected()} | {o.help} |" for o in options]
    if metrics:
        lines += ["", "| metric | unit | quartiles | shown in | |", "| --- | --- | --- | --- | --- |"]
        for m in metrics:
            key = f"`{m.name}`" + (f" (`{m.key}`)" if m.key else "")
            spread = ", ".join(f"`{c}`" for c in m.spread) if m.spread else ""
            shown = ", ".join(where for where, yes in (("compare", m.compare), ("summaries", m.summary)) if yes)
            lines.append(f"| {key} | {m.unit} | {spread} | {shown} | {m.help} |")
    return "\n".join(lines)


def _doc_section(heading: str) -> str:
    doc = (DOCS / "records.md").read_text()
    assert f"\n### {heading}" in doc, f"docs/records.md has no section '### {heading}'"
    return doc.split(f"\n### {heading}")[1].split("\n### ")[0].split("\n## ")[0]


@pytest.mark.parametrize("name", workloads.names())
def test_records_doc_tables_are_the_declarations(name):
    module = workloads.load(name)
    tables = declared_tables(module.OPTIONS, module.METRICS)
    assert tables in _doc_section(f"{name} (`workloads/"), f"docs/records.md, {name}, should hold:\n{tables}"


def test_records_doc_lists_the_runner_options():
    tables = declared_tables(workloads.RUNNER_OPTIONS, ())
    assert tables in _doc_section("Runner options"), f"docs/records.md should hold:\n{tables}"
