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


class NotABackend:
    name = "plain"


class UnavailableRaises(Backend):
    name = "unavailable-raises"

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        raise RuntimeError("probing the device failed")
