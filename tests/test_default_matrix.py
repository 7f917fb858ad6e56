"""The embedded default (`gptbench run` with no file) measures something: every CPU backend
trains to its target and is proven conformant on its host class, attention is swept to
realistic lengths, generation samples readable text from learned weights, and the low-RAM
class gets its memory frontier. The two cells run here are the default's own, as the
matrix file configures them."""

from importlib.util import find_spec

import pytest

from backends.numpy_ref import NumpyBackend
from gptspec.data import load_corpus
from suite import matrix as M
from suite.record import Limits
from suite.runner import run_cell
from workloads import options, train

CPU_BACKENDS = {"numpy", "torch", "compile", "jax", "mlx"}


@pytest.fixture(scope="module")
def cells():
    return M.default_matrix().cells()


def _one(cells, **want):
    """The one cell matching want (of repeated cells, the first repeat)."""
    found = [c for c, _ in cells if all(getattr(c, k) == v for k, v in want.items())
             and c.options.get("repeat") in (None, 0)]
    assert len(found) == 1, (want, found)
    return found[0]


def test_every_cpu_backend_trains_on_the_local_host_and_each_training_is_proven(cells):
    trains = {(c.host_class, c.backend, c.dtype) for c, _ in cells if c.workload == "train"}
    assert {b for h, b, _ in trains if h == "local"} == CPU_BACKENDS
    # three repeats of each, interleaved: every backend's repeat 0 before any repeat 1 (reports/stats.py)
    local = [c for c, _ in cells if c.workload == "train" and c.host_class == "local"]
    assert [c.options["repeat"] for c in local] == [0] * 5 + [1] * 5 + [2] * 5
    proofs = {(c.host_class, c.backend, c.dtype) for c, _ in cells if c.workload == "conformance"}
    assert trains <= proofs  # the headline ranks only a (backend, dtype) proven on its host class
    for c, _ in cells:
        if c.workload == "train":  # to the synthetic corpus's target: the default's
            opts = options(c)
            assert opts["corpus"] == "synthetic" and opts["target_val_loss"] is None
            assert opts["eval_interval"] and opts["steps"] % opts["eval_interval"] == 0


def test_attention_generation_and_the_frontier_measure_realistic_shapes(cells):
    for provider in ("numpy", "math", "sdpa"):
        o = options(_one(cells, workload="attention", backend=provider))
        assert len(o["seq_lens"]) >= 4 and max(o["seq_lens"]) >= 512 and o["head_dims"] == [64]
    for c, _ in cells:
        if c.workload == "generate":
            o = options(c)
            assert c.spec_obj().block_size >= 128 and o["max_new_tokens"] >= 128 and o["pretrain_steps"] > 0
            assert o["warmup_tokens"] == o["max_new_tokens"]  # compilation before the timed run, not in it
    frontier = {(c.backend, c.spec["name"], hc.budget_mb) for c, hc in cells if c.workload == "frontier"}
    assert frontier == {("numpy", "lumgpt", 700), ("torch", "lumgpt", 700)}
    assert {c.host_class for c, _ in cells if c.workload == "frontier"} == {"lowram"}


def test_the_numpy_train_cell_reaches_its_target_with_a_margin(cells):
    """The default's numpy train cell as configured; torch, compile, jax and mlx compute the
    same function (their conformance) and were measured to reach it too (docs/matrix.md)."""
    cell = _one(cells, workload="train", backend="numpy", host_class="local")
    m = train.run(NumpyBackend(cell.spec_obj()), cell)
    assert m["status"] == "ok" and m["target_val_loss"] == pytest.approx(m["entropy_floor"] + 0.1)
    assert m["steps_to_target"] is not None, m["val_losses"]
    assert m["steps_to_target"] <= 0.85 * len(m["losses"]), m["val_losses"]  # a margin for the other backends


def test_the_generate_cell_samples_128_letters_from_weights_that_learned_the_corpus(cells):
    cell = _one(cells, workload="generate", backend="numpy", host_class="local")
    r = run_cell(cell, Limits(timeout_s=300, threads=2))
    assert r.status == "ok", (r.reason, r.traceback)
    m = r.metrics
    letters = set(load_corpus("synthetic").tokenizer.chars)
    assert len(m["sample_text"]) == m["prompt_tokens"] + m["new_tokens"] >= 8 + 128
    assert set(m["sample_text"]) <= letters and m["sample_text"].startswith(m["prompt_text"])
    # learned: near the exact floor, far below the letters' entropy without context (log 8)
    assert m["pretrain_val_loss"] < m["entropy_floor"] + 0.1
    assert m["time_to_first_token_ms"] > 0 and m["decode_tokens_per_s"] > 0 and m["compile_s"] >= 0


@pytest.mark.skipif(find_spec("jax") is None, reason="jax is not installed")
def test_jax_generation_keeps_its_compilation_out_of_every_rate():
    """jax.jit compiles each prompt length: the warm-up generation holds it, compile_s says how
    much, and the timed run, the same generation, compiles nothing."""
    cells = M.default_matrix().cells()
    cell = _one(cells, workload="generate", backend="jax", host_class="local")
    cell = cell.__class__(**{**cell.to_dict(), "options": {**cell.options, "pretrain_steps": 0}})
    r = run_cell(cell, Limits(timeout_s=300, threads=2))
    assert r.status == "ok", (r.reason, r.traceback)
    m = r.metrics
    assert m["compile_s"] > 10 * m["total_s"]  # compiling takes seconds; 128 tokens, milliseconds
    assert m["token_ms_max"] < 1e3 * m["compile_s"] / 4  # no compilation inside the timed tokens


@pytest.mark.skipif(find_spec("jax") is None, reason="jax is not installed")
def test_jax_training_states_its_compilation_inside_the_time_to_target():
    """jax.jit compiles the training step at its first call: compile_s is that call's excess over
    the median step (as for every backend that does not report its own), and the headline's
    JSON carries it for the jax row."""
    from reports.headline import headline, to_json

    cell = next(c for c, _ in M.default_matrix().cells()
                if c.workload == "train" and c.backend == "jax" and c.options.get("repeat") == 0)
    cell = cell.__class__(**{**cell.to_dict(), "options": {**cell.options, "steps": 30, "eval_interval": 10,
                                                           "target_val_loss": 5.0}})
    r = run_cell(cell, Limits(timeout_s=300, threads=2))
    assert r.status == "ok", (r.reason, r.traceback)
    m = r.metrics
    steps = m["step_ms"]
    median = sorted(steps[2:])[len(steps[2:]) // 2]
    assert m["compile_source"] == "first calls' excess"
    assert m["compile_s"] == pytest.approx(sum(max(0.0, t - median) for t in steps[:2]) / 1e3, rel=0.05)
    assert m["compile_s"] > 20 * median / 1e3  # compiling takes far longer than a step
    assert m["compile_s"] <= m["time_to_target_s"]  # reached at the first evaluation, compilation in it
    row, = to_json(headline([r.to_dict()]))
    assert row["backend"] == "jax" and row["compile_s"] == pytest.approx(m["compile_s"]) and row["compile_s"] > 0
    text = headline([r.to_dict()]).text().iloc[0]["time to target [95% interval]"]
    # three significant figures, trailing zeros kept (2.10, not 2.1): '#' keeps them, and its
    # trailing point of a whole number (123.) goes
    assert f"compile {format(m['compile_s'], '#.3g').rstrip('.')} s of it" in text
