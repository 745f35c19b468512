"""The architecture's import rules, read from the source with ``ast`` (nothing is imported):

* no import cycle among the project's modules: ``selector``, ``app`` and ``workers`` form a
  directed acyclic graph (imports under ``if TYPE_CHECKING`` and inside functions count too: a
  cycle hidden there is still two modules that cannot be understood one without the other);
* ``app`` never imports torch, torchvision, ``selector`` or ``workers`` (the API stays light);
* ``selector`` never imports ``app``, ``workers``, Optuna, FastAPI or SQLAlchemy.

An import of a parent package that every import implies is not an edge; ``from pkg import sub``
is an edge to ``pkg.sub`` when ``sub`` is a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("selector", "app", "workers")
FORBIDDEN = {
    "app": ("torch", "torchvision", "selector", "workers"),
    "selector": ("app", "workers", "optuna", "fastapi", "sqlalchemy"),
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imported(module: str) -> Iterator[str]:
    """Every module name ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            subs = [f"{base}.{alias.name}" for alias in node.names
                    if f"{base}.{alias.name}" in MODULES]
            if len(subs) < len(node.names):
                yield base
            yield from subs


GRAPH = {name: {t for t in imported(name) if t in MODULES and t != name} for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_covers_every_package():
    assert {"selector", "app", "workers", "workers.execute", "app.client"} <= set(GRAPH)
    assert "workers.finalize" in GRAPH["workers.execute"]


def test_no_import_cycle_among_the_projects_modules():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_what_they_may(package: str):
    offending = sorted(
        f"{module} imports {target}"
        for module in MODULES if module.split(".")[0] == package
        for target in imported(module)
        if target.split(".")[0] in FORBIDDEN[package]
    )
    assert offending == []
