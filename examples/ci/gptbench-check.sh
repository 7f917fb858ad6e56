#!/usr/bin/env bash
# CI for a gptbench backend plugin, in any CI: copy to your repository and set the three
# variables. It proves, on a machine without a GPU, that the backend computes the
# reference's function (every conformance level, float32 and float64) and that train and
# generate run with it. docs/adding-a-backend.md, section 5.
set -euo pipefail

BACKEND="${BACKEND:-mypkg.backend:MyBackend}"   # module:Class, or your entry-point name
EXTRA="${EXTRA:-torch}"                          # the gptbench extra your framework needs
GPTBENCH="${GPTBENCH:-git+https://github.com/gptbench/gptbench}"  # add @TAG to pin a version

if [ -z "${GPTBENCH_CI_NO_INSTALL:-}" ]; then  # set it where gptbench and the backend are installed already
    python3 -m venv .venv-gptbench
    . .venv-gptbench/bin/activate
    # a CPU-only runner: keep pip from pulling a CUDA build of torch
    pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu "gptbench[${EXTRA},dev] @ ${GPTBENCH}"
    pip install --quiet -e .
fi

gptbench backends
gptbench check "$BACKEND" --dtype float32
gptbench check "$BACKEND" --dtype float64
pytest -p no:cacheprovider "--gptbench-backend=$BACKEND" --gptbench-dtype float32,float64 -rs -k gptbench
out="$(mktemp -d)"
gptbench train --backend "$BACKEND" --dtype float32 --steps 20 --out "$out/run"
gptbench generate --backend "$BACKEND" --weights "$out/run/weights.safetensors" --prompt "ab" --max-new-tokens 40 --top-k 4
