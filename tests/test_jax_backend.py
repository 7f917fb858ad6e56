"""The JAX backend against the float64 NumPy reference: the conformance ladder through the
CLI in float64 and float32, KV-cache generation, the jitted train_step, and what `gptbench`
says where jax is missing."""

import json

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax is not installed: pip install 'gptbench[jax]'")

from ladder_checks import (  # noqa: E402
    assert_generation_conforms,
    passing_check,
    step_norms,
)

import backends.jax_backend as jax_backend  # noqa: E402
from backends.jax_backend import JaxBackend  # noqa: E402
from backends.numpy_ref import NumpyBackend  # noqa: E402
from gptspec.spec import preset  # noqa: E402
from gptspec.weights import init_params  # noqa: E402
from suite.cli import main  # noqa: E402

SPEC = preset("tiny")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_jax_passes_every_rung_of_the_ladder(dtype, capsys):
    loss = passing_check("jax", dtype, capsys)
    assert loss["norm_rel"] < (1e-14 if dtype == "float64" else 1e-6)


def test_check_jax_passes_every_rung_with_the_exact_erf_gelu(capsys):
    assert passing_check("jax", "float64", capsys, gelu="erf", steps=10)["norm_rel"] < 1e-14


def test_greedy_and_sampled_generation_through_the_kv_cache_conforms():
    assert_generation_conforms(JaxBackend(SPEC, dtype="float64"))


def test_train_step_keeps_the_loss_on_the_device_and_equals_the_reference_step():
    params = init_params(SPEC)
    x, y = np.random.default_rng(0).integers(0, SPEC.vocab_size, (2, 4, SPEC.block_size))
    ref = NumpyBackend(SPEC, dtype="float64")
    model = JaxBackend(SPEC, dtype="float64")
    for b in (ref, model):
        b.load_state(params)
    for lr in (1e-2, 5e-3):  # two steps: the second uses the moments and bias corrections of t=2
        loss = model.train_step(x, y, lr)
        assert isinstance(loss, jax.Array)
        assert float(loss) == pytest.approx(ref.train_step(x, y, lr), rel=1e-14)
    for name, p in ref.state().items():
        np.testing.assert_allclose(model.state()[name], p, rtol=1e-12, atol=1e-12, err_msg=name)


def test_step_returns_the_norm_before_clipping():
    norms = step_norms(JaxBackend(SPEC, dtype="float64"))
    assert norms[0][0] > 1.0  # the clip is active
    assert norms[1][0] == pytest.approx(norms[1][1], rel=1e-12) == pytest.approx(norms[0][0], rel=1e-12)


def test_float32_stays_float32_after_a_float64_backend_turned_x64_on():
    JaxBackend(SPEC, dtype="float64")
    model = JaxBackend(SPEC, dtype="float32")
    model.load_state(init_params(SPEC))
    x = np.zeros((2, SPEC.block_size), dtype=np.int64)
    assert model.train_step(x, x, 1e-3).dtype == np.float32
    assert {p.dtype for p in model.state().values()} == {np.dtype(np.float32)}


def test_without_jax_backends_and_check_give_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(jax_backend, "jax", None)
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert not rows["jax"]["available"] and "pip install 'gptbench[jax]'" in rows["jax"]["reason"]
    assert main(["check", "jax"]) == 2
    assert "pip install 'gptbench[jax]'" in capsys.readouterr().err


class CacheMaskSeesTheWholeWindow(JaxBackend):
    """Through the KV cache, every query may see the keys up to start + T (the last query's
    reach): a prompt is encoded without its causal mask, a decoded token is unaffected."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        jitted = self._extend

        def extend(*a):  # traced on first use of each shape: patch the mask while it traces
            real = jax_backend.masked_attention
            jax_backend.masked_attention = lambda q, k, v, allowed: real(
                q, k, v, jax.numpy.broadcast_to(allowed[-1:], allowed.shape))
            try:
                return jitted(*a)
            finally:
                jax_backend.masked_attention = real

        self._extend = extend


def test_a_cache_mask_that_lets_every_query_see_the_window_fails_the_generate_level():
    from workloads.conformance.ladder import run_ladder

    report = run_ladder(CacheMaskSeesTheWholeWindow(SPEC, dtype="float64"), levels=("generate",))
    first = report.first_failure
    assert not report.ok and first.name == "generate.greedy.logits", report.to_text()
    assert first.first_bad[0] == 0  # the prompt's own logits: the second layer saw its future
    assert first.norm_rel > 100 * first.tol.norm_rtol
