"""Conformance: prove that a backend computes the reference's function
(docs/adding-a-backend.md, "Check it").

The ladder compares a backend, in the dtype under test, with the NumPy reference in float64,
from the same canonical weights on the same batches, under workloads/conformance/tolerances.py:

1. ops: every op the backend exposes through the optional method
       op_vjp(name, inputs, dout) -> (out, grads of the floating-point inputs)
   against numpy_ref's op_forward / op_backward, output and input gradients. A backend
   without op_vjp has this level skipped, and the report says so.
2. step0: logits, loss and every parameter's gradient at one point: the canonical init,
   perturbed so that biases and LayerNorm parameters are off their special values 0 and 1.
3. eval: loss() -- what validation curves and time-to-target use -- on fresh batches (one of
   them shorter than the block) right after load_state, with no forward before it.
4. step: forward, backward, then step(lr) on their own (not through train_step), a few
   times: the gradient norm each step() returns, then every parameter.
5. trajectory: K AdamW steps through train_step (the fast path) from the canonical init, with
   the suite's learning-rate schedule: the loss of every step, then every final parameter.
6. generate: from weights perturbed far enough that the logits are not nearly uniform, a
   greedy and a sampled (temperature, top-k, fixed seed) generation through the public
   generate, long enough to refill the context, and a greedy one under nanoGPT's sliding
   window: the logits of every model call against the reference's full forward over that
   call's context (the window rules, computed here), then the tokens against a generation
   sampled from those full-forward logits.

The report card names the first failing check in ladder order (workloads/conformance/report_card.py).
"""

from __future__ import annotations

import numpy as np

from backends import numpy_ref as ref
from backends.base import sample_next
from backends.numpy_ref import NumpyBackend
from gptspec.data import BatchSampler, MarkovSource, load_corpus
from gptspec.weights import init_params
from workloads.conformance import DEFAULT_BATCH, DEFAULT_STEPS
from workloads.conformance.report_card import STEP_STEPS, Report, Row, compare, failed_row
from workloads.conformance.tolerances import tolerance
from workloads.train import config_for

LEVELS = ("ops", "step0", "eval", "step", "trajectory", "generate")
PERTURB = 0.02  # the init's own scale: moves biases off 0 and LayerNorm weights off 1
# generation weights: init + this much noise gives logits with a spread of a few nats, so
# greedy decoding does not repeat one token and every position's logits matter
GENERATE_PERTURB = 0.3
GENERATE_BATCH = 2


# --- level 1: ops ---------------------------------------------------------------------------
def _vjp(forward, backward):
    """The reference's (inputs, dout) -> (out, input gradients) from an op pair."""
    def run(inputs, dout):
        out, cache = forward(*inputs)
        grads = backward(dout, cache)
        return out, grads if isinstance(grads, tuple) else (grads,)
    return run


def _embedding_vjp(inputs, dout):
    out, cache = ref.embedding_forward(*inputs)
    return out, ref.embedding_backward(dout, cache)


def _linear_gelu_vjp(kind):
    """The reference's linear then the spec's gelu, chained: the op a backend may fuse."""
    gelu_forward, gelu_backward = ref.gelu_ops(kind)

    def run(inputs, dout):
        h, linear_cache = ref.linear_forward(*inputs)
        out, gelu_cache = gelu_forward(h)
        return out, ref.linear_backward(gelu_backward(dout, gelu_cache), linear_cache)
    return run


def op_cases(spec, rng):
    """(op name, float64 inputs, dout, gradient names, reference vjp) for each op of the spec's
    sizes and GELU form: B=2, T=block_size. Inputs are O(1) so that every op works in its interesting range."""
    B, T, C, NH, HS, V = 2, spec.block_size, spec.n_embd, spec.n_head, spec.head_size, spec.vocab_size
    n = rng.standard_normal
    idx = rng.integers(0, V, (B, T))
    return [
        ("embedding", (idx, n((V, C)), n((T, C))), n((B, T, C)), ("dwte", "dwpe"), _embedding_vjp),
        ("layernorm", (1.0 + 3.0 * n((B, T, C)), 1.0 + 0.1 * n(C), 0.1 * n(C)), n((B, T, C)),
         ("dx", "dw", "db"), _vjp(ref.layernorm_forward, ref.layernorm_backward)),
        ("linear", (n((B, T, C)), n((4 * C, C)) / np.sqrt(C), 0.1 * n(4 * C)), n((B, T, 4 * C)),
         ("dx", "dw", "db"), _vjp(ref.linear_forward, ref.linear_backward)),
        ("attention", (n((B, NH, T, HS)), n((B, NH, T, HS)), n((B, NH, T, HS))), n((B, NH, T, HS)),
         ("dq", "dk", "dv"), _vjp(ref.attention_forward, ref.attention_backward)),
        ("gelu", (2.0 * n((B, T, 4 * C)),), n((B, T, 4 * C)), ("dx",), _vjp(*ref.gelu_ops(spec.gelu))),
        ("linear_gelu", (2.0 * n((B, T, C)), n((4 * C, C)) / np.sqrt(C), 0.1 * n(4 * C)), n((B, T, 4 * C)),
         ("dx", "dw", "db"), _linear_gelu_vjp(spec.gelu)),
        ("cross_entropy", (2.0 * n((B, T, V)), rng.integers(0, V, (B, T))), np.float64(1.0), ("dlogits",),
         _vjp(ref.cross_entropy_forward, ref.cross_entropy_backward)),
    ]


def check_ops(backend, report, rng):
    op_vjp = getattr(backend, "op_vjp", None)
    if op_vjp is None:
        report.notes.append(f"level 1 (ops) skipped: {type(backend).__name__} has no op_vjp method; "
                            "the other levels still test the whole model")
        return
    tol = tolerance(backend.dtype, "ops")
    for name, inputs, dout, grad_names, ref_vjp in op_cases(backend.spec, rng):
        try:
            out, grads = op_vjp(name, inputs, dout)
        except (KeyError, NotImplementedError) as e:
            report.notes.append(f"op {name} skipped: {type(backend).__name__}.op_vjp does not offer it ({e})")
            continue
        ref_out, ref_grads = ref_vjp(inputs, dout)
        report.rows.append(compare("ops", f"ops.{name}.out", out, ref_out, tol))
        if len(grads) != len(grad_names):
            report.rows.append(failed_row("ops", f"ops.{name}.grads", tol,
                                          f"{len(grads)} gradients returned, expected {len(grad_names)}"))
            continue
        for g_name, g, g_ref in zip(grad_names, grads, ref_grads):
            report.rows.append(compare("ops", f"ops.{name}.{g_name}", g, g_ref, tol))


# --- level 2: step 0 ----------------------------------------------------------------------
def check_step0(backend, report, rng, batch_size):
    spec, tol = backend.spec, tolerance(backend.dtype, "step0")
    params = {n: p + PERTURB * rng.standard_normal(p.shape)
              for n, p in init_params(spec, report.settings["seed"], dtype=np.float64).items()}
    x = rng.integers(0, spec.vocab_size, (batch_size, spec.block_size))
    y = rng.integers(0, spec.vocab_size, (batch_size, spec.block_size))
    reference = NumpyBackend(spec, dtype="float64")
    reference.load_state(params)
    ref_logits, ref_loss = reference.forward(x, y)
    ref_grads = reference.backward()
    backend.load_state(params)
    logits, loss = backend.forward(x, y)
    report.rows.append(compare("step0", "logits", logits, ref_logits, tol))
    report.rows.append(compare("step0", "loss", loss, ref_loss, tol))
    grads = backend.backward()
    for name, g_ref in ref_grads.items():
        if name not in grads:
            report.rows.append(failed_row("step0", f"grad.{name}", tol, "no gradient returned"))
        else:
            report.rows.append(compare("step0", f"grad.{name}", grads[name], g_ref, tol))


def perturbed_params(spec, seed, rng, scale=PERTURB) -> dict:
    return {n: p + scale * rng.standard_normal(p.shape) for n, p in init_params(spec, seed, dtype=np.float64).items()}


def _reference(spec, params):
    reference = NumpyBackend(spec, dtype="float64")
    reference.load_state(params)
    return reference


# --- level 3: eval ------------------------------------------------------------------------
def check_eval(backend, report, rng, batch_size):
    spec, tol = backend.spec, tolerance(backend.dtype, "step0")
    params = perturbed_params(spec, report.settings["seed"], rng)
    reference = _reference(spec, params)
    batches = [rng.integers(0, spec.vocab_size, (2, batch_size, T))
               for T in (spec.block_size, spec.block_size, max(1, spec.block_size // 2))]
    backend.load_state(params)  # loss() straight after loading: nothing cached from a forward
    losses = [float(backend.loss(x, y)) for x, y in batches]
    report.rows.append(compare("eval", "eval.loss", losses, [reference.loss(x, y) for x, y in batches], tol))


# --- level 4: a separate step() -------------------------------------------------------------
def check_step(backend, report, rng, batch_size, steps=STEP_STEPS):
    spec = backend.spec
    params = perturbed_params(spec, report.settings["seed"], rng)
    schedule = config_for(spec.name, steps=steps, batch_size=batch_size).schedule()
    reference = _reference(spec, params)
    backend.load_state(params)
    norms, ref_norms = [], []
    for step in range(steps):
        x, y = rng.integers(0, spec.vocab_size, (2, batch_size, spec.block_size))
        lr = schedule.lr_at(step)
        for model, out in ((reference, ref_norms), (backend, norms)):
            model.forward(x, y)
            model.backward()
            out.append(float(model.step(lr)))
    report.rows.append(compare("step", "step.grad_norm", norms, ref_norms, tolerance(backend.dtype, "step0")))
    _compare_params(backend, reference, report, "step", "step.")


def _compare_params(backend, reference, report, level, prefix):
    """Every parameter of backend against the reference's, the loss's null directions aside."""
    tol = tolerance(backend.dtype, "params")
    final, null = backend.state(), null_directions(backend.spec)
    for name, p_ref in reference.state().items():
        if name not in final:
            report.rows.append(failed_row(level, f"{prefix}{name}", tol, "missing from state()"))
            continue
        p = np.array(final[name], dtype=np.float64)
        if name in null:
            p[null[name]] = p_ref[null[name]] = 0.0
        row = compare(level, f"{prefix}{name}", p, p_ref, tol)
        if name in null:
            row.note = "; ".join(filter(None, [row.note, "key-bias block not compared: the loss ignores it"]))
        report.rows.append(row)


# --- level 5: K-step trajectory -----------------------------------------------------------
def training_batches(spec, steps, batch_size, seed):
    """The synthetic corpus (structured, so the loss really falls) when its alphabet fits
    the vocabulary, else uniform random ids."""
    if spec.vocab_size >= MarkovSource().K:
        data = load_corpus("synthetic", synthetic_chars=max(4 * spec.block_size, 20_000)).train
    else:
        data = np.random.default_rng(seed).integers(0, spec.vocab_size, 20_000)
    sampler = BatchSampler(data, batch_size, spec.block_size, seed=seed)
    return [sampler.next() for _ in range(steps)]


def null_directions(spec) -> dict[str, slice]:
    """Parameter slices the loss does not depend on: the key bias adds q.b_k to every score
    of a query's row, and softmax ignores a shift. Its gradient is zero in exact arithmetic,
    so after K AdamW steps its value is rounding noise scaled up by the 1/sqrt(v) of AdamW
    (to ~lr per step in float32 and below), not a property of the function."""
    C = spec.n_embd
    return {f"h.{i}.attn.c_attn.bias": slice(C, 2 * C) for i in range(spec.n_layer)}


def check_trajectory(backend, report, steps, batch_size):
    spec, seed = backend.spec, report.settings["seed"]
    tol = tolerance(backend.dtype, "loss")
    schedule = config_for(spec.name, steps=steps, batch_size=batch_size).schedule()
    params = init_params(spec, seed)
    reference = NumpyBackend(spec, dtype="float64")
    reference.load_state(params)
    backend.load_state(params)
    losses, ref_losses = [], []
    for step, (x, y) in enumerate(training_batches(spec, steps, batch_size, seed)):
        lr = schedule.lr_at(step)
        ref_losses.append(float(reference.train_step(x, y, lr)))
        losses.append(float(backend.train_step(x, y, lr)))
    report.rows.append(compare("trajectory", "trajectory.loss", losses, ref_losses, tol))
    _compare_params(backend, reference, report, "trajectory", "final.")


# --- level 6: generate --------------------------------------------------------------------
def call_windows(prompt_len: int, new_tokens: int, block_size: int, window: str = "refill") -> list[tuple[int, int]]:
    """[start, end) of the token sequence that each model call of generate sees (docs/spec.md):
    the prompt's last block_size tokens, then one more per new token, and when the context
    is full, a refill from the last block_size // 2 tokens ("refill"), or the last block_size
    tokens again ("sliding", nanoGPT's). One window per call: 1 + new_tokens."""
    length, end = min(prompt_len, block_size), prompt_len
    windows = [(end - length, end)]
    for _ in range(new_tokens):
        end += 1
        if length < block_size:
            length += 1
        elif window == "refill":
            length = block_size // 2
        windows.append((end - length, end))
    return windows


def full_forward_generation(reference, prompt, new_tokens, temperature, top_k, seed, window="refill"):
    """What generate must produce, with no cache: each step's logits from a full forward over
    its window, and a token sampled from them as Backend.generate samples. Returns the tokens
    (B, prompt_len + new_tokens) and the uniform numbers each sampling step drew."""
    rng = np.random.default_rng(seed)
    seq, draws = np.asarray(prompt), []
    for start, end in call_windows(prompt.shape[1], new_tokens, reference.spec.block_size, window)[:new_tokens]:
        logits = reference.forward(seq[:, start:end])[0][:, -1, :]  # (B, V)
        draws.append(_peek(rng, seq.shape[0]))
        seq = np.concatenate([seq, sample_next(logits, temperature, top_k, rng)[:, None]], axis=1)
    return seq, draws


def _peek(rng, batch):
    """The uniform numbers sample_next is about to draw from rng, drawn from a copy of it."""
    bits = type(rng.bit_generator)()
    bits.state = rng.bit_generator.state
    return np.random.Generator(bits).random((batch, 1))[:, 0]


def check_generate(backend, report, rng):
    spec, tol = backend.spec, tolerance(backend.dtype, "step0")
    bs = spec.block_size
    params = perturbed_params(spec, report.settings["seed"], rng, GENERATE_PERTURB)
    reference = _reference(spec, params)
    backend.load_state(params)
    new = bs + bs // 2 + 2  # past a full context: at least one refill
    greedy, sampled = dict(temperature=0.0, top_k=None), dict(temperature=0.8, top_k=max(2, spec.vocab_size // 4))
    cases = (("greedy", greedy, 3, "refill"), ("sampled", sampled, bs - 2, "refill"),
             ("sliding", greedy, 3, "sliding"))  # nanoGPT's window: a full one for every token past the block
    for name, sampling, prompt_len, window in cases:
        prompt = rng.integers(0, spec.vocab_size, (GENERATE_BATCH, prompt_len))
        seed = int(rng.integers(1 << 30))
        seen = []
        out = np.asarray(backend.generate(prompt, new, seed=seed, **sampling, window=window,
                                          on_logits=lambda kind, logits: seen.append(np.asarray(logits))))
        want_tokens, draws = full_forward_generation(reference, prompt, new, seed=seed, window=window, **sampling)
        # the logits of every call, on the backend's own tokens (so a token that went another
        # way on a near-tie does not hide what came after it)
        want_logits = forced_logits(reference, out, prompt.shape[1], new, window)
        level, prefix = "generate", f"generate.{name}"
        if len(seen) != new + 1:
            report.rows.append(failed_row(level, f"{prefix}.logits", tol, f"{len(seen)} model calls reported "
                                          f"through on_logits, expected {new + 1} (backends implement prefill "
                                          "and decode; generate is the base class's)"))
        else:
            report.rows.append(compare(level, f"{prefix}.logits", np.stack(seen), want_logits, tol))
        report.rows.append(token_row(level, f"{prefix}.tokens", out, want_tokens, prompt.shape[1], want_logits,
                                     draws, sampling, tol))


def forced_logits(reference, tokens, prompt_len, new_tokens, window="refill"):
    """Full-forward logits (1 + new_tokens, B, V) of every call generate made while producing
    `tokens` (B, prompt_len + new_tokens)."""
    windows = call_windows(prompt_len, new_tokens, reference.spec.block_size, window)
    return np.stack([reference.forward(tokens[:, s:e])[0][:, -1, :] for s, e in windows])


def token_row(level, name, got, want, prompt_len, logits, draws, sampling, tol) -> Row:
    """The generated tokens against the full-forward generation. They must be equal, except
    that from the first step where they part, the rest may differ when that step was a
    near-tie: the backend's choice is one that logits within the tolerance could make."""
    got, want = np.asarray(got), np.asarray(want)
    row = Row(level, name, want.shape, True, 0.0, 0.0, 0.0, 0.0, None, None, None, None, tol)
    if got.shape != want.shape:
        row.ok, row.note = False, f"shape {got.shape} where the reference has {want.shape}"
        return row
    diff = np.argwhere(got[:, prompt_len:] != want[:, prompt_len:])
    if diff.size == 0:
        return row
    step = int(diff[:, 1].min())
    b = int(diff[diff[:, 1] == step][0, 0])
    row.worst_index = row.first_bad = (step, b)
    row.worst_value, row.worst_ref = float(got[b, prompt_len + step]), float(want[b, prompt_len + step])
    row.max_abs = float(np.count_nonzero(got[:, prompt_len:] != want[:, prompt_len:]))
    if near_tie(logits[step, b], int(row.worst_value), int(row.worst_ref), draws[step][b], sampling, tol):
        row.note = f"tokens part at step {step} on a near-tie within the tolerance; not compared after it"
    else:
        row.ok, row.note = False, f"token {int(row.worst_value)} where the reference samples {int(row.worst_ref)}"
    return row


def near_tie(ref_logits, got: int, want: int, u: float, sampling: dict, tol) -> bool:
    """Whether logits within `tol` of ref_logits (V,) could make generate pick `got` instead
    of `want`: greedy, when the two logits are closer than twice the element bound; sampled,
    when the uniform draw u lies closer to the boundary between the two tokens' cumulative
    probabilities than such logits could move it."""
    z = np.asarray(ref_logits, dtype=np.float64)
    bound = tol.atol * float(np.sqrt(np.mean(z * z))) + tol.rtol * np.abs(z)  # (V,)
    if sampling["temperature"] == 0:
        return bool(z[want] - z[got] <= bound[want] + bound[got])
    z = z / sampling["temperature"]
    k = sampling["top_k"]
    if k is not None and k < z.size:
        z = np.where(z < np.sort(z)[-k], -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    cdf = np.cumsum(p)  # sample_next picks the token whose interval (cdf[t-1], cdf[t]] holds u
    slack = float(np.sum(p * 2 * bound / sampling["temperature"]))  # how far such logits move the cdf
    low = cdf[got - 1] if got > 0 else 0.0
    return bool(low - slack < u <= cdf[got] + slack)


# --- the ladder ---------------------------------------------------------------------------
def run_ladder(backend, name: str | None = None, seed: int = 0, steps: int = DEFAULT_STEPS,
               batch_size: int = DEFAULT_BATCH, levels=LEVELS) -> Report:
    """Run the ladder on a constructed backend (its spec, device and dtype are under test)."""
    report = Report(name or type(backend).__name__, backend.spec.to_dict(), backend.device, backend.dtype,
                    {"seed": seed, "steps": steps, "batch_size": batch_size})
    rng = np.random.default_rng(seed)
    for level in levels:
        try:
            if level == "ops":
                check_ops(backend, report, rng)
            elif level == "step0":
                check_step0(backend, report, rng, batch_size)
            elif level == "eval":
                check_eval(backend, report, rng, batch_size)
            elif level == "step":
                check_step(backend, report, rng, batch_size)
            elif level == "trajectory":
                check_trajectory(backend, report, steps, batch_size)
            elif level == "generate":
                check_generate(backend, report, rng)
            else:
                raise ValueError(f"no ladder level {level!r}; levels: {', '.join(LEVELS)}")
        except Exception as e:  # a backend that crashes fails the level; the report says how
            report.rows.append(failed_row(level, level, tolerance(backend.dtype, "ops"),
                                          f"raised {type(e).__name__}: {e}"))
    return report
