"""The torch backend with its model under torch.compile (mode selectable).

Training and evaluation run the compiled model; the optimizer and generation (whose
shapes change every token) run eagerly. The first call with a new shape compiles, in a
warm-up forward + backward whose gradients are thrown away (the model's state is untouched).
The warm-up's wall time is added to `compile_s`: the first step's time contains it, so
that step alone took step_ms[0] - 1000 * compile_s; the train workload already leaves its
first steps out of the throughput figures, and the cells workload reports compile_s apart.
"""

from __future__ import annotations

import time

from backends.torch_eager import TorchBackend, torch

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileBackend(TorchBackend):
    name = "compile"

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        reason = super().unavailable(device, dtype)
        if reason is None and device.startswith("mps"):
            return "torch.compile's Inductor does not target MPS here"
        return reason

    def __init__(self, spec, device="cpu", dtype="float32", optim=None, attention=None, mode="default"):
        super().__init__(spec, device, dtype, optim, attention)
        if mode not in MODES:
            raise ValueError(f"torch.compile mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.model = torch.compile(self.module, mode=mode)
        self.compile_s = 0.0  # wall time spent compiling, summed over the graphs below
        self.compile_s_by_graph: dict[str, float] = {}  # e.g. "train (8, 16)": seconds

    def _warm(self, kind, shape, run):
        """Compile the graph of a new (kind, shape) by running `run` once, timed apart."""
        key = f"{kind} {tuple(shape)}"
        if key in self.compile_s_by_graph:
            return
        t0 = time.perf_counter()
        run()
        self.sync()
        self.compile_s_by_graph[key] = time.perf_counter() - t0
        self.compile_s += self.compile_s_by_graph[key]

    def _loss_of(self, x, y):
        def compile_train():
            _, loss = super(CompileBackend, self)._loss_of(x, y)
            loss.backward()  # compiles the backward graph too; these gradients are dropped
            self._zero_grads()

        self._warm("train", x.shape, compile_train)
        return super()._loss_of(x, y)

    def forward(self, idx, targets=None):
        if targets is None:
            self._warm("logits", idx.shape, lambda: super(CompileBackend, self).forward(idx))
        return super().forward(idx, targets)

    def loss(self, idx, targets):
        self._warm("loss", idx.shape, lambda: super(CompileBackend, self).loss(idx, targets))
        return super().loss(idx, targets)
