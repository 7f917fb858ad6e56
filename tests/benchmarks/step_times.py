"""Training step time of numpy, torch, compile, jax and mlx (those installed) on tiny,
proust and shakespeare-char on this machine's CPU, with a fixed thread count (a benchmark
script, not a test):

    python tests/benchmarks/step_times.py [--threads 2] [--backends numpy,torch,jax] [--json out.json]

Each round times one train_step (forward, backward, AdamW; float(loss) synchronises) of
every backend in turn, so a shared machine's load falls on all of them alike; the ratios
to torch eager are per round, then the median. Two warm-up steps per backend (compilation
included: torch.compile, jax.jit, mx.compile) are left out; compile time is printed apart.
Threads: OpenMP/OpenBLAS/MKL variables and torch.set_num_threads; XLA's CPU pool has no
size flag and takes one thread per core, so jax gets the thread count only when it equals
the core count (or 1: XLA_FLAGS turns its multi-threaded Eigen off); MLX's CPU backend
follows the BLAS variables. Results: docs/results/torch-cpu-step-times.md,
docs/results/jax-mlx-cpu-step-times.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

BACKENDS = ("numpy", "torch", "compile", "jax", "mlx")
# spec -> (batch size, timed rounds); shakespeare-char uses 8 of its preset's 64 sequences
# so that the NumPy reference's step stays in seconds
SPECS = {"tiny": (32, 50), "proust": (16, 10), "shakespeare-char": (8, 5)}
WARMUP = 2


def measure(spec_name: str, batch: int, rounds: int, names: list[str]) -> dict:
    import numpy as np

    import backends
    from gptspec.spec import preset
    from gptspec.weights import init_params

    spec = preset(spec_name)
    x, y = np.random.default_rng(0).integers(0, spec.vocab_size, (2, batch, spec.block_size))
    models, compile_s = {}, {}
    for name in names:
        models[name] = backends.load(name)(spec, dtype="float32")
        models[name].load_state(init_params(spec))
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            float(models[name].train_step(x, y, 1e-4))
        compile_s[name] = time.perf_counter() - t0  # the warm-up: compilation and two steps
    ms = {name: [] for name in names}
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            float(model.train_step(x, y, 1e-4))
            ms[name].append((time.perf_counter() - t0) * 1e3)
    ms = {n: np.array(v) for n, v in ms.items()}
    return {"spec": spec_name, "batch_size": batch, "seq_len": spec.block_size, "rounds": rounds,
            "step_ms": {n: v.tolist() for n, v in ms.items()},
            "median_ms": {n: float(np.median(v)) for n, v in ms.items()},
            "over_torch": {n: float(np.median(v / ms["torch"])) for n, v in ms.items()},
            "warmup_s": compile_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", default=None, help="comma-separated; default: those of "
                   f"{', '.join(BACKENDS)} available here (torch is always timed: ratios are to it)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before NumPy, torch, jax and mlx load their thread pools
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    elif args.threads != os.cpu_count():
        print(f"note: jax uses {os.cpu_count()} threads (one per core), not {args.threads}")
    import torch

    import backends

    torch.set_num_threads(args.threads)
    names = args.backends.split(",") if args.backends else \
        [n for n in BACKENDS if backends.load(n).unavailable("cpu", "float32") is None]
    names = ["torch"] + [n for n in names if n != "torch"]
    results = [measure(spec, *SPECS[spec], names) for spec in SPECS]
    versions = {n: _version(n) for n in names}
    print(f"threads {args.threads}, {', '.join(f'{k} {v}' for k, v in versions.items() if v)}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| spec | B × T | rounds | " + " | ".join(f"{n} ms" for n in names) + " | "
          + " | ".join(f"{n} / torch" for n in names if n != "torch") + " |")
    print("|---" * (3 + 2 * len(names) - 1) + "|")
    for r in results:
        m, q = r["median_ms"], r["over_torch"]
        print(f"| {r['spec']} | {r['batch_size']} × {r['seq_len']} | {r['rounds']} | "
              + " | ".join(f"{m[n]:.1f}" for n in names) + " | "
              + " | ".join(f"{q[n]:.2f}" for n in names if n != "torch") + " |")
    print("warm-up s (2 steps, compilation included): " + "; ".join(
        f"{r['spec']}: " + ", ".join(f"{n} {r['warmup_s'][n]:.1f}" for n in names) for r in results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "versions": versions, "results": results}, f, indent=1)
    return 0


def _version(backend: str) -> str | None:
    """The framework's version: NumPy for numpy, torch for torch and compile."""
    from importlib.metadata import PackageNotFoundError, version

    package = {"numpy": "numpy", "torch": "torch", "compile": None, "jax": "jaxlib", "mlx": "mlx"}.get(backend)
    try:
        return version(package) if package else None
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
