"""The optimizer semantics against independent truth: the learning-rate schedule against
nanoGPT's get_lr, written out here from its definition (train.py: linear warmup from
lr/(warmup+1), cosine decay to min_lr = lr/10 at lr_decay_iters, min_lr after). AdamW
itself is checked against torch.optim.AdamW in test_numpy_ref.py."""

import math

import pytest

from gptspec.optim import Schedule


def nanogpt_get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


@pytest.mark.parametrize("lr, warmup, steps", [(1e-3, 100, 5000), (6e-4, 10, 200), (1e-2, 0, 50), (3e-3, 7, 8)])
def test_lr_at_is_nanogpts_get_lr_at_every_step(lr, warmup, steps):
    schedule = Schedule(lr=lr, warmup_steps=warmup, decay_steps=steps)
    for it in range(steps + 20):
        assert schedule.lr_at(it) == pytest.approx(nanogpt_get_lr(it, lr, warmup, steps, lr / 10), rel=1e-12), it


def test_schedule_landmarks():
    s = Schedule(lr=1e-3, warmup_steps=10, decay_steps=110)
    assert s.lr_at(0) == pytest.approx(1e-3 / 11)
    assert s.lr_at(9) == pytest.approx(1e-3 * 10 / 11)
    assert s.lr_at(10) == pytest.approx(1e-3)  # the peak, where the cosine starts
    assert s.lr_at(60) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # half way down
    assert s.lr_at(110) == pytest.approx(1e-4) == s.lr_at(10_000)  # the floor: lr / 10


def test_the_final_rate_is_min_lr_when_given():
    """nanoGPT's recipes set min_lr themselves (train_shakespeare_char: 1e-4 for lr 1e-3)."""
    schedule = Schedule(lr=1e-3, warmup_steps=100, decay_steps=5000, min_lr=2e-4)
    for it in range(0, 5100, 7):
        assert schedule.lr_at(it) == pytest.approx(nanogpt_get_lr(it, 1e-3, 100, 5000, 2e-4), rel=1e-12), it
    assert Schedule(lr=3e-3, warmup_steps=0, decay_steps=9, min_lr=3e-3).lr_at(5) == pytest.approx(3e-3)
