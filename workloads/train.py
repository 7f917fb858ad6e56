"""Training workload: N AdamW steps from canonical init on seeded batches.

Every step's time and loss are kept; the first `warmup_steps` are excluded from the
throughput figures (compilation, allocator warm-up). A non-finite loss stops training
at once with status `diverged`. With a target validation loss, the training time (sum
of step times, evaluation excluded) until the first evaluation at or below it is kept.

run(backend, cell) is the cell entry (suite/cell.py); train() is the library call.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from gptspec.data import BatchSampler, Corpus, check_vocab, load_corpus
from gptspec.optim import Schedule
from gptspec.weights import init_params


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

    def schedule(self) -> Schedule:
        return Schedule(lr=self.lr, warmup_steps=self.lr_warmup_steps, decay_steps=self.steps)


# Per-preset defaults: (batch_size, lr). tiny reaches its entropy floor in a few hundred
# steps at 1e-2; the larger ones follow nanoGPT's configs.
PRESET_DEFAULTS = {
    "tiny": (32, 1e-2),
    "lumgpt": (8, 3e-3),
    "proust": (16, 3e-3),
    "shakespeare-char": (64, 1e-3),
    "gpt2-124m": (8, 6e-4),
}


def config_for(spec_name: str, **overrides) -> TrainConfig:
    """TrainConfig with the preset's batch size and lr unless overridden (None = default)."""
    batch_size, lr = PRESET_DEFAULTS.get(spec_name, (8, 1e-3))
    base = {"batch_size": batch_size, "lr": lr}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def validation_batches(corpus: Corpus, cfg: TrainConfig, T: int) -> list:
    """A fixed set of validation batches, the same for every backend and every call."""
    sampler = BatchSampler(corpus.val, cfg.batch_size, T, seed=cfg.seed + 10_000)
    return [sampler.next() for _ in range(cfg.eval_batches)]


def evaluate(backend, batches) -> float:
    return float(np.mean([backend.loss(x, y) for x, y in batches]))


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
        "steps_to_target": reached[0] if reached else None,
        "time_to_target_s": reached[1] if reached else None,
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
# Cell options: TrainConfig fields (seed comes from the cell) and the corpus to train on.
OPTIONS = tuple(f for f in TrainConfig.__dataclass_fields__ if f != "seed") + ("corpus", "tokenizer")
# Default target on the synthetic corpus: this far (nats) above its exact entropy floor.
SYNTHETIC_TARGET_GAP = 0.1


def cell_config(cell) -> tuple[TrainConfig, dict]:
    """(TrainConfig, corpus options) of a train cell; evaluation every tenth of the run."""
    from workloads import workload_options

    opts = workload_options(cell, OPTIONS)
    corpus_opts = {"corpus": opts.pop("corpus", "synthetic"), "tokenizer": opts.pop("tokenizer", "char")}
    cfg = config_for(cell.spec["name"], seed=cell.seed, **opts)
    if "eval_interval" not in opts:
        cfg = replace(cfg, eval_interval=max(1, cfg.steps // 10))
    return cfg, corpus_opts


def memory_estimate(cell) -> dict:
    cfg, _ = cell_config(cell)
    return cell.spec_obj().memory_estimate(cfg.batch_size, cell.dtype, "train", cfg.seq_len)


def run(backend, cell) -> dict:
    cfg, corpus_opts = cell_config(cell)
    corpus = load_corpus(corpus_opts["corpus"], tokenizer=corpus_opts["tokenizer"])
    floor = corpus.block_floor(cfg.seq_len or backend.spec.block_size)
    if cfg.target_val_loss is None and floor is not None:
        cfg = replace(cfg, target_val_loss=floor + SYNTHETIC_TARGET_GAP)
    metrics = train(backend, corpus, cfg)
    metrics["corpus"] = corpus.describe()
    if hasattr(backend, "compile_s"):  # torch.compile: held in the first step's time, shown apart
        metrics["compile_s"] = backend.compile_s
    return metrics
