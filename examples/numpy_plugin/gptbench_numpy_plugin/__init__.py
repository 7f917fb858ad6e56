"""An example gptbench backend plugin package (examples/numpy_plugin/README.md)."""
