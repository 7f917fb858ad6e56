"""gptbench suite: the shared spec, weights, data, and the machinery around backends."""

__version__ = "0.1.0"
