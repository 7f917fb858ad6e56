"""The shared definition of the model, at the bottom of the stack (docs/architecture.md):
the spec and its presets (spec.py), canonical weights (weights.py), nanoGPT's checkpoint
folders and meta.pkl (nanogpt.py), data and tokenizers (data.py), optimizer semantics (optim.py), errors (errors.py) and atomic
file writes (files.py). Every backend imports it; it imports nothing of gptbench's above it."""
