"""The Triton backend's availability answers, and the model with its kernels against the same
model on torch's ops (the conformance ladder against float64 is `gptbench check triton`)."""

import numpy as np
import pytest
from conftest import DEVICE

import backends
from backends.torch_eager import TorchBackend
from backends.triton_attn import TritonBackend
from gptspec.spec import PRESETS
from gptspec.weights import init_params
from workloads.conformance.ladder import run_ladder


def test_unavailable_says_why(monkeypatch):
    assert backends.load("triton") is TritonBackend
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "set TRITON_INTERPRET=1" in TritonBackend.unavailable("cpu", "float32")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert TritonBackend.unavailable("cpu", "float32") is None
    assert "bfloat16" in TritonBackend.unavailable("cpu", "bfloat16")
    assert "float64" in TritonBackend.unavailable("cpu", "float64")
    if DEVICE == "cpu":
        assert "CUDA" in TritonBackend.unavailable("cuda", "float32")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert "pip install 'gptbench[triton]'" in TritonBackend.unavailable("cpu", "float32")


@pytest.mark.parametrize("dtype, tol", (("float32", 1e-5), ("float16", 5e-3)))
def test_training_step_and_generation_match_torch_ops(dtype, tol):
    """Logits, loss and every gradient on `tiny`, and generation through the KV cache
    (one-query attention over a longer cache, and the refill when the cache is full)."""
    spec, params = PRESETS["tiny"], init_params(PRESETS["tiny"], seed=0)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, spec.vocab_size, (2, spec.block_size)) for _ in range(2))
    ours, theirs = TritonBackend(spec, DEVICE, dtype), TorchBackend(spec, DEVICE, dtype)
    ours.load_state(params)
    theirs.load_state(params)
    (logits, loss), (ref_logits, ref_loss) = ours.forward(x, y), theirs.forward(x, y)
    grads, ref_grads = ours.backward(), theirs.backward()
    assert abs(loss - ref_loss) <= tol and np.abs(logits - ref_logits).max() <= tol * 10
    for name, g in ref_grads.items():
        scale = np.abs(g).max()
        assert np.abs(grads[name] - g).max() <= tol * scale, name
    # generation: every call's logits through the KV cache against the reference's full forward
    report = run_ladder(ours, levels=("generate",))
    assert report.ok, report.to_text()
