"""`gptbench check triton --device cpu` on tiny: the conformance ladder (ops, step 0, an AdamW
trajectory) against the float64 NumPy reference, in Triton's interpreter. Ten steps of
batch 4 keep it to ~15 s a dtype; the kernels' own tests cover lengths and head dims."""

import os
import subprocess
import sys

import pytest
from conftest import DEVICE

pytest.importorskip("triton", reason="the Triton kernels need pip install 'gptbench[triton]'")


@pytest.mark.parametrize("dtype, gelu", (("float32", "tanh"), ("float16", "tanh"), ("float32", "erf")))
def test_check_triton_passes_the_conformance_ladder(dtype, gelu):
    env = {**os.environ, "TRITON_INTERPRET": "1"} if DEVICE == "cpu" else dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "suite", "check", "triton", "--device", DEVICE, "--dtype", dtype,
                           "--spec", "tiny", "--gelu", gelu, "--steps", "10", "--batch-size", "4"],
                          capture_output=True, text=True, env=env, timeout=300)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0 and last == "PASS: 118/118 checks", proc.stdout[-3000:] + proc.stderr[-3000:]


def test_check_without_the_interpreter_says_how_on_cpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "suite", "check", "triton", "--device", "cpu", "--dtype", "float32"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "set TRITON_INTERPRET=1" in proc.stderr
