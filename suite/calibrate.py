"""Host calibration: the measured peaks that MFU is computed against (never a datasheet).

Per host fingerprint (suite/env.py) and device type, a JSON file under
<cache>/calibration/<fingerprint>.json holds the best-of-N rate of a square GEMM per
dtype and library, and the memory bandwidth of a large copy. Measuring runs in its own
process (`python -m suite.calibrate --device cpu`) so a cell never pays for it in time or
memory, and the cell runner never imports torch. A CPU section takes a few seconds.

peak_flops(cal, device, dtype) is the best rate any library reached on that dtype: the
ceiling for every backend on the host, so backends are compared against the same number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.util import find_spec

import numpy as np

from gptspec.errors import GptbenchError
from gptspec.files import write_json_atomic
from suite.env import cache_dir, capture

CPU_GEMM_N = 1024
GPU_GEMM_N = 8192
CPU_COPY_BYTES = 64 * 2**20  # well past the last-level cache
GPU_COPY_BYTES = 1 * 2**30


def _best_time(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up: thread pools, page faults, kernel selection
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_gemm_flops(dtype: str = "float32", n: int = CPU_GEMM_N, repeats: int = 10) -> float:
    """Best-of-`repeats` FLOP/s of an n x n x n GEMM (2 n^3 FLOPs) through NumPy's BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    return 2 * n ** 3 / _best_time(lambda: a @ b, repeats)


def measure_bandwidth(nbytes: int = CPU_COPY_BYTES, repeats: int = 5) -> float:
    """Bytes/s of a large array copy, counting the read and the write (2 x nbytes)."""
    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    return 2 * nbytes / _best_time(lambda: np.copyto(b, a), repeats)


def _torch_gemm(torch, device: str, dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return 2 * n ** 3 / _best_time(lambda: a @ b, repeats, sync)


def measure_cpu() -> dict:
    gemm = {dt: {"numpy": measure_gemm_flops(dt)} for dt in ("float32", "float64")}
    bandwidth = {"numpy": measure_bandwidth()}
    if find_spec("torch") is not None:  # torch's CPU GEMM (oneDNN/MKL) may beat NumPy's BLAS
        import torch

        for dt in ("float32", "float64", "bfloat16"):
            gemm.setdefault(dt, {})["torch"] = _torch_gemm(torch, "cpu", getattr(torch, dt), CPU_GEMM_N, 10)
    return {"gemm_flops_per_s": gemm, "bandwidth_bytes_per_s": bandwidth}


def measure_cuda(device: str = "cuda") -> dict:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False: no GPU to calibrate")
    props = torch.cuda.get_device_properties(device)
    gemm = {}
    torch.backends.cuda.matmul.allow_tf32 = False
    gemm["float32"] = {"torch": _torch_gemm(torch, device, torch.float32, GPU_GEMM_N, 10)}
    torch.backends.cuda.matmul.allow_tf32 = True
    gemm["tf32"] = {"torch": _torch_gemm(torch, device, torch.float32, GPU_GEMM_N, 10)}
    torch.backends.cuda.matmul.allow_tf32 = False
    for dt in ("bfloat16", "float16"):
        gemm[dt] = {"torch": _torch_gemm(torch, device, getattr(torch, dt), GPU_GEMM_N, 20)}
    a = torch.empty(GPU_COPY_BYTES // 4, device=device)
    b = torch.empty_like(a)
    bw = 2 * GPU_COPY_BYTES / _best_time(lambda: b.copy_(a), 10, torch.cuda.synchronize)
    return {"gemm_flops_per_s": gemm, "bandwidth_bytes_per_s": {"torch": bw},
            "gpu": {"name": props.name, "memory_mb": props.total_memory // 2**20,
                    "cuda": torch.version.cuda}}


def measure(device: str = "cpu") -> dict:
    """One device section, measured in this process."""
    t0 = time.perf_counter()
    section = measure_cuda(device) if device.startswith("cuda") else measure_cpu()
    section.update(measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   threads=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
                   seconds=round(time.perf_counter() - t0, 2))
    return section


# --- the cache ----------------------------------------------------------------------------
class CalibrationError(GptbenchError):
    """A cache file that parses but is not a calibration (a peak that is a string or <= 0)."""


def cache_path(fingerprint: str):
    return cache_dir() / "calibration" / f"{fingerprint}.json"


def load(fingerprint: str) -> dict | None:
    """The cached calibration, None when there is none; CalibrationError naming the file
    and the first thing wrong when it is not one: every number MFU divides by is checked
    here, so a bad cache never reaches a cell."""
    path = cache_path(fingerprint)
    try:
        cal = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CalibrationError(f"calibration cache {path} is unreadable ({e}); `gptbench calibrate` measures "
                               "again and replaces it.") from None
    problem = _problem(cal)
    if problem:
        raise CalibrationError(f"calibration cache {path}: {problem}; `gptbench calibrate` measures again and "
                               "replaces it.")
    return cal


def _problem(cal) -> str | None:
    if not isinstance(cal, dict) or not isinstance(cal.get("env"), dict) or not isinstance(cal.get("fingerprint"), str):
        return "not a calibration (a JSON object with fingerprint, env and a section per device type)"
    for kind in ("cpu", "cuda"):
        section = cal.get(kind)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get("gemm_flops_per_s"), dict):
            return f"section {kind!r} has no gemm_flops_per_s table"
        rates = [((kind, "gemm_flops_per_s", dt, lib), v) for dt, libs in section["gemm_flops_per_s"].items()
                 for lib, v in (libs.items() if isinstance(libs, dict) else [("?", libs)])]
        rates += [((kind, "bandwidth_bytes_per_s", lib), v)
                  for lib, v in (section.get("bandwidth_bytes_per_s") or {}).items()]
        for where, v in rates:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                return f"{'.'.join(where)} is {v!r}, not a measured rate (a number > 0)"
    return None


def ensure(device: str = "cpu", recalibrate: bool = False, repair: bool = False) -> dict:
    """The host's calibration with a section for `device`'s type, measured in a child
    process with every core (the host's peak) if the cache lacks it. A bad cache is an
    error (CalibrationError) unless it is measured again anyway: recalibrate, or repair
    (what a cell does: a cache that is not one is replaced, not failed on forever)."""
    env = capture()
    kind = device.split(":")[0]
    try:
        cal = load(env["fingerprint"]) or {}
    except CalibrationError as e:
        if not (recalibrate or repair):
            raise
        print(f"{e} Measuring again now.", file=sys.stderr)
        cal = {}
    if recalibrate or kind not in cal:
        threads = str(os.cpu_count() or 1)
        child_env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                     "MKL_NUM_THREADS": threads}
        proc = subprocess.run([sys.executable, "-m", "suite.calibrate", "--device", device, "--measure"],
                              capture_output=True, text=True, env=child_env, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"calibrating {device} failed:\n{proc.stderr[-2000:]}")
        cal.update(fingerprint=env["fingerprint"], env=env)
        cal[kind] = json.loads(proc.stdout)
        path = cache_path(env["fingerprint"])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cal, indent=1)  # a concurrent reader sees the old or the new file
    return cal


def host_peak(device: str, dtype: str) -> tuple[float | None, str | None]:
    """(the host's calibrated peak for device and dtype, None) -- measuring it first if the
    cache lacks it or is not one -- or (None, why not): no calibration means no MFU, not no cell."""
    try:
        return peak_flops(ensure(device, repair=True), device, dtype), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"


def peak_flops(cal: dict, device: str, dtype: str) -> float | None:
    """The best measured GEMM FLOP/s on this device type and dtype (float32 on a GPU uses
    the TF32 rate when it was measured and the backend enables it: pass dtype 'tf32')."""
    rates = cal.get(device.split(":")[0], {}).get("gemm_flops_per_s", {}).get(dtype, {})
    return max(rates.values()) if rates else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m suite.calibrate")
    p.add_argument("--device", default="cpu")
    p.add_argument("--measure", action="store_true", help="measure here and print the section as JSON")
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.device)))
        return 0
    print(json.dumps(ensure(args.device, recalibrate=True), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
