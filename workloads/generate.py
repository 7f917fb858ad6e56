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

from backends.base import WINDOWS
from gptspec.data import load_corpus
from workloads import Metric, Option, options

OPTIONS = (
    Option("max_new_tokens", int, 64, "tokens sampled after the prompt, each timed", min=1),
    Option("prompt_tokens", int, 8, "prompt length, taken from the validation split", min=1),
    Option("batch_size", int, 1, "sequences sampled together", min=1),
    Option("temperature", float, 1.0, "sampling temperature; 0: greedy", min=0),
    Option("top_k", int | None, None, "sample among the k likeliest tokens; null: all", min=1),
    Option("warmup_tokens", int, 4, "an untimed generation of this many tokens first; 0: none", min=0),
    Option("weights", str | None, None, "a gptbench safetensors file; null: canonical init from the seed"),
    Option("corpus", str, "synthetic", "the prompt's and the vocabulary's source: 'synthetic', 'shakespeare' "
           "or a text file"),
    Option("tokenizer", str, "char", "character- or byte-level", choices=("char", "byte")),
    Option("window", str, "refill", "once the context is full: refill the cache from the last block_size // 2 "
           "tokens, or slide a full window per token as nanoGPT does (a prefill each)", choices=WINDOWS),
)
# the scalars of run()'s metrics; the rest: token_ms (one per new token), prompt_text, sample_text
METRICS = (
    Metric("tokens_per_s", "tokens/s", "every new token over total_s", summary="tokens/s {:,.0f}"),
    Metric("token_ms", "ms", "median per-token latency (sampling + one step through the KV cache); the report "
           "takes its quartiles from token_ms", key="token_ms_median", samples=lambda m: m.get("token_ms"),
           compare=True, summary="per token {:.2f} ms"),
    Metric("time_to_first_token_ms", "ms", "prompt prefill", compare=True, summary="time to first token {:.1f} ms"),
    Metric("token_ms_iqr", "ms", "interquartile range of the per-token times"),
    Metric("token_ms_max", "ms", "the slowest token"),
    Metric("decode_tokens_per_s", "tokens/s", "batch_size per median token time"),
    Metric("total_s", "s", "the timed generation, prefill included"),
    Metric("n_refills", "refills", "prefills after the prompt's, once the window was full (each counted as one "
           "token): one per token past it under the sliding window"),
    Metric("new_tokens", "tokens", "per sequence"),
    Metric("prompt_tokens", "tokens", "per sequence"),
    Metric("batch_size", "sequences", "sampled together"),
)


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
    sample = dict(temperature=opts["temperature"], top_k=opts["top_k"], seed=cell.seed, window=opts["window"])
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
