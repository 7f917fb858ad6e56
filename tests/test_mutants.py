"""Deliberately broken backends, each built on a real one with one bug: every one must
fail the conformance ladder, and the report must name the first check that diverges."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends import numpy_ref as R
from backends.numpy_ref import NumpyBackend
from backends.torch_eager import TorchBackend
from gptspec.spec import preset
from gptspec.weights import init_params
from suite.cli import main
from workloads.conformance.ladder import LEVELS, run_ladder, training_batches
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
    """The exact GELU where the spec says tanh."""
    gelu = staticmethod(lambda x: F.gelu(x))


class TanhGelu(TorchBackend):
    """The tanh GELU where the spec says erf (a converted nanoGPT model)."""
    gelu = staticmethod(lambda x: F.gelu(x, approximate="tanh"))


class NumpyTanhGelu(NumpyBackend):
    """The reference's own tanh GELU on an erf spec: no op level, the whole model must show it."""
    def _as_tanh(self, method, *args, **kw):
        spec, self.spec = self.spec, self.spec.replace(gelu="tanh")
        try:
            return method(*args, **kw)
        finally:
            self.spec = spec

    def _run(self, *args, **kw):
        return self._as_tanh(super()._run, *args, **kw)

    def backward(self):
        return self._as_tanh(super().backward)


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


# --- the rungs beyond training: evaluation, a separate step, generation ----------------------
class LossLastPositionOnly(NumpyBackend):
    """loss() -- validation curves, time to target -- averages only the last position."""
    def loss(self, idx, targets):
        logits, _ = self.forward(idx)
        return float(_ce(logits[:, -1], targets[:, -1]))


class ShadowedLoss(NumpyBackend):
    """Keeps its loss as `self.loss`, hiding Backend.loss (what the minimal example once did)."""
    def forward(self, idx, targets=None):
        logits, self.loss = super().forward(idx, targets)
        return logits, self.loss


class StepUpdatesNothing(NumpyBackend):
    """train_step is fused and right; step() on its own returns the norm and updates nothing."""
    def step(self, lr):
        saved = self.state()
        norm = super().step(lr)
        self.params = saved
        return norm

    def train_step(self, x, y, lr):
        _, loss = NumpyBackend.forward(self, x, y)
        NumpyBackend.backward(self)
        NumpyBackend.step(self, lr)
        return loss


def _ce(logits, targets):
    z = logits - logits.max(-1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, targets[:, None], -1)[:, 0])


class _PatchedAttention(NumpyBackend):
    """Runs one generation hook with numpy_ref's attention (or its mask) replaced."""
    hook, target, patch = "decode", "attention_forward", None

    def _patched(self, fn, arg):
        original = getattr(R, self.target)
        setattr(R, self.target, self.patch(original))
        try:
            return fn(arg)
        finally:
            setattr(R, self.target, original)

    def prefill(self, idx):
        return self._patched(super().prefill, idx) if self.hook == "prefill" else super().prefill(idx)

    def decode(self, tok):
        return self._patched(super().decode, tok) if self.hook == "decode" else super().decode(tok)


class PrefillNoCausalMask(_PatchedAttention):
    """The prompt is encoded with every position seeing the whole prompt: its last logits are
    right, the cached keys and values of the second layer are not."""
    hook, target = "prefill", "_causal_mask"
    patch = staticmethod(lambda original: lambda Tq, Tk, dtype: np.zeros((Tq, Tk), dtype))


class DecodeReadsCacheOneStepLate(_PatchedAttention):
    """A decoded token attends over the cache as it was before its own keys were written."""
    patch = staticmethod(lambda original: lambda q, k, v: original(q, k[:, :, :-1], v[:, :, :-1])
                         if k.shape[2] > 1 else original(q, k, v))


class DropsOldestTokenOfAFullWindow(_PatchedAttention):
    """Keeps block_size - 1 keys: once the context is full, its oldest token is lost."""
    patch = staticmethod(lambda original: lambda q, k, v: original(q, k[:, :, 1:], v[:, :, 1:])
                         if k.shape[2] == SPEC.block_size else original(q, k, v))


class TorchPrefillNoCausalMask(TorchBackend):
    """The torch backend's prompt encoded through its KV cache without the causal mask."""
    def prefill(self, idx):
        ops = self.module.h[0].attn.ops  # the model's op table, shared by every layer
        causal, ops.attention = ops.attention, lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
        try:
            return super().prefill(idx)
        finally:
            ops.attention = causal


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
    (LossLastPositionOnly, "eval.loss", 0),
    (StepUpdatesNothing, "step.grad_norm", 1),  # the second step starts from unchanged weights
    # in a 2-layer model the prompt's last position already sees what the mask should hide
    (PrefillNoCausalMask, "generate.greedy.logits", 0),
    (DecodeReadsCacheOneStepLate, "generate.greedy.logits", 1),
    (DropsOldestTokenOfAFullWindow, "generate.greedy.logits", SPEC.block_size - 3),  # prompt of 3
    (TorchPrefillNoCausalMask, "generate.greedy.logits", 0),
    (ShadowedLoss, "eval", None),  # loss() raises: the level fails, saying why
]
# optimizer bugs, on the trajectory alone: the loss of the step after the first wrong update
OPTIMIZER_MUTANTS = [
    (NoBiasCorrection, "trajectory.loss", 1),  # the first update is already wrong
    (DecayEverything, "trajectory.loss", 1),
    (NoClipping, "trajectory.loss", "first clipped + 1"),
]


@pytest.mark.parametrize("cls, first, step", MUTANTS + OPTIMIZER_MUTANTS,
                         ids=[m[0].__name__ for m in MUTANTS + OPTIMIZER_MUTANTS])
def test_mutant_fails_and_the_report_names_where(cls, first, step):
    levels = ("trajectory",) if (cls, first, step) in OPTIMIZER_MUTANTS else LEVELS
    report = run_ladder(cls(SPEC, dtype="float64"), levels=levels)
    assert not report.ok
    row = report.first_failure
    assert row.name == first, report.to_text()
    if step is not None:
        expected = first_clipped_step() + 1 if step == "first clipped + 1" else step
        assert row.first_bad[0] == expected, report.to_text()
    if issubclass(cls, NumpyBackend) and "ops" in levels:  # no op_vjp: level 1 is skipped, and the report says so
        assert any("level 1 (ops) skipped" in n for n in report.notes)
    # far outside the tolerance, not a borderline miss
    assert row.norm_rel > 100 * row.tol.norm_rtol or row.max_scaled > 100 * row.tol.atol or \
        row.note.startswith("raised")


@pytest.mark.parametrize("cls, first", [(TanhGelu, "ops.gelu.out"), (NumpyTanhGelu, "logits")])
def test_a_tanh_gelu_fails_an_erf_spec(cls, first):
    """nanoGPT's models are erf: the ladder must tell a backend that computes tanh anyway."""
    report = run_ladder(cls(SPEC.replace(gelu="erf"), dtype="float64"), levels=("ops", "step0"))
    assert not report.ok and report.first_failure.name == first, report.to_text()
    row = report.first_failure
    assert row.norm_rel > 100 * row.tol.norm_rtol


def test_erf_gelu_mutant_passes_an_erf_spec():
    """ErfGelu fails the tanh spec (MUTANTS above) for computing erf, not for being a mutant."""
    assert run_ladder(ErfGelu(SPEC.replace(gelu="erf"), dtype="float64"), levels=("ops", "step0")).ok


@pytest.mark.parametrize("cls", [m[0] for m in OPTIMIZER_MUTANTS], ids=[m[0].__name__ for m in OPTIMIZER_MUTANTS])
def test_the_separate_step_level_sees_every_optimizer_bug_too(cls):
    rows = run_ladder(cls(SPEC, dtype="float64"), levels=("step",)).rows
    assert not all(r.ok for r in rows)


def test_decay_on_biases_and_layernorm_shows_in_those_final_params():
    rows = {r.name: r for r in run_ladder(DecayEverything(SPEC, dtype="float64"), levels=("trajectory",)).rows}
    assert not rows["final.h.0.ln_1.weight"].ok and not rows["final.ln_f.bias"].ok
    assert rows["final.wte.weight"].norm_rel < 1e-2  # matrices decay in both: only small knock-on drift


def test_check_cli_fails_a_mutant_with_exit_1_and_names_the_op(capsys):
    assert main(["check", "test_mutants:NoScale", "--dtype", "float32", "--steps", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out.splitlines()[-1] and "first divergence: ops.attention.out" in out
