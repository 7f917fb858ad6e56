"""pytest-benchmark suite: one training step per backend and spec, and the attention op
per provider and length, saved as JSON that `--benchmark-compare` diffs across commits.

Skipped by the normal run (pyproject adds --benchmark-skip). Run it with:
    pytest tests/benchmarks --benchmark-only --benchmark-autosave   # .benchmarks/, per commit
    pytest tests/benchmarks --benchmark-only --benchmark-compare    # against the last saved run
(--benchmark-only after the default --benchmark-skip wins.)
A backend or provider this host lacks is skipped with its reason.
"""

import numpy as np
import pytest

import backends
from gptspec.data import BatchSampler, load_corpus
from gptspec.spec import preset
from gptspec.weights import init_params
from workloads import attention
from workloads.train import config_for

TRAIN_BACKENDS = ("numpy", "torch", "compile")
TRAIN_SPECS = ("tiny", "lumgpt")
ATTENTION_PROVIDERS = ("numpy", "math", "sdpa")
ATTENTION_T = (128, 256)


def _backend(name, spec):
    if name not in backends.names():
        pytest.skip(f"backend {name!r} is not in this checkout")
    try:
        cls = backends.load(name)
    except ImportError as e:
        pytest.skip(f"backend {name!r} needs {e.name}")
    reason = cls.unavailable("cpu", "float32")
    if reason:
        pytest.skip(reason)
    return cls(spec, device="cpu", dtype="float32")


@pytest.mark.parametrize("spec_name", TRAIN_SPECS)
@pytest.mark.parametrize("backend_name", TRAIN_BACKENDS)
def test_train_step(benchmark, backend_name, spec_name):
    spec = preset(spec_name)
    model = _backend(backend_name, spec)
    model.load_state(init_params(spec, 0))
    cfg = config_for(spec_name)
    x, y = BatchSampler(load_corpus("synthetic").train, cfg.batch_size, spec.block_size, seed=0).next()
    tokens = cfg.batch_size * spec.block_size
    benchmark.extra_info.update(tokens_per_step=tokens, flops_per_step=spec.flops_per_token() * tokens)
    loss = benchmark.pedantic(lambda: float(model.train_step(x, y, cfg.lr)), rounds=8, warmup_rounds=2)
    assert np.isfinite(loss)


@pytest.mark.parametrize("T", ATTENTION_T)
@pytest.mark.parametrize("provider_name", ATTENTION_PROVIDERS)
def test_attention_fwd_bwd(benchmark, provider_name, T):
    prov = attention.provider(provider_name)
    reason = prov.unavailable("cpu", "float32")
    if reason:
        pytest.skip(reason)
    B, H, D = 8, 4, 32  # lumgpt's heads
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((B, H, T, D)) for _ in range(4))
    run = prov.prepare(q, k, v, dout, "float32", "cpu")
    benchmark.extra_info.update(B=B, H=H, T=T, D=D, flops=attention.causal_flops(B, H, T, D, "fwd_bwd"))
    benchmark.pedantic(run.fwd_bwd, rounds=10, warmup_rounds=2)
