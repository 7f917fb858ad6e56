"""Training step time per backend and spec on this machine's CPU (a benchmark, not a test:
skipped by the default run). Run, with the thread count fixed for every library:

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 \
        pytest tests/benchmarks --benchmark-only --benchmark-group-by=param:spec --benchmark-json=bench.json

Each round is one train_step (forward, backward, AdamW) on the preset's batch, synchronised
by float(loss); warm-up rounds (compilation included) are left out. Results and ratios:
docs/results/torch-cpu-step-times.md.
"""

import numpy as np
import pytest
import torch

import backends
from suite.spec import preset
from suite.weights import init_params

THREADS = 2
# spec -> (batch size, timed rounds); shakespeare-char uses 8 of its preset's 64 sequences
# so that the NumPy reference's step stays in seconds
SPECS = {"tiny": (32, 30), "proust": (16, 10), "shakespeare-char": (8, 3)}


@pytest.mark.parametrize("backend", ["numpy", "torch", "compile"])
@pytest.mark.parametrize("spec", list(SPECS))
def test_train_step(benchmark, spec, backend):
    torch.set_num_threads(THREADS)
    s, (batch, rounds) = preset(spec), SPECS[spec]
    model = backends.load(backend)(s, dtype="float32")
    model.load_state(init_params(s))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, s.vocab_size, (2, batch, s.block_size))
    benchmark.extra_info.update(spec=spec, backend=backend, batch_size=batch, threads=THREADS,
                                tokens_per_step=batch * s.block_size)
    benchmark.pedantic(lambda: float(model.train_step(x, y, 1e-4)), rounds=rounds, warmup_rounds=2)
    if hasattr(model, "compile_s"):
        benchmark.extra_info["compile_s"] = model.compile_s
