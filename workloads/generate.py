"""Generation workload: sampling with the KV cache, timed token by token.

Backend.generate (backends/base.py) drives every backend through its public prefill (fill
a fresh cache from a window, return last-position logits) and decode (append one token),
and reports each call's logits to an `on_logits` observer. The observer timestamps each
call as it returns (the logits are host arrays, so the device work is done):
  time to first token = prompt prefill (the first token is sampled from its logits);
  per-token latency   = the time between consecutive hook returns: sampling one token
                        and running it through the model (a cache refill, when the
                        window is full, is one such token and is counted in n_refills).
First, untimed, the same generation (same prompt, length and seed, so the same shapes):
whatever it costs beyond the timed one is compilation (jax.jit's per-shape compiles,
kernel selection, first allocations), kept apart as compile_s and never in a rate.

The weights: a file, the canonical init, or (pretrain_steps) the NumPy reference trained
on the corpus in the cell itself, so a cell needs nothing from another cell or host and
every backend samples from the same weights. Only ids the corpus's tokenizer can decode are
sampled (a spec's vocab_size may be padded beyond it: docs/spec.md, Generation).
"""

from __future__ import annotations

import time

import numpy as np

from backends.base import WINDOWS
from gptspec.data import check_vocab, load_corpus
from workloads import Metric, Option, options


def _all_new_tokens(spec: dict, before: dict) -> int:
    """max_new_tokens: every shape of the timed generation compiled before it"""
    return before["max_new_tokens"]


OPTIONS = (
    Option("max_new_tokens", int, 64, "tokens sampled after the prompt, each timed", min=1),
    Option("prompt_tokens", int, 8, "prompt length, taken from the validation split", min=1),
    Option("batch_size", int, 1, "sequences sampled together", min=1),
    Option("temperature", float, 1.0, "sampling temperature; 0: greedy", min=0),
    Option("top_k", int | None, None, "sample among the k likeliest tokens; null: all", min=1),
    Option("warmup_tokens", int, _all_new_tokens, "an untimed generation of this many tokens first (same prompt "
           "and seed); 0: none", min=0),
    Option("weights", str | None, None, "a gptbench safetensors file; null: canonical init from the seed "
           "(or pretrain_steps)"),
    Option("pretrain_steps", int, 0, "AdamW steps of the NumPy reference (float32, the train workload's batch "
           "size and lr for the spec) on the corpus before generating, untimed: the weights sampled from; 0: none",
           min=0),
    Option("corpus", str, "synthetic", "the prompt's, the vocabulary's and pretraining's source: 'synthetic', "
           "'shakespeare' or a text file"),
    Option("tokenizer", str, "char", "character- or byte-level", choices=("char", "byte")),
    Option("window", str, "refill", "once the context is full: refill the cache from the last block_size // 2 "
           "tokens, or slide a full window per token as nanoGPT does (a prefill each)", choices=WINDOWS),
)
# the scalars of run()'s metrics; the rest: token_ms (one per new token), prompt_text, sample_text
METRICS = (
    Metric("decode_tokens_per_s", "tokens/s", "batch_size per median token time, after warm-up", compare=True,
           summary="decode tokens/s {:,.0f}"),
    Metric("time_to_first_token_ms", "ms", "prompt prefill, after warm-up", compare=True,
           summary="time to first token {:.1f} ms"),
    Metric("token_ms", "ms", "median per-token latency (sampling + one step through the KV cache); the report "
           "takes its quartiles from token_ms", key="token_ms_median", samples=lambda m: m.get("token_ms"),
           summary="per token {:.2f} ms"),
    Metric("tokens_per_s", "tokens/s", "every new token over total_s (prefill included, compilation not)"),
    Metric("token_ms_iqr", "ms", "interquartile range of the per-token times"),
    Metric("token_ms_max", "ms", "the slowest token"),
    Metric("total_s", "s", "the timed generation, prefill included"),
    Metric("warmup_s", "s", "the untimed warm-up generation"),
    Metric("compile_s", "s", "warmup_s - total_s when the warm-up is the same generation: compilation and "
           "first-call costs", summary="compile {:.2f} s"),
    Metric("n_refills", "refills", "prefills after the prompt's, once the window was full (each counted as one "
           "token): one per token past it under the sliding window"),
    Metric("new_tokens", "tokens", "per sequence"),
    Metric("prompt_tokens", "tokens", "per sequence"),
    Metric("batch_size", "sequences", "sampled together"),
    Metric("pretrain_s", "s", "pretraining's wall time in this cell (pretrain_steps; 0 when the host's cache held "
           "the weights: pretrain_cached)"),
    Metric("pretrain_val_loss", "nats", "validation loss of the pretrained weights"),
    Metric("entropy_floor", "nats", "synthetic corpus: the true source's expected loss on block_size-token blocks"),
)


def memory_estimate(cell) -> dict:
    """Generation's tensors, and with pretraining the NumPy reference's training (float32)."""
    opts = options(cell)
    spec = cell.spec_obj()
    est = spec.memory_estimate(opts["batch_size"], cell.dtype, "generate")
    if opts["pretrain_steps"]:
        from workloads.train import preset_defaults

        pretrain = spec.memory_estimate(preset_defaults(spec.name)[0], "float32", "train")["total"]
        est = {**est, "pretrain": pretrain, "total": est["total"] + pretrain}
    return est


def _weights(opts, spec, corpus, seed) -> tuple[dict, dict]:
    """(canonical params, the pretraining's metrics)."""
    from gptspec.weights import init_params, load_safetensors

    if opts["weights"]:
        return load_safetensors(opts["weights"], spec)[1], {}
    if not opts["pretrain_steps"]:
        return init_params(spec, seed), {}
    return pretrained(spec, corpus, opts["pretrain_steps"], seed)


# what the pretrained weights are a function of, besides the inputs in the key: this code
_PRETRAIN_CODE = ("backends/numpy_ref.py", "gptspec/optim.py", "gptspec/weights.py", "gptspec/data.py",
                  "gptspec/spec.py", "workloads/train.py")


def _pretrain_key(spec, corpus, cfg) -> str:
    import hashlib
    import json
    from dataclasses import asdict
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(json.dumps({"spec": spec.to_dict(), "corpus": corpus.describe(), "config": asdict(cfg)},
                                  sort_keys=True, default=str).encode())
    for name in _PRETRAIN_CODE:
        h.update((root / name).read_bytes())
    return h.hexdigest()[:24]


def pretrained(spec, corpus, steps: int, seed: int) -> tuple[dict, dict]:
    """(params, metrics) of the NumPy reference trained `steps` steps from the seed's init:
    trained once per host and kept by the hash of everything they are a function of
    (spec, corpus, training config, the reference's code) in the cache folder, so every
    generate cell of a run, whichever backend, samples from the same weights without
    training them again. metrics: pretrain_s (this cell's pretraining, 0 when cached),
    pretrain_cached, pretrain_val_loss, weights_sha256 (the weights' bytes: the same in
    every cell that shares them)."""
    import hashlib
    import json

    from backends.numpy_ref import NumpyBackend
    from gptspec.files import cache_dir
    from gptspec.weights import WeightsError, load_with_metadata, save_safetensors
    from workloads.train import config_for, train

    cfg = config_for(spec.name, steps=steps, seed=seed, eval_interval=0)
    path = cache_dir() / "pretrained" / f"{spec.name}-{_pretrain_key(spec, corpus, cfg)}.safetensors"
    params = None
    if path.is_file():
        try:
            _, params, meta = load_with_metadata(path, spec)
            out = {**json.loads(meta["pretrain"]), "pretrain_s": 0.0, "pretrain_cached": True}
        except (WeightsError, KeyError, ValueError):
            params = None  # a damaged cache entry is trained again and replaced
    if params is None:
        ref = NumpyBackend(spec, dtype="float32")
        t0 = time.perf_counter()
        m = train(ref, corpus, cfg)
        out = {"pretrain_val_loss": m["final_val_loss"]}
        if "entropy_floor" in m:
            out["entropy_floor"] = m["entropy_floor"]
        params = ref.state()
        save_safetensors(path, params, spec, extra_metadata={"pretrain": out})
        out.update(pretrain_s=time.perf_counter() - t0, pretrain_cached=False)
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode() + np.ascontiguousarray(params[name]).tobytes())
    out["weights_sha256"] = digest.hexdigest()[:16]
    return params, out


def run(backend, cell) -> dict:
    opts = options(cell)
    spec = backend.spec
    corpus = load_corpus(opts["corpus"], tokenizer=opts["tokenizer"])
    check_vocab(corpus, spec.vocab_size, spec.name)
    params, metrics = _weights(opts, spec, corpus, cell.seed)
    backend.load_state(params)
    B, n_new = opts["batch_size"], opts["max_new_tokens"]
    prompt = np.tile(corpus.val[:opts["prompt_tokens"]], (B, 1))  # (B, T0)
    sample = dict(temperature=opts["temperature"], top_k=opts["top_k"], seed=cell.seed, window=opts["window"],
                  vocab_limit=corpus.tokenizer.vocab_size)
    if opts["warmup_tokens"]:
        t0 = time.perf_counter()
        backend.generate(prompt, opts["warmup_tokens"], **sample)
        metrics["warmup_s"] = time.perf_counter() - t0

    events: list[tuple[str, float]] = []  # (prefill or decode, perf_counter at its return)
    t0 = time.perf_counter()
    out = backend.generate(prompt, n_new, **sample,  # (B, T0 + n_new)
                           on_logits=lambda kind, logits: events.append((kind, time.perf_counter())))
    total_s = time.perf_counter() - t0

    metrics.update({"batch_size": B, "prompt_tokens": int(prompt.shape[1]), "new_tokens": n_new,
                    "total_s": total_s, "tokens_per_s": B * n_new / total_s,
                    "prompt_text": corpus.tokenizer.decode(prompt[0]),
                    "sample_text": corpus.tokenizer.decode(out[0])})
    if opts["warmup_tokens"] == n_new:  # the same generation: the difference is first-call cost
        metrics["compile_s"] = max(0.0, metrics["warmup_s"] - total_s)
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
