"""The shape of the code: no import cycles between lakeio's modules, thin composers, and a
documented public API."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lakeio"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The lakeio modules a module imports, at its top or inside functions, leaving out
    ``if TYPE_CHECKING:`` blocks; ``from package import submodule`` counts as the submodule."""
    found: set[str] = set()
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in modules] or [node.module]
            names += [node.module] if len(names) < len(subs) and names[0] != node.module else []
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "lakeio":
                found.add(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_module_imports_itself_through_others():
    """Lazy imports included: a cycle hidden in a function is still two ideas tangled."""
    modules = _modules()
    graph = {
        name: _imports(ast.parse(path.read_text()), modules) - {name}
        for name, path in modules.items()
    }
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("from lakeio.loader import plan\nimport lakeio.dataset\n")
    modules = {"lakeio.loader": Path(), "lakeio.loader.plan": Path(), "lakeio.dataset": Path()}
    assert _imports(tree, modules) == {"lakeio.loader.plan", "lakeio.dataset"}


@pytest.mark.parametrize("module", ["loader/loader.py", "dataset.py"])
def test_the_composers_stay_thin(module):
    """`Loader` and `Dataset` compose stages; new behaviour arrives as a new module."""
    assert len((PACKAGE / module).read_text().splitlines()) < 400


def _public(namespace) -> list[tuple[str, object]]:
    return [(n, getattr(namespace, n)) for n in namespace.__all__ if not n.startswith("__")]


@pytest.mark.parametrize("package", ["lakeio", "lakeio.loader", "lakeio.ingest"])
def test_every_public_name_and_its_methods_are_documented(package):
    missing = []
    for name, obj in _public(importlib.import_module(package)):
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                target = member.fget if isinstance(member, property) else member
                if callable(target) and not (target.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert missing == []
