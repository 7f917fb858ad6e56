"""Shared by the backend tests: run `gptbench check` and assert the whole ladder passed."""

import json

from suite.cli import main
from suite.spec import preset

N_TENSORS = len(preset("tiny").param_shapes())  # 28
N_OP_ROWS = 23  # 7 op outputs + 16 input gradients


def passing_check(backend: str, dtype: str, capsys) -> dict:
    """`gptbench check BACKEND --dtype DTYPE --json` on tiny must pass every rung with every
    row present; returns the trajectory's loss row for the caller's error bound."""
    assert main(["check", backend, "--dtype", dtype, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert report["ok"] and report["first_failure"] is None and report["notes"] == []
    assert [sum(r["level"] == lv for r in rows) for lv in ("ops", "step0", "trajectory")] == \
        [N_OP_ROWS, 2 + N_TENSORS, 1 + N_TENSORS]
    loss = next(r for r in rows if r["name"] == "trajectory.loss")
    assert loss["shape"] == [50]
    return loss
