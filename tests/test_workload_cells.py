"""Train, generate and attention cells: their numbers recomputed from the record's raw
data (per-step times, per-token times, FLOP formulas) and checked against references."""

from importlib.util import find_spec

import numpy as np
import pytest

from backends.numpy_ref import NumpyBackend
from suite.cell import Cell
from suite.record import Limits
from suite.runner import run_cell
from workloads import train
from workloads.attention import causal_flops


def test_train_cell_metrics_follow_from_its_raw_steps():
    opts = {"steps": 60, "eval_interval": 10, "target_val_loss": 1.8}
    rec = run_cell(Cell.make("numpy", "train", "tiny", options=opts), Limits(timeout_s=300)).to_dict()
    assert rec["status"] == "ok", rec["traceback"]
    m = rec["metrics"]
    assert len(m["losses"]) == len(m["step_ms"]) == 60
    assert [s for s, _ in m["val_losses"]] == [10, 20, 30, 40, 50, 60]
    # tokens/s is the median of the timed steps, warm-up excluded
    median_ms = np.median(m["step_ms"][m["config"]["warmup_steps"]:])
    assert m["tokens_per_s"] == pytest.approx(32 * 16 / (median_ms / 1e3))
    assert m["tokens_per_s_q1"] <= m["tokens_per_s"] <= m["tokens_per_s_q3"]
    # MFU against the host's calibrated peak, which no real training step can beat
    assert m["mfu"] == pytest.approx(m["tokens_per_s"] * m["flops_per_token"] / m["peak_flops_per_s"])
    assert 0 < m["mfu"] < 1
    assert m["floor_gap"] == pytest.approx(m["final_val_loss"] - m["entropy_floor"])
    reached = [(s, v) for s, v in m["val_losses"] if v <= 1.8]
    assert reached and reached[0][0] < 60, f"tiny did not reach 1.8 early: {m['val_losses']}"
    step = reached[0][0]
    assert m["steps_to_target"] == step
    assert m["time_to_target_s"] == pytest.approx(sum(m["step_ms"][:step]) / 1e3)


def test_train_cell_targets_the_entropy_floor_by_default():
    cell = Cell.make("numpy", "train", "tiny", options={"steps": 2})
    m = train.run(NumpyBackend(cell.spec_obj()), cell)
    assert m["target_val_loss"] == pytest.approx(m["entropy_floor"] + train.SYNTHETIC_TARGET_GAP)
    assert m["time_to_target_s"] is None and m["config"]["eval_interval"] == 1


def _expected_refills(prompt: int, new: int, block: int) -> int:
    """Base.generate's cache policy, replayed: a full cache is refilled from block // 2."""
    cache, refills = prompt, 0
    for _ in range(new):
        if cache == block:
            cache, refills = block // 2, refills + 1
        else:
            cache += 1
    return refills


def test_generate_cell_times_every_token_and_keeps_the_text():
    new = 40
    rec = run_cell(Cell.make("numpy", "generate", "tiny", options={"max_new_tokens": new, "prompt_tokens": 5}), Limits(timeout_s=120)).to_dict()
    assert rec["status"] == "ok", rec["traceback"]
    m = rec["metrics"]
    assert len(m["token_ms"]) == new and all(t > 0 for t in m["token_ms"])
    assert m["token_ms_median"] == pytest.approx(np.median(m["token_ms"]))
    assert 0 < m["time_to_first_token_ms"] < 1e3 * m["total_s"]
    assert m["tokens_per_s"] == pytest.approx(new / m["total_s"])
    assert m["n_refills"] == _expected_refills(5, new, 16) == 4
    # the text: the prompt from the validation split, then one character per new token
    assert len(m["prompt_text"]) == 5 and m["sample_text"].startswith(m["prompt_text"])
    # untrained tiny has 32 ids for the corpus's 8 letters: only those are sampled
    assert len(m["sample_text"]) == 5 + new and set(m["sample_text"]) <= set("abcdefgh")
    # the warm-up is the same generation: what it cost beyond the timed one is apart, never in a rate
    assert m["compile_s"] == pytest.approx(max(0.0, m["warmup_s"] - m["total_s"]))
    assert m["decode_tokens_per_s"] == pytest.approx(1e3 / m["token_ms_median"])


def test_causal_flops_follow_the_flashattention_convention():
    B, H, T, D = 2, 3, 128, 64
    assert causal_flops(B, H, T, D, "forward") == 2 * B * H * T * T * D  # 4BHT²D / 2
    assert causal_flops(B, H, T, D, "backward") == 2.5 * causal_flops(B, H, T, D, "forward")
    assert causal_flops(B, H, T, D, "fwd_bwd") == 3.5 * causal_flops(B, H, T, D, "forward")


@pytest.mark.parametrize("provider", ["numpy", "math", "sdpa"])
def test_attention_cell_rows_agree_with_the_reference(provider):
    if provider != "numpy" and find_spec("torch") is None:  # only the child imports torch
        pytest.skip("torch is not installed")
    opts = {"seq_lens": [32, 64], "head_dims": [16], "batch_size": 2, "n_head": 2, "repeats": 3}
    rec = run_cell(Cell.make(provider, "attention", "tiny", options=opts), Limits(timeout_s=120)).to_dict()
    assert rec["status"] == "ok", rec["traceback"]
    rows = rec["metrics"]["rows"]
    assert [(r["T"], r["pass"]) for r in rows] == [(T, p) for T in (32, 64) for p in ("forward", "backward", "fwd_bwd")]
    for r in rows:
        assert r["flops"] == causal_flops(2, 2, r["T"], 16, r["pass"])
        assert r["tflops_per_s"] == pytest.approx(r["flops"] / (r["ms_median"] / 1e3) / 1e12)
        assert r["max_abs_err"] < 1e-5  # float32 against the float64 reference
        assert 0 < r["mfu"] < 1
    assert ("torch" in rec["heavy_modules"]) == (provider != "numpy")


def test_unknown_attention_provider_is_unavailable():
    rec = run_cell(Cell.make("flash9", "attention", "tiny"), Limits(timeout_s=60)).to_dict()
    assert rec["status"] == "unavailable" and "no attention provider 'flash9'" in rec["reason"]
