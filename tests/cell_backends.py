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


# A helper that escapes the cell's process group: a launcher starts it in a session of its
# own and exits at once, so it is orphaned before the runner could ever see it as the
# child's child. It writes its pid to $HOG_PIDFILE, then holds HOG_MB of touched memory.
HOG = """
import os, sys, time
with open(os.environ["HOG_PIDFILE"] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(os.environ["HOG_PIDFILE"] + ".tmp", os.environ["HOG_PIDFILE"])
hog = b"x" * (int(os.environ["HOG_MB"]) * 2**20)  # written, so resident
time.sleep(3600)
"""
# ... and with an environment of its own (no marker): found as the runner's orphan, not by name
LAUNCHER = ("import os, subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]], start_new_session=True, "
            "env={k: v for k, v in os.environ.items() if k.startswith('HOG_')})")


class EscapingHelperBackend(NumpyBackend):
    """Starts the escaping helper at its first step, then trains on slowly."""
    name = "escaping-helper"

    def train_step(self, x, y, lr):
        import os
        import subprocess
        import sys
        import time

        if not getattr(self, "_launched", False):
            self._launched = True
            subprocess.run([sys.executable, "-c", LAUNCHER, HOG], check=True)  # the launcher is gone after this
            while not os.path.exists(os.environ["HOG_PIDFILE"]):
                time.sleep(0.01)
        time.sleep(0.2)
        return super().train_step(x, y, lr)
