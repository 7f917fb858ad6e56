"""Deliberately broken backends, each built on a real one with one bug: every one must
fail the conformance ladder, and the report must name the first check that diverges."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.numpy_ref import NumpyBackend
from backends.torch_eager import TorchBackend
from gptspec.spec import preset
from gptspec.weights import init_params
from suite.cli import main
from workloads.conformance.ladder import run_ladder, training_batches
from workloads.train import config_for

SPEC = preset("tiny")


# --- op bugs: level 1 names the op ---------------------------------------------------------
class NoCausalMask(TorchBackend):
    attention = staticmethod(lambda q, k, v: F.scaled_dot_product_attention(q, k, v))


class NoScale(TorchBackend):
    attention = staticmethod(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0))


class LayerNormEps1e3(TorchBackend):
    layernorm = staticmethod(lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, 1e-3))


class ErfGelu(TorchBackend):
    gelu = staticmethod(lambda x: F.gelu(x))


def _shifted_embedding(idx, wte, wpe, start=0):
    pos = (torch.arange(start, start + idx.shape[1], device=idx.device) + 1) % wpe.shape[0]
    return F.embedding(idx, wte) + wpe[pos]


class PositionsShifted(TorchBackend):
    embedding = staticmethod(_shifted_embedding)


# --- optimizer bugs: level 3 names the step ------------------------------------------------
class NoBiasCorrection(NumpyBackend):
    def step(self, lr):
        self.t = 10**6  # beta ** t underflows to 0: both corrections become 1
        return super().step(lr)


class DecayEverything(TorchBackend):
    def _param_groups(self):
        return [{"params": list(self.params.values()), "weight_decay": self.optim.weight_decay}]


class NoClipping(TorchBackend):
    def _clip_grads(self):
        return torch.nn.utils.get_total_norm([p.grad for p in self.params.values()])


# --- output bug: level 2 names the tensor --------------------------------------------------
class ConstantLogits(NumpyBackend):
    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        return np.full_like(logits, logits.mean()), loss


def first_clipped_step():
    """The first step at which the reference's gradient norm exceeds the clip: a backend that
    does not clip first differs in the loss of the step after it."""
    ref = NumpyBackend(SPEC, dtype="float64")
    ref.load_state(init_params(SPEC))
    schedule = config_for(SPEC.name, steps=50, batch_size=8).schedule()
    for step, (x, y) in enumerate(training_batches(SPEC, 50, 8, seed=0)):
        ref.forward(x, y)
        ref.backward()
        if ref.step(schedule.lr_at(step)) > 1.0:
            return step
    raise AssertionError("the reference never clips in 50 steps: the NoClipping mutant would go unseen")


MUTANTS = [
    (NoCausalMask, "ops.attention.out", None),
    (NoScale, "ops.attention.out", None),
    (LayerNormEps1e3, "ops.layernorm.out", None),
    (ErfGelu, "ops.gelu.out", None),
    (PositionsShifted, "ops.embedding.out", None),
    (ConstantLogits, "logits", None),
    (NoBiasCorrection, "trajectory.loss", 1),  # the first update is already wrong
    (DecayEverything, "trajectory.loss", 1),
    (NoClipping, "trajectory.loss", "first clipped + 1"),
]


@pytest.mark.parametrize("cls, first, step", MUTANTS, ids=[m[0].__name__ for m in MUTANTS])
def test_mutant_fails_and_the_report_names_where(cls, first, step):
    report = run_ladder(cls(SPEC, dtype="float64"))
    assert not report.ok
    row = report.first_failure
    assert row.name == first, report.to_text()
    if step is not None:
        expected = first_clipped_step() + 1 if step == "first clipped + 1" else step
        assert row.first_bad == (expected,), report.to_text()
    if issubclass(cls, NumpyBackend):  # no op_vjp: level 1 is skipped, and the report says so
        assert any("level 1 (ops) skipped" in n for n in report.notes)
    # far outside the tolerance, not a borderline miss
    assert row.norm_rel > 100 * row.tol.norm_rtol or row.max_scaled > 100 * row.tol.atol


def test_decay_on_biases_and_layernorm_shows_in_those_final_params():
    rows = {r.name: r for r in run_ladder(DecayEverything(SPEC, dtype="float64"), levels=("trajectory",)).rows}
    assert not rows["final.h.0.ln_1.weight"].ok and not rows["final.ln_f.bias"].ok
    assert rows["final.wte.weight"].norm_rel < 1e-2  # matrices decay in both: only small knock-on drift


def test_check_cli_fails_a_mutant_with_exit_1_and_names_the_op(capsys):
    assert main(["check", "test_mutants:NoScale", "--dtype", "float32", "--steps", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out.splitlines()[-1] and "first divergence: ops.attention.out" in out
