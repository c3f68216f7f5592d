"""The arrows of the layout, read from the source: who may import whom, and no import circles.

Module-level imports only (an import inside a function is a deliberate lazy edge and
cannot form a circle at import time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "actsearch", "models", "search", "store", "worker", "api")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("actsearch", "models", "search", "store", "worker", "api", "torch", "sqlalchemy",
             "celery", "fastapi", "optuna"),
    "models": ("actsearch", "search", "store", "worker", "api", "sqlalchemy", "celery",
               "fastapi", "optuna"),
    "store": ("actsearch", "models", "search", "worker", "api", "torch", "celery", "fastapi"),
    "search": ("actsearch", "api", "worker", "celery", "fastapi"),
    "worker": ("actsearch", "api"),
    "api": ("actsearch",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute names imported by a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            names.add(target)
            names |= {f"{target}.{a.name}" for a in node.names}
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_never_imports_what_is_above_it(package: str) -> None:
    bad = []
    for path in _files(package):
        for name in _imports(path, top_level_only=package == "search"):
            if name.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_cli() -> None:
    bad = [f"{p.relative_to(ROOT)}: {n}" for pkg in PACKAGES if pkg != "actsearch"
           for p in _files(pkg) for n in _imports(p, top_level_only=False)
           if n == "actsearch.cli" or n.startswith("actsearch.cli.")]
    bad += [f"{p.relative_to(ROOT)}: {n}" for p in _files("actsearch")
            if "cli" not in p.relative_to(ROOT).parts
            for n in _imports(p, top_level_only=False)
            if n == "actsearch.cli" or n.startswith("actsearch.cli.")]
    assert not bad, "\n".join(bad)


def test_no_import_circle_between_files() -> None:
    modules = {_module_name(p): p for pkg in PACKAGES for p in _files(pkg)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, top_level_only=True):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            # a package's __init__ re-exporting its own submodules is not a circle
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets

    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
