"""Conformance: prove that a backend computes the reference's function (DESIGN.md).

The ladder compares a backend, in the dtype under test, with the NumPy reference in float64,
from the same canonical weights on the same batches, under workloads/conformance/tolerances.py:

1. ops: every op the backend exposes through the optional method
       op_vjp(name, inputs, dout) -> (out, grads of the floating-point inputs)
   against numpy_ref's op_forward / op_backward, output and input gradients. A backend
   without op_vjp has this level skipped, and the report says so.
2. step0: logits, loss and every parameter's gradient at one point: the canonical init,
   perturbed so that biases and LayerNorm parameters are off their special values 0 and 1.
3. trajectory: K AdamW steps through train_step (the fast path) from the canonical init, with
   the suite's learning-rate schedule: the loss of every step, then every final parameter.

The report card names the first failing check in ladder order (workloads/conformance/report_card.py).
"""

from __future__ import annotations

import numpy as np

from backends import numpy_ref as ref
from backends.numpy_ref import NumpyBackend
from gptspec.data import BatchSampler, MarkovSource, load_corpus
from gptspec.weights import init_params
from workloads.conformance import DEFAULT_BATCH, DEFAULT_STEPS
from workloads.conformance.report_card import Report, compare, failed_row
from workloads.conformance.tolerances import tolerance
from workloads.train import config_for

LEVELS = ("ops", "step0", "trajectory")
PERTURB = 0.02  # the init's own scale: moves biases off 0 and LayerNorm weights off 1


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


def _linear_gelu_vjp(inputs, dout):
    """The reference's linear then gelu, chained: the op a backend may fuse."""
    h, linear_cache = ref.linear_forward(*inputs)
    out, gelu_cache = ref.gelu_forward(h)
    return out, ref.linear_backward(ref.gelu_backward(dout, gelu_cache), linear_cache)


def op_cases(spec, rng):
    """(op name, float64 inputs, dout, gradient names, reference vjp) for each op of the spec's
    sizes: B=2, T=block_size. Inputs are O(1) so that every op works in its interesting range."""
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
        ("gelu", (2.0 * n((B, T, 4 * C)),), n((B, T, 4 * C)), ("dx",), _vjp(ref.gelu_forward, ref.gelu_backward)),
        ("linear_gelu", (2.0 * n((B, T, C)), n((4 * C, C)) / np.sqrt(C), 0.1 * n(4 * C)), n((B, T, 4 * C)),
         ("dx", "dw", "db"), _linear_gelu_vjp),
        ("cross_entropy", (2.0 * n((B, T, V)), rng.integers(0, V, (B, T))), np.float64(1.0), ("dlogits",),
         _vjp(ref.cross_entropy_forward, ref.cross_entropy_backward)),
    ]


def check_ops(backend, report, rng):
    op_vjp = getattr(backend, "op_vjp", None)
    if op_vjp is None:
        report.notes.append(f"level 1 (ops) skipped: {type(backend).__name__} has no op_vjp method; "
                            "levels 2 and 3 still test the whole model")
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


# --- level 3: K-step trajectory -----------------------------------------------------------
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
    tol = tolerance(backend.dtype, "params")
    final, null = backend.state(), null_directions(spec)
    for name, p_ref in reference.state().items():
        if name not in final:
            report.rows.append(failed_row("trajectory", f"final.{name}", tol, "missing from state()"))
            continue
        p = np.array(final[name], dtype=np.float64)
        if name in null:
            p[null[name]] = p_ref[null[name]] = 0.0
        row = compare("trajectory", f"final.{name}", p, p_ref, tol)
        if name in null:
            row.note = "; ".join(filter(None, [row.note, "key-bias block not compared: the loss ignores it"]))
        report.rows.append(row)


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
            else:
                check_trajectory(backend, report, steps, batch_size)
        except Exception as e:  # a backend that crashes fails the level; the report says how
            report.rows.append(failed_row(level, level, tolerance(backend.dtype, "ops"),
                                          f"raised {type(e).__name__}: {e}"))
    return report
