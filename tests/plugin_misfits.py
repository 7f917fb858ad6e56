"""Plugin classes that do not fit the backend contract (tests/test_backend_loading.py)."""

from backends.base import Backend


class NoDtypeInUnavailable(Backend):
    name = "no-dtype"

    @classmethod
    def unavailable(cls, device="cpu"):
        return None


class UnavailableNotAClassmethod(Backend):
    name = "not-classmethod"

    def unavailable(self, device="cpu", dtype="float32"):
        return None


class StepWithoutLr(Backend):
    name = "step-without-lr"

    def step(self):
        return 0.0


class GenerateWithoutWindow(Backend):
    """Overrides generate with the signature before the window and vocab_limit keywords."""
    name = "generate-without-window"

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, seed=0, on_logits=None):
        return idx


class NotABackend:
    name = "plain"


class UnavailableRaises(Backend):
    name = "unavailable-raises"

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        raise RuntimeError("probing the device failed")
