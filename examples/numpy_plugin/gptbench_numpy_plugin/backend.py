"""The NumPy reference under a plugin's name: the example is the packaging (an entry point,
a declared framework, the framework as the package's own dependency), not the math. A real
plugin puts its own implementation here (docs/adding-a-backend.md)."""

from backends.numpy_ref import NumpyBackend


class NumpyPlugin(NumpyBackend):
    name = "numpy-plugin"
    framework = "numpy"  # its memory overhead and heavy modules: the registry's numpy (45 MB)
