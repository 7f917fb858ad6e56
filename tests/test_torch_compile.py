"""torch.compile on CPU (slow to compile: few tests, on tiny, one compiled model shared)."""

import json

import numpy as np
import pytest
import torch

from backends.numpy_ref import NumpyBackend
from backends.torch_compile import CompileBackend
from backends.torch_eager import TorchBackend
from gptspec.data import load_corpus
from gptspec.spec import preset
from suite.cell import Cell
from suite.cli import main
from workloads import train as train_workload
from workloads.conformance.tolerances import tolerance
from workloads.train import config_for, train

SPEC = preset("tiny")
CFG = config_for("tiny", steps=50, batch_size=8)  # the ladder's batch: one compiled graph serves both


@pytest.fixture(scope="module")
def compiled():
    return CompileBackend(SPEC, dtype="float32")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_compile_passes(dtype, capsys):
    assert main(["check", "compile", "--dtype", dtype, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # ops 23; step0 30; eval 1; step 29; trajectory 29; generate 4
    assert report["ok"] and len(report["rows"]) == 23 + 30 + 1 + 29 + 29 + 4


def test_numpy_torch_and_compile_trajectories_agree_over_50_steps(compiled):
    """The train workload on each backend: every step's loss within the table's loss
    tolerance of the NumPy float64 reference."""
    corpus = load_corpus("synthetic", synthetic_chars=20_000)
    ref = train(NumpyBackend(SPEC, dtype="float64"), corpus, CFG)["losses"]
    tol = tolerance("float32", "loss")
    for backend in (NumpyBackend(SPEC, dtype="float32"), TorchBackend(SPEC, dtype="float32"), compiled):
        losses = np.array(train(backend, corpus, CFG)["losses"])
        assert len(losses) == 50 and ref[-1] < ref[0] - 0.5  # a real trajectory: the loss falls
        err = np.abs(losses - ref)
        assert np.all(err <= tol.atol * np.sqrt(np.mean(np.square(ref))) + tol.rtol * np.abs(ref)), type(backend)
        assert np.linalg.norm(losses - ref) / np.linalg.norm(ref) <= tol.norm_rtol
        assert err.max() > 0  # float32 really differs from float64: nothing was shared by accident


def test_compile_time_is_recorded_apart_from_step_time():
    torch.compiler.reset()  # compiled graphs are shared between instances: start from none
    model = CompileBackend(SPEC, dtype="float32")
    cell = Cell.make("compile", "train", "tiny", options={"steps": 6, "batch_size": 8})
    m = train_workload.run(model, cell)
    # tracing alone takes a tenth of a second, even when Inductor's on-disk cache has the code
    assert m["compile_s"] == model.compile_s > 0.05
    assert set(model.compile_s_by_graph) == {"train (8, 16)", "loss (8, 16)"}  # evaluation: no graph kept
    train_s = model.compile_s_by_graph["train (8, 16)"]
    assert m["step_ms"][0] >= 1e3 * train_s  # the first step holds the training graph's compile...
    assert np.median(m["step_ms"][2:]) < 1e3 * train_s  # ...and the others none
