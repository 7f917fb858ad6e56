"""The registry of implementations (backends/__init__.py): one entry per name, and every
part of the suite that needs to know about a backend (memory overhead, heavy modules,
attention lookup, plugins) asks it."""

import json
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

import backends
from backends.attention_ops import NumpyAttention
from backends.numpy_ref import NumpyBackend
from gptspec.errors import BackendError
from suite import cell, memory
from suite.cell import Cell
from suite.cli import main
from workloads import attention

REPO = Path(__file__).resolve().parents[1]
TOY = backends.Framework("toyfw", 77.0, ("toy_framework",))


class ToyAttention(NumpyAttention):
    name = "toy"


class ToyBackend(NumpyBackend):
    name = "toy"


class JaxPlugin(NumpyBackend):
    framework = "jax"


class OwnFrameworkPlugin(NumpyBackend):
    framework = TOY


class SilentPlugin(NumpyBackend):
    pass


class MisdeclaredPlugin(NumpyBackend):
    framework = "tensorflow"


@pytest.mark.parametrize("name", list(backends.REGISTRY))
def test_each_entry_is_one_thing_under_one_name(name):
    """Its model and its attention op carry the entry's name, and live in backends/ (a
    registry string into a package above would be an upward import at run time)."""
    e = backends.REGISTRY[name]
    for target, load in ((e.model, backends.load), (e.attention, backends.load_attention)):
        if target:
            assert target.startswith("backends.")
            assert load(name).name == name


def test_adding_a_backend_is_one_registry_entry(monkeypatch):
    entry = backends.Entry("toy", TOY, None, model=f"{__name__}:ToyBackend", attention=f"{__name__}:ToyAttention")
    monkeypatch.setitem(backends.REGISTRY, "toy", entry)
    monkeypatch.setitem(sys.modules, "toy_framework", types.ModuleType("toy_framework"))
    assert memory.overhead_mb("toy") == 77.0
    cell_ = Cell.make("toy", "attention", "tiny", options={"seq_lens": [8], "batch_size": 1, "repeats": 1})
    assert memory.estimate_fields(cell_)["memory_estimate"]["overhead_mb"] == 77.0
    assert "toy_framework" in cell.heavy_modules_imported()
    assert backends.load("toy") is ToyBackend and "toy" in backends.names()
    rows = attention.run(attention.prepare(cell_)(), cell_)["rows"]
    assert {r["provider"] for r in rows} == {"toy"} and all(r["max_abs_err"] < 1e-5 for r in rows)
    monkeypatch.delitem(backends.REGISTRY, "toy")
    assert "toy_framework" not in cell.heavy_modules_imported()


def test_an_entry_without_its_framework_data_is_an_error():
    with pytest.raises(BackendError, match="'toy' has no framework"):
        backends.Entry("toy", None, None, model=f"{__name__}:ToyBackend")
    with pytest.raises(BackendError, match="'toy' offers neither"):
        backends.Entry("toy", TOY, None)


def test_one_word_means_one_thing_across_cells():
    with pytest.raises(BackendError, match="'sdpa' is an attention op"):
        backends.load("sdpa")
    with pytest.raises(attention.Unavailable, match="no attention provider 'torch'"):
        attention.provider("torch")
    assert isinstance(attention.provider("numpy"), NumpyAttention)


def test_plugins_declare_their_framework_or_get_the_stated_default():
    assert memory.overhead_mb(f"{__name__}:JaxPlugin") == backends.JAX.overhead_mb
    assert memory.overhead_mb(f"{__name__}:OwnFrameworkPlugin") == 77.0
    assert memory.overhead_mb(f"{__name__}:SilentPlugin") == backends.PLUGIN_DEFAULT_FRAMEWORK.overhead_mb
    # a plugin that does not load here ends unavailable in its cell; the estimate takes the default
    assert memory.overhead_mb("nosuch_pkg.mod:Cls") == backends.PLUGIN_DEFAULT_FRAMEWORK.overhead_mb
    with pytest.raises(BackendError, match="declares framework 'tensorflow'"):
        memory.overhead_mb(f"{__name__}:MisdeclaredPlugin")


def test_every_entrys_extra_is_an_extra_that_ci_installs():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    in_all = re.search(r"gptbench\[([^\]]+)\]", " ".join(extras["all"])).group(1).split(",")
    ci = re.search(r"-e '\.\[([^\]]+)\]'", (REPO / ".ci" / "run").read_text()).group(1).split(",")
    for e in backends.REGISTRY.values():
        if e.extra:
            assert e.extra in extras and e.extra in in_all and e.extra in ci, e.name


def test_backends_command_shows_each_entrys_extra(capsys):
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["jax"]["extra"] == "jax" and rows["numpy"]["extra"] is None
    assert "sdpa" not in rows  # an attention op, not a model
