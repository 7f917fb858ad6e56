import json

import pytest

import backends
from backends.numpy_ref import NumpyBackend
from gptspec.errors import BackendError
from suite.cli import main


class _EntryPoint:
    def __init__(self, name, target):
        self.name, self.target = name, target

    def load(self):
        module, _, cls = self.target.partition(":")
        return getattr(__import__(module, fromlist=[cls]), cls)


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
