"""The import rules of docs/architecture.md: dependencies point down, no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "worker", "trainer")

pytestmark = pytest.mark.nodb


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, everywhere: bool) -> set[str]:
    """Modules ``path`` imports: at module level only, or anywhere (``everywhere``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if everywhere else iter(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and not everywhere:
            continue  # ``if TYPE_CHECKING:`` blocks are not run
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
    }


def test_services_import_neither_the_web_nor_the_worker_nor_the_wiring() -> None:
    bad = ("fastapi", "starlette", "worker", "app.wiring", "app.api", "app.web", "app.main")
    offenders = {
        name: sorted(
            i
            for i in _imports(path, everywhere=True)
            if i.split(".")[0] in bad or any(i == b or i.startswith(b + ".") for b in bad)
        )
        for name, path in _modules().items()
        if name.startswith(("app.services", "app.ml", "trainer"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_app_never_imports_the_worker() -> None:
    # Entry points (the CLI starts workers) may; nothing else in app/ does.
    offenders = [
        name
        for name, path in _modules().items()
        if name.startswith("app")
        and not name.startswith(("app.cli", "app.main"))
        and any(i.split(".")[0] == "worker" for i in _imports(path, everywhere=True))
    ]
    assert offenders == []


def test_no_import_circle() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, everywhere=True):
            # ``from app.services import users`` names a module; ``from x import Class`` not.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # A package importing its own submodules (``app.cli`` registering its commands) is not a
    # circle between layers.
    real = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert real == []
