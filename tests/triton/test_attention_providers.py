"""The attention benchmark's providers added with the Triton backend (workloads/attention.py):
SDPA pinned to each of its backends, where torch offers it, and the Triton kernels, which
are timed on a GPU only."""

import pytest
from conftest import DEVICE

from workloads.attention import bench, provider


def test_triton_provider_times_nothing_on_cpu():
    assert "CUDA GPU" in provider("triton").unavailable("cpu", "float32")


def test_a_pinned_sdpa_backend_torch_lacks_is_unavailable_with_torchs_reason():
    if DEVICE == "cuda":
        pytest.skip("every SDPA backend may exist on a GPU")
    reason = provider("sdpa-efficient").unavailable("cpu", "float32")
    assert "EFFICIENT_ATTENTION" in reason and "cpu/float32" in reason


@pytest.mark.parametrize("name", ["sdpa-flash", "sdpa-math"] + (["triton"] if DEVICE == "cuda" else []))
def test_pinned_providers_compute_causal_attention(name):
    p = provider(name)
    assert p.unavailable(DEVICE, "float32") is None
    rows = bench(p, B=1, H=2, T=48, D=16, dtype="float32", device=DEVICE, passes=("forward", "fwd_bwd"), repeats=1,
                 warmup=1)
    assert [r["pass"] for r in rows] == ["forward", "fwd_bwd"]
    assert all(r["max_abs_err"] < 1e-5 and r["ms_median"] > 0 for r in rows)
