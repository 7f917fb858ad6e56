"""Shared by the backend tests: run `gptbench check` and assert the whole ladder passed;
generation and the optimizer step against the float64 NumPy reference on `tiny`."""

import json
import math

import numpy as np

from backends.numpy_ref import NumpyBackend
from gptspec.spec import preset
from gptspec.weights import init_params
from suite.cli import main
from workloads.conformance.ladder import LEVELS, run_ladder

SPEC = preset("tiny")

N_TENSORS = len(preset("tiny").param_shapes())  # 28
N_OP_ROWS = 23  # 7 op outputs + 16 input gradients


def passing_check(backend: str, dtype: str, capsys, gelu: str = "tanh", steps: int = 50) -> dict:
    """`gptbench check BACKEND --dtype DTYPE --gelu GELU --json` on tiny must pass every rung with
    every row present; returns the trajectory's loss row for the caller's error bound."""
    assert main(["check", backend, "--dtype", dtype, "--gelu", gelu, "--steps", str(steps), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert report["ok"] and report["first_failure"] is None and report["notes"] == []
    # ops; step0: logits, loss, every gradient; eval: the losses; step: the norms, every parameter;
    # trajectory: the losses, every parameter; generate: logits and tokens, greedy, sampled and sliding
    assert [sum(r["level"] == lv for r in rows) for lv in LEVELS] == \
        [N_OP_ROWS, 2 + N_TENSORS, 1, 1 + N_TENSORS, 1 + N_TENSORS, 6]
    assert report["spec"]["gelu"] == gelu
    loss = next(r for r in rows if r["name"] == "trajectory.loss")
    assert loss["shape"] == [steps]
    return loss


def assert_generation_conforms(model) -> None:
    """The ladder's generate level on `model` (a backend on SPEC): every call's logits against
    the reference's full forward, from weights far from uniform logits, across a refill of
    the context, greedy and sampled, and under the sliding window; then the tokens."""
    report = run_ladder(model, levels=("generate",))
    assert report.ok and len(report.rows) == 6, report.to_text()
    assert {r.name for r in report.rows} == {f"generate.{k}.{w}" for k in ("greedy", "sampled", "sliding")
                                             for w in ("logits", "tokens")}


def step_norms(model) -> list[tuple[float, float]]:
    """(what step() returned, the norm of the gradients backward() gave) after one step,
    for the reference and then `model` (a backend on SPEC), from the same start."""
    x = np.random.default_rng(0).integers(0, SPEC.vocab_size, (2, 4, SPEC.block_size))
    norms = []
    for b in (NumpyBackend(SPEC, dtype="float64"), model):
        b.load_state(init_params(SPEC))
        b.forward(x[0], x[1])
        grads = b.backward()
        norms.append((b.step(1e-2), math.sqrt(sum(float((g * g).sum()) for g in grads.values()))))
    return norms
