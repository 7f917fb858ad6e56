"""The NumPy reference against independent truth: closed forms, naive loops, finite
differences in float64, torch's AdamW, and the exact entropy floor of the synthetic corpus."""

import math

import numpy as np
import pytest

from backends import numpy_ref as R
from backends.base import sample_next
from gptspec.data import load_corpus
from gptspec.spec import GPTSpec, preset
from gptspec.weights import init_params
from workloads.conformance.gradcheck import REL_TOL, gradcheck
from workloads.train import TrainConfig, train

MICRO = GPTSpec(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, name="micro")
rng = np.random.default_rng(0)


# --- ops against naive formulas -----------------------------------------------------------
def test_attention_matches_a_per_head_loop_with_causal_mask():
    B, NH, T, HS = 2, 3, 7, 4
    q, k, v = (rng.standard_normal((B, NH, T, HS)) for _ in range(3))
    y, _ = R.attention_forward(q, k, v)
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                s = np.array([q[b, h, t] @ k[b, h, j] / math.sqrt(HS) for j in range(t + 1)])
                p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
                np.testing.assert_allclose(y[b, h, t], p @ v[b, h, :t + 1], rtol=1e-12)


def test_attention_with_a_kv_prefix_equals_the_last_rows_of_full_attention():
    q, k, v = (rng.standard_normal((1, 2, 9, 4)) for _ in range(3))
    full, _ = R.attention_forward(q, k, v)
    tail, _ = R.attention_forward(q[:, :, -3:], k, v)
    np.testing.assert_allclose(tail, full[:, :, -3:], rtol=1e-12)


def test_layernorm_gelu_and_cross_entropy_closed_forms():
    x = rng.standard_normal((3, 5, 16))
    w, b = rng.standard_normal(16), rng.standard_normal(16)
    out, _ = R.layernorm_forward(x, w, b)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)

    g, _ = R.gelu_forward(x)
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(g, tanh_form, rtol=1e-12, atol=1e-15)
    big = np.array([[-200.0, -50.0, 0.0, 50.0]], dtype=np.float32)  # exp overflow is harmless
    np.testing.assert_array_equal(R.gelu_forward(big)[0], [[0.0, 0.0, 0.0, 50.0]])

    logits, t = rng.standard_normal((2, 3, 7)), rng.integers(0, 7, (2, 3))
    loss, _ = R.cross_entropy_forward(logits, t)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert loss == pytest.approx(-np.mean(np.take_along_axis(logp, t[..., None], -1)), rel=1e-13)


def test_erf_gelu_is_x_phi_x_to_float64_rounding():
    """normal_cdf against math.erfc across both of its methods and the tails; the erf GELU and
    its hand-written derivative against the closed forms."""
    x = np.concatenate([np.linspace(-12, 12, 4801), [0.0, -1e-300, 2.1213203, -2.1213204]])
    cdf = R.normal_cdf(x)
    want = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    assert np.all(np.abs(cdf - want) <= 5e-14 * want)  # relative, down to Phi(-12) = 2e-33 (3.8e-14 measured)
    assert R.normal_cdf(np.array([38.0, -38.0, -40.0])).tolist() == pytest.approx([1.0, 2.885428e-316, 0.0], rel=1e-6)
    g, cache = R.gelu_erf_forward(x[None, :])
    np.testing.assert_allclose(g[0], x * want, rtol=5e-14, atol=1e-300)
    dg = R.gelu_erf_backward(np.ones((1, x.size)), cache)[0]
    np.testing.assert_allclose(dg, want + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi), rtol=1e-13, atol=1e-16)
    x32 = x.astype(np.float32)
    assert R.normal_cdf(x32).dtype == np.float32 and np.abs(R.normal_cdf(x32) - want).max() < 3e-7


def test_the_spec_chooses_the_gelu_the_reference_runs():
    spec, own = preset("tiny"), np.random.default_rng(5)  # its own stream: the module's is for the tests below
    x = own.integers(0, spec.vocab_size, (2, spec.block_size))
    params = {n: p + 0.3 * own.standard_normal(p.shape) for n, p in init_params(spec).items()}
    logits = {}
    for form in ("tanh", "erf"):
        model = R.NumpyBackend(spec.replace(gelu=form), dtype="float64")
        model.load_state(params)
        logits[form] = model.forward(x)[0]
    assert 1e-6 < np.abs(logits["tanh"] - logits["erf"]).max() < 1e-1  # close forms, different functions


def test_blocked_elementwise_ops_do_not_depend_on_the_block_size(monkeypatch):
    x = rng.standard_normal((64, 96)).astype(np.float32)
    whole, _ = R.gelu_forward(x)
    monkeypatch.setattr(R, "BLOCK_BYTES", 96 * 4 * 3)  # 3 rows a block, 22 blocks, 2 threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    np.testing.assert_array_equal(R.gelu_forward(x)[0], whole)
    q, k, v = (rng.standard_normal((2, 3, 40, 8)) for _ in range(3))
    y_whole, cache = R.attention_forward(q, k, v)
    grads_whole = R.attention_backward(y_whole, cache)
    monkeypatch.setattr(R, "BLOCK_BYTES", 40 * 40 * 8)  # one (batch, head) matrix a block
    y, cache = R.attention_forward(q, k, v)
    np.testing.assert_allclose(y, y_whole, rtol=1e-13)
    for a, b in zip(R.attention_backward(y, cache), grads_whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# --- gradients: finite differences in float64 ---------------------------------------------
@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_every_element_of_every_gradient_matches_finite_differences_on_micro(gelu):
    rows = gradcheck(MICRO.replace(gelu=gelu), seed=1, samples=None, perturb=0.1)
    assert len(rows) == len(MICRO.param_shapes())
    for r in rows:
        assert r.checked == r.size
        assert r.rel_err <= REL_TOL, r
        assert r.grad_norm > 0, r  # every tensor takes part in the loss


def test_every_gradient_tensor_of_tiny_matches_finite_differences():
    rows = gradcheck(preset("tiny"), seed=2, samples=12, perturb=0.1)
    assert [r.name for r in rows] == list(preset("tiny").param_shapes())
    worst = max(r.rel_err for r in rows)
    assert worst <= REL_TOL


@pytest.mark.parametrize("gelu, backward", [("tanh", "gelu_backward"), ("erf", "gelu_erf_backward")])
def test_a_wrong_gradient_is_caught(monkeypatch, gelu, backward):
    # the check itself must be able to fail: break GELU's backward slightly
    orig = getattr(R, backward)
    monkeypatch.setattr(R, backward, lambda d, c: orig(d, c) * 1.001)
    rows = {r.name: r for r in gradcheck(MICRO.replace(gelu=gelu), seed=1, samples=8, perturb=0.1)}
    assert not rows["h.0.mlp.c_fc.weight"].ok and rows["ln_f.weight"].ok


# --- the model ----------------------------------------------------------------------------
def test_initial_loss_is_log_vocab_on_tiny():
    spec = preset("tiny")
    model = R.NumpyBackend(spec)
    model.load_state(init_params(spec, 0))
    x = rng.integers(0, spec.vocab_size, (8, spec.block_size))
    logits, loss = model.forward(x, np.roll(x, -1, axis=1))
    assert logits.shape == (8, 16, 32) and logits.dtype == np.float32
    assert abs(loss - math.log(spec.vocab_size)) < 0.05


def test_float32_and_float64_forward_agree():
    spec = preset("tiny")
    params = init_params(spec, 1)
    x = rng.integers(0, spec.vocab_size, (4, spec.block_size))
    out = {}
    for dtype in ("float32", "float64"):
        m = R.NumpyBackend(spec, dtype=dtype)
        m.load_state(params)
        out[dtype] = m.forward(x, x)
    np.testing.assert_allclose(out["float32"][0], out["float64"][0], atol=2e-5)
    assert out["float32"][1] == pytest.approx(out["float64"][1], rel=1e-5)


def test_adamw_step_matches_torch_with_clipping_and_decay():
    torch = pytest.importorskip("torch")  # torch's optimizer is the independent truth here
    spec, lr = MICRO, 3e-2
    params = init_params(spec, 4, dtype=np.float64)
    model = R.NumpyBackend(spec, dtype="float64")
    model.load_state(params)
    tp = {n: torch.tensor(p, requires_grad=True) for n, p in params.items()}
    opt = torch.optim.AdamW([{"params": [tp[n] for n in tp if tp[n].ndim >= 2], "weight_decay": 0.1},
                             {"params": [tp[n] for n in tp if tp[n].ndim < 2], "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    for step in range(3):
        grads = {n: rng.standard_normal(p.shape) * (5.0 if step == 1 else 0.01) for n, p in params.items()}
        model.grads = {n: g.copy() for n, g in grads.items()}
        norm = model.step(lr)
        for n in tp:
            tp[n].grad = torch.tensor(grads[n])
        tnorm = torch.nn.utils.clip_grad_norm_(list(tp.values()), 1.0)
        opt.step()
        assert norm == pytest.approx(float(tnorm), rel=1e-12)
        for n in tp:
            np.testing.assert_allclose(model.params[n], tp[n].detach().numpy(), rtol=1e-12, atol=1e-15)


def test_generation_with_kv_cache_equals_recomputing_each_window():
    spec = MICRO.replace(vocab_size=16, block_size=8)
    model = R.NumpyBackend(spec, dtype="float64")
    # weights far from the init, so that logits differ by position and greedy text varies (its
    # own generator: the module's is shared by every test, and their order would change these)
    g = np.random.default_rng(4)
    params = {n: p + 0.5 * g.standard_normal(p.shape) for n, p in init_params(spec, 3).items()}
    model.load_state(params)
    prompt = g.integers(0, 16, (2, 3))
    seen = []
    out = model.generate(prompt, 20, temperature=0, on_logits=lambda kind, logits: seen.append((kind, logits)))
    # the documented semantics, by plain forward passes: the window is the cache contents,
    # which restart from the last block_size // 2 tokens whenever the cache is full
    seq, start, want = prompt.copy(), 0, []
    for _ in range(21):
        if seq.shape[1] - start > spec.block_size:
            start = seq.shape[1] - 1 - spec.block_size // 2 + 1
        logits, _ = model.forward(seq[:, start:])
        want.append(logits[:, -1])
        seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq[:, :-1])
    assert min(len(set(row)) for row in out[:, 3:].tolist()) >= 5  # not one repeated token
    np.testing.assert_allclose(np.stack([lg for _, lg in seen]), np.stack(want), rtol=1e-12, atol=1e-12)
    kinds = [k for k, _ in seen]  # prefill of 3, decodes up to the full 8, a refill from 4, ...
    assert kinds == ["prefill"] + ["decode"] * 5 + ["prefill"] + ["decode"] * 4 + ["prefill"] + ["decode"] * 4 + \
        ["prefill"] + ["decode"] * 4


def test_decoding_runs_one_position_per_token(monkeypatch):
    spec = preset("tiny")
    model = R.NumpyBackend(spec)
    model.load_state(init_params(spec, 0))
    lengths = []
    real_run = model._run
    monkeypatch.setattr(model, "_run", lambda idx, **kw: (lengths.append(idx.shape[1]), real_run(idx, **kw))[1])
    model.generate(np.zeros((1, 5), dtype=np.int64), 40, temperature=1.0, top_k=5, seed=1)
    # prefill of 5, then single tokens; a full cache (16) is refilled from 8 tokens
    assert lengths[0] == 5 and set(lengths[1:]) <= {1, 8}
    assert sum(lengths) < 5 + 40 + 8 * 4


def test_sampling_follows_softmax_with_temperature_and_top_k():
    logits = np.array([[2.0, 1.0, 0.0, -1.0]] * 20000)
    draws = sample_next(logits, 0.5, None, np.random.default_rng(0))
    p = np.exp(logits[0] / 0.5) / np.exp(logits[0] / 0.5).sum()
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(draws)) + 1e-9)
    top2 = sample_next(logits, 1.0, 2, np.random.default_rng(0))
    assert set(np.unique(top2)) == {0, 1}
    np.testing.assert_array_equal(sample_next(logits[:3], 0, None, None), [0, 0, 0])


def test_sampling_with_a_vocab_limit_draws_only_ids_below_it_from_their_softmax():
    # the likeliest ids (8 and 9) are the padding a tokenizer of 4 tokens cannot decode
    logits = np.array([[1.0, 0.0, 0.5, -1.0, 0.0, 0.0, 0.0, 0.0, 5.0, 4.0]] * 20000)
    draws = sample_next(logits, 1.0, None, np.random.default_rng(0), vocab_limit=4)
    p = np.exp(logits[0, :4]) / np.exp(logits[0, :4]).sum()  # the softmax over the 4 alone
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert draws.max() < 4 and np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(draws)))
    np.testing.assert_array_equal(sample_next(logits[:2], 0, None, None, vocab_limit=4), [0, 0])
    assert set(np.unique(sample_next(logits, 1.0, 2, np.random.default_rng(0), vocab_limit=4))) == {0, 2}


def test_generate_with_a_vocab_limit_samples_only_decodable_ids_and_reports_full_logits():
    spec = preset("tiny")  # vocab 32 for a tokenizer of 8
    model = R.NumpyBackend(spec)
    model.load_state({n: p + 0.5 * rng.standard_normal(p.shape) for n, p in init_params(spec, 0).items()})
    seen = []
    prompt = np.array([[0, 1, 2]])
    free = model.generate(prompt, 300, seed=1)
    out = model.generate(prompt, 300, seed=1, vocab_limit=8, on_logits=lambda kind, lg: seen.append(lg.shape))
    assert free[0, 3:].max() >= 8  # without the limit, these weights sample padding ids
    assert out.shape == (1, 303) and out[0, 3:].max() < 8 and len(set(out[0, 3:].tolist())) >= 4
    assert set(seen) == {(1, 32)}  # observers see the model's whole output


def test_training_tiny_reaches_the_entropy_floor_of_the_synthetic_corpus():
    corpus = load_corpus("synthetic")
    model = R.NumpyBackend(preset("tiny"))
    r = train(model, corpus, TrainConfig(steps=400, batch_size=32, lr=1e-2, eval_batches=16))
    assert r["status"] == "ok" and r["losses"][0] > r["final_val_loss"] + 2
    # the best possible loss is known exactly; a few hundred steps get within 0.08 nats
    assert r["entropy_floor"] < r["final_val_loss"] < r["entropy_floor"] + 0.08
    # and against the true source scored on the very same validation tokens
    assert r["final_val_loss"] - r["oracle_val_loss"] < 0.08


def test_a_learning_rate_that_blows_up_ends_in_diverged():
    model = R.NumpyBackend(preset("tiny"))
    with np.errstate(all="ignore"):
        r = train(model, load_corpus("synthetic"), TrainConfig(steps=20, lr=1e30))
    assert r["status"] == "diverged" and len(r["losses"]) < 20
    assert not math.isfinite(r["losses"][-1]) and "step" in r["reason"]
