"""The layers of docs/architecture.md, from the source: every import of one of the project's
top-level packages (lazy ones inside functions included) goes down the stack, never up,
so the packages form a stack with no cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bottom to top: a package may import itself and the packages before it
STACK = ("gptspec", "backends", "workloads", "reports", "suite")


def imports_of(path: Path) -> set[str]:
    """Top-level names this file imports, wherever the import statement stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def upward_imports() -> list[str]:
    bad = []
    for level, package in enumerate(STACK):
        allowed = set(STACK[:level + 1])
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in sorted(imports_of(path) & set(STACK) - allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name} (above {package})")
    return bad


def test_packages_form_a_stack():
    assert upward_imports() == []


def test_the_check_sees_lazy_imports(tmp_path):
    # an import inside a function counts: the check is not blind to what runs late
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from suite.cli import main\n    import reports.load\n")
    assert imports_of(f) == {"suite", "reports"}


def test_every_package_of_the_stack_is_a_regular_package():
    # setuptools' find_packages (pyproject.toml) installs only folders with an __init__.py:
    # a namespace package works from the checkout and is missing from an installed wheel
    for package in STACK:
        for folder in [ROOT / package, *(p.parent for p in (ROOT / package).rglob("*.py"))]:
            assert (folder / "__init__.py").is_file(), folder
