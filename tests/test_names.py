"""Names that explain themselves: no two project classes share a name, and no two modules share a
file name unless they are the same kind of thing in different packages (a package's ``cli`` or
``errors``, a resource's route and store modules).

Duplicates confused readers before (two ``TrainConfig``, two ``Plan``, two ``loop.py`` with
unrelated jobs, the client's ``NotFound`` shadowing the server's); this keeps them out.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "selector", "workers", "benchmarks")

#: File names that may repeat: every package may have these, and they mean the same thing there.
SHARED_MODULE_NAMES = {
    "__init__", "__main__", "cli", "errors",
    "jobs",       # app/api/routes/jobs.py (HTTP) over app/store/jobs.py (SQL)
    "artifacts",  # workers/artifacts.py writes a job's artifacts, app/artifacts.py serves them
}


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _where(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def test_the_scan_sees_the_project() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert {"app/client.py", "selector/finetune/training.py", "workers/strategies.py",
            "benchmarks/reproduce.py"} <= names


def test_class_names_are_unique() -> None:
    classes: dict[str, list[Path]] = defaultdict(list)
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                classes[node.name].append(path)
    repeated = {name: _where(paths) for name, paths in classes.items() if len(paths) > 1}
    assert repeated == {}


def test_module_names_are_unique() -> None:
    modules: dict[str, list[Path]] = defaultdict(list)
    for path in _modules():
        modules[path.stem].append(path)
    repeated = {name: _where(paths) for name, paths in modules.items()
                if len(paths) > 1 and name not in SHARED_MODULE_NAMES}
    assert repeated == {}
