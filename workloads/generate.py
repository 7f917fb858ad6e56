"""Generation workload: sampling with the KV cache, timed token by token.

Backend.generate (backends/base.py) drives every backend through its public prefill (fill
a fresh cache from a window, return last-position logits) and decode (append one token),
and reports each call's logits to an `on_logits` observer. The observer timestamps each
call as it returns (the logits are host arrays, so the device work is done):
  time to first token = prompt prefill (the first token is sampled from its logits);
  per-token latency   = the time between consecutive hook returns: sampling one token
                        and running it through the model (a cache refill, when the
                        window is full, is one such token and is counted in n_refills).
An untimed warm-up generation runs first (kernel selection, compilation).
"""

from __future__ import annotations

import time

import numpy as np

from gptspec.data import load_corpus
from workloads import workload_options

DEFAULTS = {"max_new_tokens": 64, "prompt_tokens": 8, "batch_size": 1, "temperature": 1.0, "top_k": None,
            "warmup_tokens": 4, "weights": None, "corpus": "synthetic", "tokenizer": "char"}


def options(cell) -> dict:
    return {**DEFAULTS, **workload_options(cell, DEFAULTS)}


def memory_estimate(cell) -> dict:
    return cell.spec_obj().memory_estimate(options(cell)["batch_size"], cell.dtype, "generate")


def _load_weights(opts, spec, seed):
    from gptspec.weights import init_params, load_safetensors

    if opts["weights"]:
        return load_safetensors(opts["weights"], spec)[1]
    return init_params(spec, seed)


def decode(tokenizer, ids) -> str:
    """Text of ids; an id the tokenizer lacks (an untrained model's vocab_size can exceed
    the corpus's) shows as U+FFFD rather than failing the cell."""
    text, run = [], []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i < tokenizer.vocab_size:
            run.append(i)
            continue
        text += [tokenizer.decode(run) if run else "", "\ufffd"]
        run = []
    return "".join(text) + (tokenizer.decode(run) if run else "")


def run(backend, cell) -> dict:
    opts = options(cell)
    spec = backend.spec
    corpus = load_corpus(opts["corpus"], tokenizer=opts["tokenizer"])
    backend.load_state(_load_weights(opts, spec, cell.seed))
    B, n_new = opts["batch_size"], opts["max_new_tokens"]
    prompt = np.tile(corpus.val[:opts["prompt_tokens"]], (B, 1))  # (B, T0)
    sample = dict(temperature=opts["temperature"], top_k=opts["top_k"], seed=cell.seed)
    if opts["warmup_tokens"]:
        backend.generate(prompt, opts["warmup_tokens"], **sample)

    events: list[tuple[str, float]] = []  # (prefill or decode, perf_counter at its return)
    t0 = time.perf_counter()
    out = backend.generate(prompt, n_new, **sample,  # (B, T0 + n_new)
                           on_logits=lambda kind, logits: events.append((kind, time.perf_counter())))
    total_s = time.perf_counter() - t0

    metrics = {"batch_size": B, "prompt_tokens": int(prompt.shape[1]), "new_tokens": n_new,
               "total_s": total_s, "tokens_per_s": B * n_new / total_s,
               "prompt_text": decode(corpus.tokenizer, prompt[0]),
               "sample_text": decode(corpus.tokenizer, out[0])}
    if not events:  # a backend whose generate bypasses the hooks: only the total is known
        metrics["reason"] = "the backend's generate does not report its model calls (on_logits)"
        return metrics
    ends = np.array([t for _, t in events])
    token_ms = np.diff(ends)[:n_new] * 1e3  # one interval per new token
    q1, med, q3 = np.percentile(token_ms, [25, 50, 75])
    metrics.update(time_to_first_token_ms=(ends[0] - t0) * 1e3, token_ms=token_ms.tolist(),
                   token_ms_median=float(med), token_ms_iqr=float(q3 - q1), token_ms_max=float(token_ms.max()),
                   decode_tokens_per_s=B / (med / 1e3),
                   n_refills=sum(kind == "prefill" for kind, _ in events[1:]))
    return metrics
