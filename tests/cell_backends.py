"""Backends that fail on purpose, loaded by the cell child as `cell_backends:Class` (the
tests put this folder on the child's PYTHONPATH)."""

import ctypes

from backends.numpy_ref import NumpyBackend


class RaisingBackend(NumpyBackend):
    name = "raising"

    def train_step(self, x, y, lr):
        raise RuntimeError("deliberate failure in train_step")


class SegfaultBackend(NumpyBackend):
    name = "segfault"

    def train_step(self, x, y, lr):
        ctypes.string_at(0)  # reads address 0: SIGSEGV, no Python exception, no record


class VersionedBackend(NumpyBackend):
    """A plugin that reports what it runs on (Backend.versions), kept in its records."""
    name = "versioned"

    @classmethod
    def versions(cls):
        return {"myframework": "1.2.3"}
