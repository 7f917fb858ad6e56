"""The headline (reports/headline.py) on a synthetic run whose answer is worked out by hand:
which rows are ranked (a passing conformance cell of the same backend, device and dtype on the
same host, none failing), their order and ties over repeats, the winner sentence with its
ratio to the NumPy reference, the Markdown that docs/results/ and the README hold, and the
JSON verdict."""

import json

import pytest

from reports.headline import RULE, TEXT_COLUMNS, headline, to_json
from suite.cli import main
from suite.run_cmd import summary

N = iter(range(10_000))


def rec(backend, workload="train", host="box", dtype="float32", device="cpu", status="ok", spec="lumgpt",
        metrics=None, gate=None, options=None, peak=100.0, **fields) -> dict:
    return {"cell_id": f"{next(N):016x}", "backend": backend, "workload": workload, "spec": {"name": spec},
            "dtype": dtype, "device": device, "host_class": host, "seed": 0, "options": options or {},
            "status": status, "metrics": metrics or {}, "implementation": {"name": backend}, "gate": gate,
            "peak_rss_mb": peak, "budget_mb": 700.0, **fields}


def trained(seconds=None, tps=1000.0, target=1.8, steps=200, best=1.7):
    """A train cell's metrics: it reached `target` after `seconds` of training (None: it did not)."""
    return {"target_val_loss": target, "target_reached": seconds is not None, "time_to_target_s": seconds,
            "steps_to_target": None if seconds is None else 100, "steps_trained": steps,
            "best_val_loss": best if seconds is not None else target + 0.3, "tokens_per_s": tps,
            "tokens_per_s_q1": 0.9 * tps, "tokens_per_s_q3": 1.1 * tps, "mfu": 0.02}


SPREAD = (0.98, 1.0, 1.02)


def reps(backend, seconds=None, tps=1000.0, spread=SPREAD, **kw) -> list[dict]:
    """A train cell's repeats: time to target and tokens/s scaled by `spread`."""
    return [rec(backend, metrics=trained(None if seconds is None else seconds * f, tps=tps * f),
                options={"repeat": i}, **kw) for i, f in enumerate(spread)]


def passed(backend, **kw):
    return rec(backend, workload="conformance", metrics={"ok": True}, **kw)


def failed(backend, **kw):
    return rec(backend, workload="conformance", status="nonconformant",
               metrics={"ok": False, "first_failure": "grad.h.0.ln_1.weight"}, **kw)


RUN = [
    # box: numpy and torch proved; the fastest three are not
    *reps("numpy", 40.0), passed("numpy"),
    *reps("torch", 10.0, tps=5000.0), passed("torch"),
    *reps("jax", 5.0, tps=9000.0),                                   # no conformance cell at all
    *reps("mlx", 2.0, tps=20000.0), failed("mlx"),                   # its conformance cell failed
    *reps("torch", 8.0, tps=7000.0, dtype="bfloat16"),               # torch proved in float32 only
    *reps("compile", 3.0), passed("compile"), failed("compile"),     # a failure anywhere wins
    *reps("torch", None, tps=900.0, dtype="float64"), passed("torch", dtype="float64"),
    rec("triton", status="oom", peak=812.0), passed("triton"),
    # gpu: nothing ranked reached the target, so tokens/s decides; torch's proof is its own gate
    *reps("torch", None, tps=20000.0, host="gpu", device="cuda", gate={"ok": True}, gpu_peak_allocated_mb=5000.0,
          gpu_budget_mb=12288.0),
    *reps("numpy", None, tps=1000.0, host="gpu"), passed("numpy", host="gpu"),
    *reps("mlx", 1.0, tps=50000.0, host="gpu"),                      # torch's pass on box does not count here
    # old: nothing proved at all
    *reps("numpy", 60.0, host="old"),
]


@pytest.fixture(scope="module")
def table():
    h = headline(RUN)
    return h, {(r["host"], r["label"], r["dtype"]): r for r in h.rows}


def test_only_rows_with_a_passing_conformance_cell_of_their_backend_dtype_and_host_are_ranked(table):
    _, rows = table
    ranked = {k: (r["rank"], r["rank_by"]) for k, r in rows.items() if r["ranked"]}
    assert ranked == {("box", "torch", "float32"): (1, "time to target"),
                      ("box", "numpy", "float32"): (2, "time to target"),
                      ("gpu", "torch", "float32"): (1, "tokens/s"),
                      ("gpu", "numpy", "float32"): (2, "tokens/s")}
    why = {k: r["unranked_because"] for k, r in rows.items() if not r["ranked"]}
    assert why == {("box", "jax", "float32"): "no conformance cell in this run",
                   ("box", "mlx", "float32"): "conformance failed",
                   ("box", "torch", "bfloat16"): "no conformance cell in this run",
                   ("box", "compile", "float32"): "conformance failed",
                   ("box", "torch", "float64"): "target not reached",
                   ("box", "triton", "float32"): "status oom",
                   ("gpu", "mlx", "float32"): "no conformance cell in this run",
                   ("old", "numpy", "float32"): "no conformance cell in this run"}
    assert rows[("box", "compile", "float32")]["conformance_detail"] == "grad.h.0.ln_1.weight"


def test_the_winner_sentence_and_its_ratio_to_the_numpy_reference(table):
    h, _ = table
    assert h.sentences == [
        # 40 s / 10 s; mlx (2 s), compile (3 s), jax (5 s) and bfloat16 torch (8 s) were faster but not proved
        "On box: torch float32 reaches lumgpt's target (1.8) first, in 10.0 s [9.80-10.2], 4x the NumPy reference's "
        "speed (numpy float32: 40.0 s).",
        # 20000 / 1000 tokens/s
        "On gpu: no ranked row reached lumgpt's target, so by training tokens/s torch float32 on cuda is fastest at "
        "20,000 [19,600-20,400], 20x the NumPy reference's 1,000.",
        "On old: nothing on lumgpt is ranked (no row ended ok with a passing conformance cell in this run).",
    ]


def test_the_numpy_reference_winning_or_missing_is_said_so():
    alone = headline([rec("numpy", metrics=trained(40.0)), passed("numpy")])
    assert alone.sentences == ["On box: numpy float32 reaches lumgpt's target (1.8) first, in 40.0 s (one repeat: no "
                               "interval), and is the NumPy reference itself."]
    missed = headline([rec("numpy", metrics=trained(None)), *reps("torch", 12.5), passed("torch")])
    assert missed.sentences == ["On box: torch float32 reaches lumgpt's target (1.8) first, in 12.5 s [12.2-12.8]; "
                                "the NumPy reference (numpy float32) did not reach it in 200 steps."]
    none = headline([*reps("torch", 12.5), passed("torch")])
    assert none.sentences[0].endswith("in 12.5 s [12.2-12.8]; no NumPy reference trained lumgpt on this host.")


def test_cells_of_one_row_are_pooled_and_reached_only_when_every_one_reached():
    seeds = [rec("torch", metrics=trained(t, tps=p)) for t, p in ((10.0, 100.0), (14.0, 300.0), (30.0, 200.0))]
    row, = headline(seeds + [passed("torch")]).rows
    assert (row["cells"], row["repeats"], row["time_to_target_s"], row["tokens_per_s"]) == (3, 3, 14.0, 200.0)
    assert (row["time_to_target_low"], row["time_to_target_high"]) == (10.0, 30.0)  # 3 repeats: [min, max]
    assert (row["tokens_per_s_low"], row["tokens_per_s_high"]) == (100.0, 300.0)
    row, = headline(seeds[:2] + [rec("torch", metrics=trained(None))] + [passed("torch")]).rows
    assert row["target_reached"] is False and row["time_to_target_s"] is None
    # another learning rate is another experiment: its own row, named by its options
    rows = headline([seeds[0], rec("torch", metrics=trained(9.0), options={"lr": 0.01})]).rows
    assert sorted(r["options"] for r in rows) == ["", "lr=0.01"]
    # alone, the same cell's row needs no name: nothing to tell it apart from
    alone, = headline([rec("torch", metrics=trained(9.0), options={"lr": 0.01})]).rows
    assert alone["options"] == ""


def test_text_and_markdown(table, tmp_path):
    h, _ = table
    text = h.text()
    assert list(text.columns) == TEXT_COLUMNS
    first = text.iloc[0].tolist()
    assert first == ["box", "torch", "lumgpt", "float32", "pass", "1.8", "10.0 s [9.80-10.2] (step 100)",
                     "5,000 [4,900-5,100]", "2.0%", "100 / 700 MB", "3", "1"]
    by_backend = {(r.host, r.backend, r.dtype): r for r in text.itertuples()}
    assert by_backend[("box", "mlx", "float32")].conformance == "FAIL: grad.h.0.ln_1.weight"
    assert by_backend[("box", "torch", "float64")][7] == "not reached in 200 steps (best 2.100)"
    assert by_backend[("box", "triton", "float32")][7] == "oom"
    assert by_backend[("box", "triton", "float32")][10] == "812 / 700 MB"
    assert by_backend[("box", "triton", "float32")][11] == "0 of 1"  # repeats: no cell ended ok
    gpu = by_backend[("gpu", "torch (cuda)", "float32")]
    assert gpu[10] == "GPU 5,000 / 12,300 MB" and gpu[12] == "1 (by tokens/s)"
    compiled = headline([rec("compile", metrics={**trained(3.0), "compile_s": 2.5})]).text().iloc[0]
    assert compiled[TEXT_COLUMNS[6]] == "3.00 s (one repeat: no interval) (step 100), compile 2.50 s of it"
    # only the training graph's compilation is inside the step times; the loss graph's is in evaluation
    by_graph = {"train (32, 16)": 2.0, "loss (32, 16)": 5.0}
    compiled = headline([rec("compile", metrics={**trained(3.0), "compile_s": 7.0, "compile_s_by_graph": by_graph})])
    assert compiled.text().iloc[0][TEXT_COLUMNS[6]] == "3.00 s (one repeat: no interval) (step 100), compile 2.00 s of it"
    # a first-call excess under 2% of the time to target is left to the JSON
    quick = headline([rec("numpy", metrics={**trained(3.0), "compile_s": 0.01})])
    assert "compile" not in quick.text().iloc[0][TEXT_COLUMNS[6]] and quick.rows[0]["compile_s"] == 0.01

    md = h.markdown().splitlines()
    assert md[0] == "| " + " | ".join(TEXT_COLUMNS) + " |" and md[1] == "|" + " --- |" * 12
    assert md[2] == "| " + " | ".join(first) + " |"
    assert len(md) == 2 + len(text) + 4 and md[-3] == RULE and md[-1] == " ".join(h.sentences)
    # a cell holding "|" keeps the table's shape
    piped = headline([rec("a|b", metrics=trained(1.0))]).markdown().splitlines()[2]
    assert "a\\|b" in piped and piped.count(" | ") == 11


def test_rows_that_cannot_be_told_apart_share_a_rank_and_name_each_other():
    # numpy and its twin: overlapping intervals; slow: 40% behind both, told apart
    run = [*reps("numpy", 10.0, spread=(0.95, 1.0, 1.06)), passed("numpy"),
           *reps("twin", 10.2, spread=(0.96, 1.0, 1.05)), passed("twin"),
           *reps("slow", 14.0, spread=(0.97, 1.0, 1.03)), passed("slow")]
    h = headline(run)
    rows = {r["label"]: r for r in h.rows}
    assert (rows["numpy"]["rank"], rows["twin"]["rank"], rows["slow"]["rank"]) == (1, 1, 3)
    assert rows["numpy"]["tied_with"] == ["twin float32"] and rows["twin"]["tied_with"] == ["numpy float32"]
    assert rows["slow"]["tied_with"] == []
    ranks = {t.backend: t.rank for t in h.text().itertuples()}
    assert ranks == {"numpy": "1=", "twin": "1=", "slow": "3"}
    assert h.sentences == ["On box: numpy float32 reaches lumgpt's target (1.8) first, in 10.0 s [9.50-10.6], tied with "
                           "twin float32 (their intervals overlap or are within 5%), and is the NumPy reference "
                           "itself."]
    # disjoint intervals but medians within 5%: still a tie
    close = headline([*reps("numpy", 10.0, spread=(0.99, 1.0, 1.01)), passed("numpy"),
                      *reps("twin", 10.3, spread=(0.99, 1.0, 1.01)), passed("twin")])
    assert [r["rank"] for r in close.rows] == [1, 1]
    # one repeat: no interval, so it is never ranked above (nor below) a row it cannot be told apart from
    single = headline([*reps("numpy", 10.0), passed("numpy"), rec("quick", metrics=trained(1.0)), passed("quick")])
    assert [(r["label"], r["rank"], r["repeats"]) for r in single.rows] == [("quick", 1, 1), ("numpy", 1, 3)]
    assert "quick float32 reaches lumgpt's target (1.8) first, in 1.00 s (one repeat: no interval), tied with " \
           "numpy float32 (one repeat: no interval to tell them apart)" in single.sentences[0]


def test_a_row_measured_under_contention_says_so():
    h = headline([*reps("numpy", 10.0), rec("numpy", metrics=trained(10.0), options={"repeat": 3}, contended=True),
                  passed("numpy")])
    row, = h.rows
    assert row["contended"] is True and h.text().iloc[0]["rank"] == "1 · contended"
    assert "(measured under contention)" in h.sentences[0]


def test_headline_json_is_the_table_as_numbers(table, tmp_path, capsys):
    h, _ = table
    doc = to_json(h)
    by = {(d["host"], d["backend"], d["dtype"]): d for d in doc}
    torch = by[("box", "torch", "float32")]
    assert torch["rank"] == 1 and torch["tied_with"] == [] and torch["repeats"] == 3
    assert torch["time_to_target_s"] == {"median": 10.0, "low": 9.8, "high": 10.2}
    assert torch["tokens_per_s"] == {"median": 5000.0, "low": 4900.0, "high": 5100.0}
    assert torch["interval_coverage"] == 0.75 and torch["contended"] is False
    assert by[("box", "jax", "float32")]["rank"] is None
    assert by[("box", "torch", "float64")]["time_to_target_s"] is None
    run = tmp_path / "run"
    run.mkdir()
    (run / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RUN))
    assert main(["report", str(run), "--headline-json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == json.loads(json.dumps(doc))  # stdout holds the JSON alone
    assert main(["report", str(run), "--headline-md", "-"]) == 0
    assert capsys.readouterr().out == h.markdown()


def test_report_writes_the_headline_as_markdown(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RUN))
    out = tmp_path / "headline.md"
    assert main(["report", str(run), "--headline-md", str(out)]) == 0
    assert out.read_text() == headline(RUN).markdown()
    assert f"wrote {out}" in capsys.readouterr().out


def test_the_run_summary_prints_the_same_headline(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RUN))
    summary(run)
    out = capsys.readouterr().out
    assert "headline: time to target per host" in out and "[95% interval]" in out  # not eaten as rich markup
    flat = " ".join(out.split())
    for sentence in headline(RUN).sentences:
        assert " ".join(sentence.split()) in flat
