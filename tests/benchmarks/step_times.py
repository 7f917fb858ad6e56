"""Training step time of numpy, torch and compile on tiny, proust and shakespeare-char on
this machine's CPU, with a fixed thread count (a benchmark script, not a test):

    python tests/benchmarks/step_times.py [--threads 2] [--json out.json]

Each round times one train_step (forward, backward, AdamW; float(loss) synchronises) of
every backend in turn, so a shared machine's load falls on all of them alike; the ratios
are per round, then the median. Two warm-up steps per backend (compilation included) are
left out; compile time is printed apart. Results: docs/results/torch-cpu-step-times.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

BACKENDS = ("numpy", "torch", "compile")
# spec -> (batch size, timed rounds); shakespeare-char uses 8 of its preset's 64 sequences
# so that the NumPy reference's step stays in seconds
SPECS = {"tiny": (32, 50), "proust": (16, 10), "shakespeare-char": (8, 5)}
WARMUP = 2


def measure(spec_name: str, batch: int, rounds: int) -> dict:
    import numpy as np

    import backends
    from suite.spec import preset
    from suite.weights import init_params

    spec = preset(spec_name)
    x, y = np.random.default_rng(0).integers(0, spec.vocab_size, (2, batch, spec.block_size))
    models = {}
    for name in BACKENDS:
        models[name] = backends.load(name)(spec, dtype="float32")
        models[name].load_state(init_params(spec))
        for _ in range(WARMUP):
            float(models[name].train_step(x, y, 1e-4))
    ms = {name: [] for name in BACKENDS}
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            float(model.train_step(x, y, 1e-4))
            ms[name].append((time.perf_counter() - t0) * 1e3)
    ms = {n: np.array(v) for n, v in ms.items()}
    return {"spec": spec_name, "batch_size": batch, "seq_len": spec.block_size, "rounds": rounds,
            "step_ms": {n: v.tolist() for n, v in ms.items()},
            "median_ms": {n: float(np.median(v)) for n, v in ms.items()},
            "numpy_over_torch": float(np.median(ms["numpy"] / ms["torch"])),
            "torch_over_compile": float(np.median(ms["torch"] / ms["compile"])),
            "compile_s": models["compile"].compile_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before NumPy and torch load their thread pools
    import torch

    torch.set_num_threads(args.threads)
    results = [measure(name, *SPECS[name]) for name in SPECS]
    print(f"threads {args.threads}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    print("| spec | B × T | rounds | numpy ms | torch ms | compile ms | compile_s | numpy / torch | torch / compile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["median_ms"]
        print(f"| {r['spec']} | {r['batch_size']} × {r['seq_len']} | {r['rounds']} | {m['numpy']:.1f} | "
              f"{m['torch']:.1f} | {m['compile']:.1f} | {r['compile_s']:.1f} | {r['numpy_over_torch']:.2f} | "
              f"{r['torch_over_compile']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
