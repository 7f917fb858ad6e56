"""Shared by the backend tests: run `gptbench check` and assert the whole ladder passed;
generation and the optimizer step against the float64 NumPy reference on `tiny`."""

import json
import math

import numpy as np

from backends.numpy_ref import NumpyBackend
from gptspec.spec import preset
from gptspec.weights import init_params
from suite.cli import main

SPEC = preset("tiny")

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


def assert_generation_equals_the_reference(model) -> None:
    """Greedy and sampled generation of `model` (a backend on SPEC) equal the reference's,
    token for token. 40 new tokens overflow the 16-token block twice: the cache is refilled
    on the way."""
    params = init_params(SPEC, seed=3)
    prompt = np.random.default_rng(1).integers(0, SPEC.vocab_size, (2, 5))
    ref = NumpyBackend(SPEC, dtype="float64")
    ref.load_state(params)
    model.load_state(params)
    for kw in (dict(max_new_tokens=40, temperature=0), dict(max_new_tokens=40, temperature=0.8, top_k=5, seed=7)):
        np.testing.assert_array_equal(model.generate(prompt, **kw), ref.generate(prompt, **kw))


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
