"""A backend module whose dependency is not installed (for the `unavailable` status)."""

import gptbench_no_such_accelerator  # noqa: F401

from backends.numpy_ref import NumpyBackend


class NeedsAcceleratorBackend(NumpyBackend):
    name = "needs-accelerator"
