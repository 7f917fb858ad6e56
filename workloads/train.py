"""Training workload: N AdamW steps from canonical init on seeded batches.

Every step's time and loss are kept; the first `warmup_steps` are excluded from the
throughput figures (compilation, allocator warm-up). A non-finite loss stops training
at once with status `diverged`. Every cell has a target validation loss (TARGETS below, or
the option): the training time (sum of step times, evaluation excluded) and steps until the
first evaluation at or below it are kept, and a cell that never gets there says so
(`target_reached` false, with `steps_trained` and `best_val_loss`), so a headline can print
"not reached in N steps".

run(backend, cell) is the cell entry (suite/cell.py); train() is the library call.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from gptspec.data import BatchSampler, Corpus, check_vocab, load_corpus, split_windows, spread_windows
from gptspec.optim import AdamWConfig, Schedule
from gptspec.weights import init_params
from workloads import Metric, Option, options, prepare_backend


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    lr_warmup_steps: int = 10
    seed: int = 0
    eval_interval: int = 0  # 0: evaluate only at the end
    eval_batches: int = 4
    warmup_steps: int = 2  # steps excluded from timing
    seq_len: int | None = None  # default: the spec's block_size
    target_val_loss: float | None = None  # time_to_target_s is measured against it
    min_lr: float | None = None  # the final learning rate; None: lr / 10
    beta1: float = AdamWConfig.beta1
    beta2: float = AdamWConfig.beta2
    weight_decay: float = AdamWConfig.weight_decay

    def schedule(self) -> Schedule:
        return Schedule(lr=self.lr, warmup_steps=self.lr_warmup_steps, decay_steps=self.steps, min_lr=self.min_lr)

    def adamw(self) -> AdamWConfig:
        return AdamWConfig(beta1=self.beta1, beta2=self.beta2, weight_decay=self.weight_decay)


# Per-preset defaults: (batch_size, lr). tiny reaches its entropy floor in a few hundred
# steps at 1e-2, markov in ~250 at 3e-2 (its plateau before attention finds the previous
# letter is shorter at a higher rate); the larger ones follow nanoGPT's configs.
PRESET_DEFAULTS = {
    "tiny": (32, 1e-2),
    "markov": (32, 3e-2),
    "lumgpt": (8, 3e-3),
    "proust": (16, 3e-3),
    "shakespeare-char": (64, 1e-3),
    "gpt2-124m": (8, 6e-4),
}


# --- targets: the validation loss every train cell is timed to (time_to_target_s) -------------
# Synthetic corpus: its exact entropy floor on seq_len-token blocks + this margin (nats).
SYNTHETIC_TARGET_GAP = 0.1
# Tiny Shakespeare: a stated validation loss per preset, in nats per token (the file is ASCII,
# so per character with either tokenizer). A preset without one is in NO_SHAKESPEARE_TARGET,
# with the reason. Another text file has no stated target: set the option.
SHAKESPEARE_TARGETS = {
    # nanoGPT's config for this model reaches ~1.47 with dropout 0.2, which our spec leaves out
    # (not yet measured with this code: docs/results/shakespeare-targets.md)
    "shakespeare-char": 1.5,
    # measured with the presets' batch size and lr (docs/results/shakespeare-targets.md):
    # lumgpt reaches it at step ~2000, proust at ~1250, and both keep improving
    "lumgpt": 1.8,
    "proust": 1.8,
}
NO_SHAKESPEARE_TARGET = {
    "tiny": "its vocab_size 32 cannot hold Tiny Shakespeare's 65 characters",
    "markov": "its vocab_size 8 cannot hold Tiny Shakespeare's 65 characters",
    "gpt2-124m": "it is measured for throughput, MFU and its memory frontier; with no dropout its 124M "
                 "parameters overfit 1 MB of text, so a time to quality would time the overfitting",
}


def default_target(spec_name: str, corpus: Corpus, seq_len: int) -> tuple[float | None, str]:
    """(target validation loss, where it comes from) for a cell whose option sets none."""
    floor = corpus.block_floor(seq_len)
    if floor is not None:
        return floor + SYNTHETIC_TARGET_GAP, f"entropy floor {floor:.4f} + {SYNTHETIC_TARGET_GAP} nats"
    if corpus.name != "shakespeare":
        return None, f"none: no stated target for the text file {corpus.name}; set the option target_val_loss"
    if spec_name in SHAKESPEARE_TARGETS:
        return SHAKESPEARE_TARGETS[spec_name], f"stated for {spec_name} on Tiny Shakespeare"
    why = NO_SHAKESPEARE_TARGET.get(spec_name, "it is no preset; set the option target_val_loss")
    return None, f"none for {spec_name} on Tiny Shakespeare: {why}"


def preset_defaults(spec_name: str) -> tuple[int, float]:
    """(batch_size, lr) of a preset; (8, 1e-3) for any other spec."""
    return PRESET_DEFAULTS.get(spec_name, (8, 1e-3))


def config_for(spec_name: str, **overrides) -> TrainConfig:
    """TrainConfig with the preset's batch size and lr unless overridden (None = default)."""
    batch_size, lr = preset_defaults(spec_name)
    base = {"batch_size": batch_size, "lr": lr}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def validation_batches(corpus: Corpus, cfg: TrainConfig, T: int) -> list:
    """A fixed set of validation batches, evenly spread over the split: the same for every
    backend, every call and every seed (two seeds are scored on the same text)."""
    x, y = spread_windows(corpus.val, cfg.eval_batches * cfg.batch_size, T)
    B = cfg.batch_size
    return [(x[i:i + B], y[i:i + B]) for i in range(0, len(x), B)]


def evaluate(backend, batches) -> float:
    return float(np.mean([backend.loss(x, y) for x, y in batches]))


def evaluate_split(backend, data, batch_size: int = 32, on_batch=None) -> tuple[float, int]:
    """(mean cross-entropy, tokens scored) of the backend over every non-overlapping block_size
    window of data from its start (gptspec.data.split_windows): the full-split validation loss.
    Batches of batch_size windows; each batch's mean is weighted by its windows, so the result is
    the mean over tokens. on_batch(done, total) after each batch (progress)."""
    x, y = split_windows(np.asarray(data), backend.spec.block_size)
    total = 0.0
    for i in range(0, len(x), batch_size):
        total += float(backend.loss(x[i:i + batch_size], y[i:i + batch_size])) * len(x[i:i + batch_size])
        if on_batch:
            on_batch(min(i + batch_size, len(x)), len(x))
    return total / len(x), int(y.size)


def summarize_times(step_ms: list[float], tokens_per_step: int) -> dict:
    if not step_ms:
        return {}
    ms = np.asarray(step_ms)
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "step_ms_median": float(med),
        "step_ms_iqr": float(q3 - q1),
        "tokens_per_s": tokens_per_step / (med / 1e3),
        "tokens_per_s_q1": tokens_per_step / (q3 / 1e3),  # slow quartile
        "tokens_per_s_q3": tokens_per_step / (q1 / 1e3),
    }


def train(backend, corpus: Corpus, cfg: TrainConfig, on_step=None) -> dict:
    """Train `backend` (already constructed) and return the record's metrics.

    on_step(step, loss, step_ms) is called after every step (for progress display)."""
    spec = backend.spec
    T = cfg.seq_len or spec.block_size
    check_vocab(corpus, spec.vocab_size, spec.name)
    backend.load_state(init_params(spec, cfg.seed))
    sampler = BatchSampler(corpus.train, cfg.batch_size, T, seed=cfg.seed)
    schedule = cfg.schedule()
    val_batches = validation_batches(corpus, cfg, T)
    losses, step_ms, val = [], [], []
    status = "ok"
    reached = None  # (step, training seconds) of the first evaluation at or below target

    def evaluate_at(step):
        nonlocal reached
        loss = evaluate(backend, val_batches)
        val.append((step, loss))
        if reached is None and cfg.target_val_loss is not None and loss <= cfg.target_val_loss:
            reached = (step, sum(step_ms) / 1e3)

    for step in range(cfg.steps):
        x, y = sampler.next()
        lr = schedule.lr_at(step)
        t0 = time.perf_counter()
        loss = float(backend.train_step(x, y, lr))  # float() syncs the device
        dt = (time.perf_counter() - t0) * 1e3
        losses.append(loss)
        step_ms.append(dt)
        if on_step:
            on_step(step, loss, dt)
        if not math.isfinite(loss):
            status = "diverged"
            break
        if cfg.eval_interval and (step + 1) % cfg.eval_interval == 0 and step + 1 < cfg.steps:
            evaluate_at(step + 1)
    if status == "ok":
        evaluate_at(len(losses))
    tokens_per_step = cfg.batch_size * T
    out = {
        "status": status,
        "config": asdict(cfg),
        "seq_len": T,
        "losses": losses,
        "step_ms": step_ms,
        "val_losses": val,
        "final_loss": losses[-1] if losses else None,
        "final_val_loss": val[-1][1] if val else None,
        "tokens_per_step": tokens_per_step,
        "train_s": sum(step_ms) / 1e3,
        "target_val_loss": cfg.target_val_loss,
        # False (not None) when a target was set and missed: "not reached in steps_trained steps"
        "target_reached": None if cfg.target_val_loss is None else reached is not None,
        "steps_to_target": reached[0] if reached else None,
        "time_to_target_s": reached[1] if reached else None,
        "steps_trained": len(losses),
        "best_val_loss": min((v for _, v in val), default=None),
        "flops_per_token": spec.flops_per_token(T),
        **summarize_times(step_ms[cfg.warmup_steps:], tokens_per_step),
    }
    if status == "diverged":
        out["reason"] = f"loss became {losses[-1]} at step {len(losses) - 1} (lr {schedule.lr_at(len(losses) - 1):.3g})"
    floor = corpus.block_floor(T)
    if floor is not None:
        out["entropy_floor"] = floor  # expected loss of the true source on T-token blocks
        # the true source scored on exactly the validation tokens: a low-noise yardstick
        out["oracle_val_loss"] = float(np.mean([corpus.source.oracle_loss(x, y) for x, y in val_batches]))
        if out["final_val_loss"] is not None:
            out["floor_gap"] = out["final_val_loss"] - floor
    if "tokens_per_s" in out:
        out["model_flops_per_s"] = out["tokens_per_s"] * out["flops_per_token"]
    return out


# --- the cell entry -------------------------------------------------------------------------

def _preset_batch_size(spec: dict, before: dict) -> int:
    """the preset's (PRESET_DEFAULTS), else 8"""
    return preset_defaults(spec["name"])[0]


def _preset_lr(spec: dict, before: dict) -> float:
    """the preset's (PRESET_DEFAULTS), else 1e-3"""
    return preset_defaults(spec["name"])[1]


def _tenth_of_steps(spec: dict, before: dict) -> int:
    """a tenth of the steps, at least 1"""
    return max(1, before["steps"] // 10)


# TrainConfig's fields (seed comes from the cell) and the corpus to train on
OPTIONS = (
    Option("steps", int, TrainConfig.steps, "AdamW steps", min=1),
    Option("batch_size", int, _preset_batch_size, "sequences per step", min=1),
    Option("lr", float, _preset_lr, "peak learning rate (linear warm-up, cosine decay to a tenth)", min=0),
    Option("lr_warmup_steps", int, TrainConfig.lr_warmup_steps, "steps of linear learning-rate warm-up", min=0),
    Option("eval_interval", int, _tenth_of_steps, "steps between validation losses; 0: only at the end", min=0),
    Option("eval_batches", int, TrainConfig.eval_batches, "validation batches per evaluation", min=1),
    Option("warmup_steps", int, TrainConfig.warmup_steps, "first steps left out of the timing", min=0),
    Option("seq_len", int | None, None, "tokens per sequence; null: the spec's block_size", min=1),
    Option("target_val_loss", float | None, None, "time_to_target_s is measured against it; null: on the "
           f"synthetic corpus its entropy floor + {SYNTHETIC_TARGET_GAP} nats, on Tiny Shakespeare the spec's "
           "stated target (SHAKESPEARE_TARGETS in workloads/train.py), on another text file none", min=0),
    Option("min_lr", float | None, None, "the final learning rate, reached at the last step; null: lr / 10", min=0),
    Option("beta1", float, TrainConfig.beta1, "AdamW's first-moment decay", min=0, max=1),
    Option("beta2", float, TrainConfig.beta2, "AdamW's second-moment decay (nanoGPT's shakespeare-char recipe: 0.99)",
           min=0, max=1),
    Option("weight_decay", float, TrainConfig.weight_decay, "AdamW's decoupled weight decay, on 2-D tensors only",
           min=0),
    Option("corpus", str, "synthetic", "'synthetic', 'shakespeare' or a text file"),
    Option("tokenizer", str, "char", "character- or byte-level", choices=("char", "byte")),
)


def timed_steps(metrics: dict) -> list:
    """Step times after warm-up: the samples of the step-time and tokens/s medians."""
    return (metrics.get("step_ms") or [])[(metrics.get("config") or {}).get("warmup_steps", 0):]


# the scalars of run()'s metrics; the rest are lists, objects and text: losses, step_ms (every
# step), val_losses ([step, loss] pairs), config, corpus, target_source, compile_s_by_graph
# (torch.compile: seconds per compiled graph, e.g. "train (32, 16)", the one inside step_ms[0])
METRICS = (
    Metric("tokens_per_s", "tokens/s", "tokens per median timed step; quartiles from the step-time quartiles",
           quartiles=("tokens_per_s_q1", "tokens_per_s_q3"), compare=True, summary="tokens/s {:,.0f}"),
    Metric("step_ms", "ms", "median timed step; the report takes its quartiles from step_ms after warm-up",
           key="step_ms_median", samples=timed_steps),
    Metric("step_ms_iqr", "ms", "interquartile range of the timed steps"),
    Metric("mfu", "1", "model_flops_per_s / peak_flops_per_s", summary="MFU {:.1%}"),
    Metric("model_flops_per_s", "FLOP/s", "tokens_per_s x flops_per_token"),
    Metric("peak_flops_per_s", "FLOP/s", "the host's calibrated GEMM peak for the cell's dtype (the runner adds it)"),
    Metric("final_loss", "nats", "training loss of the last step"),
    Metric("final_val_loss", "nats", "validation loss at the end", compare=True),
    Metric("entropy_floor", "nats", "synthetic corpus: the true source's expected loss on seq_len-token blocks"),
    Metric("oracle_val_loss", "nats", "synthetic corpus: the true source's loss on the validation batches"),
    Metric("floor_gap", "nats", "final_val_loss - entropy_floor"),
    Metric("target_val_loss", "nats", "the option, or its default (target_source says which)"),
    Metric("target_reached", "1", "true: an evaluation reached target_val_loss; false: none did in "
           "steps_trained steps; null: no target"),
    Metric("steps_to_target", "steps", "the first evaluation at or below target_val_loss"),
    Metric("time_to_target_s", "s", "step times up to that evaluation (evaluation time excluded)", compare=True),
    Metric("steps_trained", "steps", "steps run: steps, or fewer when the loss diverged"),
    Metric("best_val_loss", "nats", "the lowest validation loss"),
    Metric("train_s", "s", "every step's time"),
    Metric("tokens_per_step", "tokens", "batch_size x seq_len"),
    Metric("seq_len", "tokens", "tokens per sequence"),
    Metric("flops_per_token", "FLOP", "model FLOPs of one training token (GPTSpec.flops_per_token)"),
    Metric("compile_s", "s", "compilation and first-call costs inside the first steps (so inside time_to_target_s, "
           "outside the throughput figures): what the backend reports (torch.compile: every graph's, "
           "compile_s_by_graph), else first_calls_excess_s; compile_source says which"),
    Metric("first_calls_excess_s", "s", "the warm-up steps' time beyond the median timed step, for every backend"),
)


def summary_lines(metrics: dict) -> list[str]:
    """Where the cell stands against its target: `gptbench cell` and `gptbench train` print it."""
    target, source = metrics.get("target_val_loss"), metrics.get("target_source", "option")
    if target is None:
        return [f"target: {source}"] if metrics.get("target_source") else []
    head = f"target val loss {target:.4f} ({source}): "
    if metrics.get("target_reached"):
        return [head + f"reached at step {metrics['steps_to_target']} after {metrics['time_to_target_s']:.2f} s "
                "of training"]
    best = metrics.get("best_val_loss")
    return [head + f"not reached in {metrics.get('steps_trained')} steps"
            + (f" (best val loss {best:.4f})" if best is not None else "")]


def cell_config(cell) -> tuple[TrainConfig, dict]:
    """(TrainConfig, corpus options) of a train cell."""
    opts = options(cell)
    fields = [f for f in TrainConfig.__dataclass_fields__ if f != "seed"]
    cfg = TrainConfig(seed=cell.seed, **{f: opts[f] for f in fields})
    return cfg, {"corpus": opts["corpus"], "tokenizer": opts["tokenizer"]}


def prepare(cell):
    """The cell's backend, made with the cell's AdamW settings (beta1, beta2, weight_decay). A
    backend is given `optim` only when they differ from the defaults, so a plugin whose
    constructor takes no `optim` still trains with the defaults."""
    optim = cell_config(cell)[0].adamw()
    return prepare_backend(cell, **({} if optim == AdamWConfig() else {"optim": optim}))


def memory_estimate(cell) -> dict:
    cfg, _ = cell_config(cell)
    return cell.spec_obj().memory_estimate(cfg.batch_size, cell.dtype, "train", cfg.seq_len)


def run(backend, cell, on_step=None) -> dict:
    """The cell entry; on_step(step, loss, step_ms) after every step (progress display)."""
    cfg, corpus_opts = cell_config(cell)
    corpus = load_corpus(corpus_opts["corpus"], tokenizer=corpus_opts["tokenizer"])
    source = "option"
    if cfg.target_val_loss is None:
        target, source = default_target(backend.spec.name, corpus, cfg.seq_len or backend.spec.block_size)
        cfg = replace(cfg, target_val_loss=target)
    metrics = train(backend, corpus, cfg, on_step=on_step)
    metrics["corpus"] = corpus.describe()
    metrics["target_source"] = source
    metrics.update(compile_metrics(backend, metrics["step_ms"], cfg.warmup_steps))
    return metrics


def first_calls_excess_s(step_ms: list[float], warmup_steps: int) -> float:
    """What the first `warmup_steps` steps took beyond the median timed step: compilation,
    JIT tracing, autotuning and first allocations, measured alike for every backend."""
    timed = step_ms[warmup_steps:]
    if not timed or not warmup_steps:
        return 0.0
    med = float(np.median(timed))
    return sum(max(0.0, t - med) for t in step_ms[:warmup_steps]) / 1e3


def compile_metrics(backend, step_ms: list[float], warmup_steps: int) -> dict:
    """compile_s for every backend: what the backend says it compiled (a `compile_s` attribute,
    as torch.compile's: its graphs and their seconds in compile_s_by_graph), else its first
    calls' excess over the median step; compile_source says which. Both are inside the first
    steps' times, so inside time_to_target_s, and outside the throughput figures."""
    out = {"first_calls_excess_s": first_calls_excess_s(step_ms, warmup_steps)}
    if getattr(backend, "compile_s", None) is not None:
        out.update(compile_s=float(backend.compile_s), compile_source="backend",
                   compile_s_by_graph=dict(getattr(backend, "compile_s_by_graph", {}) or {}))
    else:
        out.update(compile_s=out["first_calls_excess_s"], compile_source="first calls' excess")
    return out
