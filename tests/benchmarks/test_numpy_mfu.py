"""NumPy reference training step on shakespeare-char shapes: model FLOP/s as a fraction of
this machine's float32 GEMM rate, both measured in the same run (target >= 0.5).

    pytest tests/benchmarks/test_numpy_mfu.py --benchmark-only --benchmark-json=OUT.json
"""

import numpy as np
import pytest

from backends.numpy_ref import NumpyBackend
from gptspec.spec import preset
from gptspec.weights import init_params
from suite.calibrate import measure_gemm_flops


@pytest.mark.parametrize("batch_size", [8, 16])
def test_numpy_train_step_model_flops_vs_gemm(benchmark, batch_size):
    spec = preset("shakespeare-char")
    model = NumpyBackend(spec)
    model.load_state(init_params(spec, 0))
    rng = np.random.default_rng(0)
    x = rng.integers(0, spec.vocab_size, (batch_size, spec.block_size))
    y = rng.integers(0, spec.vocab_size, (batch_size, spec.block_size))
    gemm_before = measure_gemm_flops("float32", 1024)
    benchmark.pedantic(model.train_step, args=(x, y, 1e-3), rounds=5, warmup_rounds=1)
    gemm = max(gemm_before, measure_gemm_flops("float32", 1024))  # the better of two: the peak
    step_s = benchmark.stats.stats.median
    model_flops = spec.flops_per_token() * batch_size * spec.block_size / step_s
    benchmark.extra_info.update(batch_size=batch_size, gemm_gflops=gemm / 1e9,
                                model_gflops=model_flops / 1e9, fraction_of_gemm=model_flops / gemm)
    print(f"\nB={batch_size}: step {step_s * 1e3:.0f} ms, model {model_flops / 1e9:.1f} GFLOP/s, "
          f"GEMM {gemm / 1e9:.1f} GFLOP/s, fraction {model_flops / gemm:.3f}")
