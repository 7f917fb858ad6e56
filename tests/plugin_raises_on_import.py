"""A plugin module that fails while it is imported (tests/test_backend_loading.py)."""

raise RuntimeError("this plugin's configuration is missing")
