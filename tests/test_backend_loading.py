import json

import pytest

import backends
from backends.numpy_ref import NumpyBackend
from gptspec.errors import BackendError
from gptspec.spec import preset
from suite.cli import main


class _EntryPoint:
    """importlib.metadata.EntryPoint's name and value ('module:Class')."""
    def __init__(self, name, value):
        self.name, self.value = name, value


def test_builtin_module_path_and_entry_point_all_find_the_class(monkeypatch):
    assert backends.load("numpy") is NumpyBackend
    assert backends.load("backends.numpy_ref:NumpyBackend") is NumpyBackend
    monkeypatch.setattr(backends, "_entry_points",
                        lambda: {"myplugin": _EntryPoint("myplugin", "backends.numpy_ref:NumpyBackend")})
    assert backends.load("myplugin") is NumpyBackend
    assert "myplugin" in backends.names()


@pytest.mark.parametrize("name, needle", [
    ("nosuch", "unknown backend 'nosuch'"),
    ("nosuch_pkg.mod:Cls", "module 'nosuch_pkg.mod' not found"),
    ("backends.numpy_ref:Nope", "has no class 'Nope'"),
])
def test_unknown_backends_are_explained(name, needle):
    with pytest.raises(BackendError, match=needle):
        backends.load(name)


def test_unavailable_says_why():
    assert NumpyBackend.unavailable("cpu", "float32") is None
    assert "cuda" in NumpyBackend.unavailable("cuda", "float32")
    assert "bfloat16" in NumpyBackend.unavailable("cpu", "bfloat16")


def test_backends_command_lists_availability(capsys):
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["numpy"]["available"] is True
    assert main(["backends", "--device", "cuda", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["numpy"]["available"] is False and "cuda" in rows["numpy"]["reason"]


@pytest.mark.parametrize("target, needles", [
    ("plugin_misfits:NoDtypeInUnavailable", ["unavailable(device='cpu')", "unavailable(cls, device, dtype)"]),
    ("plugin_misfits:UnavailableNotAClassmethod", ["must be a classmethod"]),
    ("plugin_misfits:StepWithoutLr", ["StepWithoutLr.step(self)", "step(self, lr)"]),
    ("plugin_misfits:GenerateWithoutWindow", ["GenerateWithoutWindow.generate(", "vocab_limit=None)"]),
    ("plugin_misfits:NotABackend", ["not a subclass of backends.base.Backend"]),
    ("plugin_misfits:UnavailableRaises", ["raised RuntimeError: probing the device failed"]),
    ("plugin_raises_on_import:Anything", ["importing 'plugin_raises_on_import' raised RuntimeError",
                                          "configuration is missing"]),
    ("plugin_needs_a_missing_module:X", ["not found"]),
])
def test_a_plugin_that_does_not_fit_gets_one_paragraph_and_exit_2(target, needles, capsys):
    assert main(["check", target, "--dtype", "float32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptbench check: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_the_label_comes_from_the_class_not_from_how_it_was_named(capsys):
    from backends.contract import describe, label

    assert label(NumpyBackend) == "numpy" and describe(NumpyBackend(preset("tiny")))["name"] == "numpy"
    for given in ("numpy", "backends.numpy_ref:NumpyBackend"):
        assert main(["check", given, "--dtype", "float32", "--steps", "2", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["backend"] == "numpy"

    class Renamed(NumpyBackend):  # a subclass is not the backend it inherits from
        pass

    assert label(Renamed) == "Renamed"


def test_a_plugins_versions_and_name_reach_its_record():
    from suite.cell import Cell, measure
    from suite.record import Limits

    record, _ = measure(Cell.make("cell_backends:VersionedBackend", "train", "tiny", options={"steps": 2}),
                        Limits(threads=1))
    assert record.status == "ok", record.traceback
    assert record.implementation == {"name": "versioned", "class": "cell_backends:VersionedBackend",
                                     "versions": {"myframework": "1.2.3"}}
    from backends.contract import describe

    class Broken(NumpyBackend):
        @classmethod
        def versions(cls):
            raise RuntimeError("no version file")

    assert describe(Broken)["versions"] == {"error": "versions() raised RuntimeError: no version file"}
