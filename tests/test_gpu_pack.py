"""`gptbench gpu-pack` (suite/gpu_pack.py): the dry run of the whole plan on the CPU, end to
end, and the pack's rules with injected steps: a failing step is recorded and the pack goes
on, steps past the budget are recorded as skipped, and pack.json holds every step as soon as
it ends."""

import json
from dataclasses import replace

import pytest

from suite import gpu_pack
from suite.cli import main
from suite.gpu_pack import Outcome, Pack, Step, attention_ratios, plan


def test_the_dry_run_runs_every_step_of_the_plan_and_leaves_a_report_ready_run_directory(tmp_path):
    out = tmp_path / "pack"
    code = main(["gpu-pack", "--dry-run", "--out", str(out)])
    done = json.loads((out / "pack.json").read_text())
    steps = {s["name"]: s for s in done["steps"]}
    planned = [s.name for s in gpu_pack.plan(dry_run=True)]
    assert list(steps) == planned and done["dry_run"] is True
    # every step runs for real, the memory frontier's search included
    assert all(s["status"] == "ok" for s in steps.values()) and code == 0, steps
    frontier = steps["frontier-tiny-numpy-400mb"]["summary"]
    assert frontier["binding_budget_mb"] == 400 and 1 <= frontier["max_batch"] <= 256
    assert frontier["peak_mb_at_max"] <= 400
    env = json.loads((out / "environment.json").read_text())
    assert env["fingerprint"] and steps["environment"]["summary"]["gpus"] == "none"
    # every cell step left its record, in a run directory the report renders
    from reports import write_report
    from reports.rundir import read_records

    records = read_records(out / "run")
    cells = [s for s in gpu_pack.plan(dry_run=True) if s.kind == "cell"]
    assert len(records) == len(cells) and all(r["status"] == "ok" for r in records)
    assert steps["check-torch-float32"]["summary"]["ok"] is True
    from reports.html import PLOTLY_JS

    assert write_report(out / "run").stat().st_size > 10_000 and (out / "run" / PLOTLY_JS).is_file()
    summary = (out / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in planned)
    assert "## Headline" in summary and "train" in summary.split("## Headline")[1]


def _steps(n, timeout=60):
    return [Step(f"s{i}", "cell", timeout) for i in range(n)]


def test_a_failing_step_is_recorded_and_the_pack_goes_on(tmp_path):
    pack = Pack(tmp_path, dry_run=True, budget_s=1000)
    seen = []

    def runner(step, timeout_s):
        seen.append(step.name)
        if step.name == "s1":
            raise RuntimeError("CUDA error: an illegal memory access")
        return Outcome(step.name, "ok")

    outcomes = pack.run(_steps(3), runner)
    assert seen == ["s0", "s1", "s2"]
    assert [o.status for o in outcomes] == ["ok", "failed", "ok"]
    assert outcomes[1].reason == "RuntimeError: CUDA error: an illegal memory access"
    saved = json.loads((tmp_path / "pack.json").read_text())["steps"]
    assert [s["status"] for s in saved] == ["ok", "failed", "ok"]


def test_steps_past_the_budget_are_skipped_with_the_reason_and_each_step_gets_what_is_left(tmp_path):
    now = [0.0]
    pack = Pack(tmp_path, dry_run=True, budget_s=100, clock=lambda: now[0])
    given, saved_after = [], []

    def runner(step, timeout_s):  # each step takes 45 s of the clock
        given.append(timeout_s)
        now[0] += 45
        return Outcome(step.name, "ok")

    pack.save = lambda: saved_after.append(len(pack.outcomes))  # written after every step
    outcomes = pack.run(_steps(4, timeout=60), runner)
    # 100 s: s0 gets 60 (its own limit), s1 the 55 left; 10 s is too little for s2 and s3
    assert given == [60, 55]
    assert [o.status for o in outcomes] == ["ok", "ok", "skipped", "skipped"]
    assert outcomes[2].reason == "the pack's budget of 100 s had 10 s left"
    assert [o.seconds for o in outcomes[:2]] == [45, 45] and saved_after == [1, 2, 3, 4]


def test_attention_ratios_pair_the_same_shape_and_pass():
    def rec(provider, rows, status="ok"):
        return {"workload": "attention", "backend": provider, "status": status, "metrics": {"rows": rows}}

    row = lambda T, p, tf: {"T": T, "D": 64, "pass": p, "tflops_per_s": tf}  # noqa: E731
    records = [rec("triton", [row(512, "forward", 300.0), row(512, "fwd_bwd", 150.0), row(1024, "forward", 400.0)]),
               rec("sdpa-flash", [row(512, "forward", 400.0), row(512, "fwd_bwd", 200.0)]),
               rec("sdpa-flash", [row(1024, "forward", 1.0)], status="oom")]
    ratios = attention_ratios(records)
    assert [(r["T"], r["pass"], r["ratio"]) for r in ratios] == [(512, "forward", 0.75), (512, "fwd_bwd", 0.75)]


def test_without_a_gpu_the_real_pack_refuses_and_says_how_to_dry_run(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    assert main(["gpu-pack", "--out", str(tmp_path / "p")]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_the_12_gb_card_is_the_inventorys_rtx4070():
    from suite import inventory

    assert gpu_pack.RTX4070_MB == inventory.load("rtx4070").gpu_budget_mb


def test_a_command_step_that_reads_a_checkout_is_skipped_where_there_is_none(tmp_path):
    """An installed gptbench has no tests/: the Triton kernel tests step says so instead of failing."""
    pack = Pack(tmp_path, dry_run=True, budget_s=1000)
    step = next(s for s in plan(dry_run=True) if s.name == "triton-kernel-tests")
    assert step.needs_path.startswith("tests/triton") and pack.run_step(replace(step, needs_path="tests/no-such-folder"),
                                                                 10).status == "skipped"
