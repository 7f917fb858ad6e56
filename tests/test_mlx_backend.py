"""The MLX backend against the float64 NumPy reference: the conformance ladder through the
CLI in float32, KV-cache generation, the compiled train_step, why float64 is refused, and
what `gptbench` says where mlx is missing."""

import json

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="mlx is not installed: pip install 'gptbench[mlx]'")

from ladder_checks import assert_generation_conforms, passing_check  # noqa: E402

import backends.mlx_backend as mlx_backend  # noqa: E402
from backends.mlx_backend import MlxBackend  # noqa: E402
from backends.numpy_ref import NumpyBackend  # noqa: E402
from gptspec.spec import preset  # noqa: E402
from gptspec.weights import init_params  # noqa: E402
from suite.cli import main  # noqa: E402

SPEC = preset("tiny")
FLOAT64_EXP_ERROR = 1e-9  # MLX 0.32's float64 exp errs by ~1e-7 relative; float64 arithmetic by ~1e-16


def test_check_mlx_passes_every_rung_of_the_ladder_in_float32(capsys):
    loss = passing_check("mlx", "float32", capsys)
    assert loss["norm_rel"] < 1e-6


def test_check_mlx_passes_every_rung_with_the_exact_erf_gelu(capsys):
    assert passing_check("mlx", "float32", capsys, gelu="erf", steps=10)["norm_rel"] < 1e-6


def test_float64_is_refused_because_mlx_float64_exp_is_float32_accurate(capsys):
    """When this fails, MLX computes exp in real float64: add float64 to MlxBackend.dtypes
    and check it (the ladder will say whether softmax and fast.layer_norm followed)."""
    x = np.linspace(-20.0, 5.0, 1001)
    err = np.abs(np.array(mx.exp(mx.array(x, dtype=mx.float64))) / np.exp(x) - 1.0).max()
    assert err > FLOAT64_EXP_ERROR
    assert main(["check", "mlx", "--dtype", "float64"]) == 2
    assert "not float64-accurate" in capsys.readouterr().err


def test_greedy_and_sampled_generation_through_the_kv_cache_conforms():
    # float32 logits pick the same tokens as float64 ones here (no near-ties)
    assert_generation_conforms(MlxBackend(SPEC, dtype="float32"))


def test_cached_logits_equal_the_full_forward():
    model = MlxBackend(SPEC, dtype="float32")
    model.load_state(init_params(SPEC, seed=3))
    seq = np.random.default_rng(2).integers(0, SPEC.vocab_size, (2, SPEC.block_size))
    cached = [model.prefill(seq[:, :4])] + [model.decode(seq[:, t:t + 1]) for t in range(4, SPEC.block_size)]
    full = model.forward(seq)[0][:, 3:]  # (B, T - 3, V)
    np.testing.assert_allclose(np.stack(cached, axis=1), full, rtol=1e-5, atol=1e-5)


def test_train_step_keeps_the_loss_on_the_device_and_equals_the_reference_step():
    params = init_params(SPEC)
    x, y = np.random.default_rng(0).integers(0, SPEC.vocab_size, (2, 4, SPEC.block_size))
    ref = NumpyBackend(SPEC, dtype="float64")
    model = MlxBackend(SPEC, dtype="float32")
    for b in (ref, model):
        b.load_state(params)
    # three steps: the loss of each is the function of the parameters the last update made
    # (final parameters are the ladder's trajectory level, with the tolerances they need)
    for lr in (1e-2, 5e-3, 5e-3):
        loss = model.train_step(x, y, lr)
        assert isinstance(loss, mx.array) and loss.dtype == mx.float32
        assert float(loss) == pytest.approx(ref.train_step(x, y, lr), rel=1e-6)


def test_step_returns_the_norm_before_clipping():
    x = np.random.default_rng(0).integers(0, SPEC.vocab_size, (2, 4, SPEC.block_size))
    norms = []
    for b in (NumpyBackend(SPEC, dtype="float64"), MlxBackend(SPEC, dtype="float32")):
        b.load_state(init_params(SPEC))
        b.forward(x[0], x[1])
        grads = b.backward()
        norms.append((b.step(1e-2), np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))))
    assert norms[0][0] > 1.0  # the clip is active
    assert norms[1][0] == pytest.approx(norms[1][1], rel=1e-6) == pytest.approx(norms[0][0], rel=1e-5)


def test_without_mlx_backends_and_check_give_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(mlx_backend, "mx", None)
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert not rows["mlx"]["available"] and "pip install 'gptbench[mlx]'" in rows["mlx"]["reason"]
    assert main(["check", "mlx", "--dtype", "float32"]) == 2
    assert "pip install 'gptbench[mlx]'" in capsys.readouterr().err
