"""The Triton kernel tests run on a GPU when torch sees one, else in Triton's interpreter on
the CPU. TRITON_INTERPRET is read when a kernel is decorated, so it is set here, before any
test module of this folder imports a kernel module (backends.triton_attn imports them lazily)."""

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def poison(monkeypatch):
    """Make every buffer a kernel module allocates start as NaN, so unwritten elements show."""
    def apply(module):
        monkeypatch.setattr(module, "_empty", lambda shape, dtype, device:
                            torch.full(shape, float("nan"), dtype=dtype, device=device))
    return apply
