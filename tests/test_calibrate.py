"""Host calibration and environment capture, against independent measurements."""

import json
import os
import subprocess
import time

import numpy as np
import psutil
import pytest

from suite import calibrate, env
from suite.cli import main


def test_environment_capture_matches_the_system():
    e = env.capture()
    assert e["cores_logical"] == os.cpu_count()
    assert abs(e["ram_mb"] - psutil.virtual_memory().total / 2**20) < 1
    assert e["libraries"]["numpy"] == np.__version__
    head = subprocess.run(["git", "-C", str(env.REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert e["code_version"].split("+")[0] == head
    assert e["fingerprint"] == env.fingerprint(e) and len(e["fingerprint"]) == 16
    # the host name is not part of it; the CPU model is
    assert env.fingerprint({**e, "hostname": "elsewhere"}) == e["fingerprint"]
    assert env.fingerprint({**e, "cpu_model": "Other CPU"}) != e["fingerprint"]


def test_gemm_rate_matches_an_independent_timing():
    n = 512
    rate = calibrate.measure_gemm_flops("float32", n=n, repeats=5)
    a = np.ones((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(5))
    independent = 2 * n ** 3 / best
    # best-of-5 of the same op: the same order of magnitude even on a busy host
    assert independent / 4 < rate < independent * 4


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_calibration_is_cached_per_host_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBENCH_CACHE_DIR", str(tmp_path))
    cal = calibrate.ensure("cpu")
    path = tmp_path / "calibration" / f"{env.capture()['fingerprint']}.json"
    assert json.loads(path.read_text()) == cal
    section = cal["cpu"]
    assert set(section["gemm_flops_per_s"]) >= {"float32", "float64"}
    assert section["threads"] == os.cpu_count() and section["seconds"] < 30
    assert 1e9 < calibrate.peak_flops(cal, "cpu", "float32") == max(section["gemm_flops_per_s"]["float32"].values())
    assert section["bandwidth_bytes_per_s"]["numpy"] > 1e9
    assert calibrate.ensure("cpu") == cal  # cached: not measured again
    assert calibrate.peak_flops(cal, "cuda", "bfloat16") is None


# --- a framework's memory overhead (gptbench calibrate --overhead) ----------------------------
def test_overhead_of_the_numpy_reference_is_the_registrys_and_the_line_is_printed(capsys):
    """Measured as the registry's numbers were: on tiny the NumPy reference costs its
    registry overhead (45 MB: interpreter, numpy, corpus) within 15 MB."""
    import backends

    assert main(["calibrate", "--overhead", "numpy", "--spec", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row, = out["specs"]
    assert row["overhead_mb"] == pytest.approx(row["peak_rss_mb"] - row["tensors_mb"])
    assert abs(out["overhead_mb"] - backends.NUMPY.overhead_mb) <= 15
    assert out["line"] == f'framework = Framework("numpy", {out["overhead_mb"]:.1f}, ("numpy",))'


def test_overhead_of_a_torch_plugin_is_torchs_own_measured_the_same_way():
    """examples/minimal_torch.py is torch and little else: its overhead is torch's, measured
    the same way on the same spec, within 15% (the two models allocate alike; measured 388 vs
    385 MB on tiny, load 3.5 on 2 cores)."""
    from suite import overhead

    plugin = overhead.measure("examples.minimal_torch:MinimalTorch", specs=("tiny",))
    torch = overhead.measure("torch", specs=("tiny",))
    assert torch.overhead_mb > 200  # torch's import alone is ~220 MB: a measurement, not a default
    assert abs(plugin.overhead_mb - torch.overhead_mb) <= 0.15 * torch.overhead_mb
    assert plugin.line() == f'framework = Framework("torch", {plugin.overhead_mb:.1f}, ("torch", "triton"))'
    assert plugin.ratios() == [pytest.approx(plugin.rows[0].peak_mb / (plugin.rows[0].tensors_mb
                                                                       + plugin.overhead_mb))]


def test_overhead_of_a_backend_that_cannot_run_is_an_error(capsys):
    assert main(["calibrate", "--overhead", "tests_no_such_module:Backend", "--spec", "tiny"]) == 2
    assert "ended unavailable" in capsys.readouterr().err
