"""The torch eager backend against the float64 NumPy reference: the conformance ladder
through the CLI, attention in every shape generation uses, KV-cache generation, the device
fast path, and what `gptbench` says where torch or CUDA is missing."""

import json

import numpy as np
import pytest
import torch
from ladder_checks import (
    assert_generation_conforms,
    passing_check,
    step_norms,
)

import backends.torch_eager as torch_eager
from backends import numpy_ref
from backends.numpy_ref import NumpyBackend
from backends.torch_eager import TorchBackend, math_attention, sdpa_attention
from gptspec.spec import preset
from gptspec.weights import init_params
from suite.cli import main

SPEC = preset("tiny")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_torch_passes_every_rung_of_the_ladder(dtype, capsys):
    loss = passing_check("torch", dtype, capsys)
    assert loss["norm_rel"] < (1e-14 if dtype == "float64" else 1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_torch_passes_every_rung_with_the_exact_erf_gelu(dtype, capsys):
    loss = passing_check("torch", dtype, capsys, gelu="erf", steps=10)
    assert loss["norm_rel"] < (1e-14 if dtype == "float64" else 1e-6)


def test_bfloat16_autocast_passes_with_its_own_tolerances():
    from workloads.conformance.ladder import run_ladder

    report = run_ladder(TorchBackend(SPEC, dtype="bfloat16"), steps=20)
    assert report.ok, report.to_text()
    linear = next(r for r in report.rows if r.name == "ops.linear.out")
    assert linear.max_scaled > 1e-3  # matmuls really ran in bfloat16 (float32 errs ~1e-6)


@pytest.mark.parametrize("tq, tk", [(16, 16), (1, 9), (3, 7)])
@pytest.mark.parametrize("attention", [sdpa_attention, math_attention], ids=["sdpa", "math"])
def test_attention_matches_the_reference_for_queries_at_the_end(attention, tq, tk):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, t, 8)) for t in (tq, tk, tk))
    ref, _ = numpy_ref.attention_forward(q, k, v)
    y = attention(*(torch.from_numpy(a) for a in (q, k, v))).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_greedy_and_sampled_generation_through_the_kv_cache_conforms(attention):
    assert_generation_conforms(TorchBackend(SPEC, dtype="float64", attention=attention))


def test_train_step_keeps_the_loss_on_the_device_and_equals_the_reference_step():
    params = init_params(SPEC)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, SPEC.vocab_size, (2, 4, SPEC.block_size))
    ref = NumpyBackend(SPEC, dtype="float64")
    model = TorchBackend(SPEC, dtype="float64")
    for b in (ref, model):
        b.load_state(params)
    loss = model.train_step(x, y, 1e-2)
    assert isinstance(loss, torch.Tensor) and loss.device.type == "cpu" and not loss.requires_grad
    assert float(loss) == pytest.approx(ref.train_step(x, y, 1e-2), rel=1e-14)
    for name, p in ref.state().items():
        np.testing.assert_allclose(model.state()[name], p, rtol=1e-12, atol=1e-12, err_msg=name)


def test_step_returns_the_norm_before_clipping():
    norms = step_norms(TorchBackend(SPEC, dtype="float64"))
    assert norms[1][0] == pytest.approx(norms[1][1], rel=1e-12) == pytest.approx(norms[0][0], rel=1e-12)


def test_without_torch_the_backends_list_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(torch_eager, "torch", None)
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("torch", "compile"):
        assert not rows[name]["available"] and "pip install 'gptbench[torch]'" in rows[name]["reason"]
    assert main(["check", "torch"]) == 2
    assert "pip install 'gptbench[torch]'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_check_on_a_missing_gpu_exits_2_with_the_reason(capsys):
    assert main(["check", "torch", "--device", "cuda"]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err
