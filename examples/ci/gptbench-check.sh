#!/usr/bin/env bash
# CI for a gptbench backend plugin, in any CI: copy to your repository and set the
# variables below. It proves, on a machine without a GPU, that the backend computes the
# reference's function (every conformance level, float32 and float64) and that train and
# generate run with it. docs/adding-a-backend.md, section 5.
#
# Your package's own dependencies bring its framework (tensorflow, numpy, torch ...: list
# it in your pyproject's `dependencies`); gptbench brings only its core. EXTRA is for a
# backend built on a framework gptbench itself has an extra for, when you want gptbench's
# pinned build of it (torch, jax, mlx); leave it empty otherwise.
set -euo pipefail

BACKEND="${BACKEND:-mypkg.backend:MyBackend}"  # module:Class, or your entry-point name
EXTRA="${EXTRA-}"                               # a gptbench extra (torch, jax, mlx), or empty: none
PLUGIN="${PLUGIN:-.}"                           # your package, as pip installs it
GPTBENCH_REF="${GPTBENCH_REF:-v0.1.0}"          # the gptbench release (a tag) or commit to check against
GPTBENCH="${GPTBENCH:-git+https://github.com/gptbench/gptbench@${GPTBENCH_REF}}"
# the README's constraints: CPU builds (torch==2.13.0+cpu, from PyTorch's CPU index: set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu when your framework is torch)
CONSTRAINTS="${CONSTRAINTS:-https://raw.githubusercontent.com/gptbench/gptbench/${GPTBENCH_REF}/constraints/cpu.txt}"

if [ -z "${GPTBENCH_CI_NO_INSTALL:-}" ]; then  # set it where gptbench and the backend are installed already
    python3 -m venv .venv-gptbench
    . .venv-gptbench/bin/activate
    pip install --quiet -c "$CONSTRAINTS" "gptbench[dev${EXTRA:+,$EXTRA}] @ ${GPTBENCH}"
    pip install --quiet -c "$CONSTRAINTS" "$PLUGIN"
fi

gptbench backends
gptbench check "$BACKEND" --dtype float32
gptbench check "$BACKEND" --dtype float64
pytest -p no:cacheprovider "--gptbench-backend=$BACKEND" --gptbench-dtype float32,float64 -rs -k gptbench
out="$(mktemp -d)"
gptbench train --backend "$BACKEND" --dtype float32 --steps 20 --out "$out/run"
gptbench generate --backend "$BACKEND" --weights "$out/run/weights.safetensors" --prompt "ab" --max-new-tokens 40 --top-k 4
