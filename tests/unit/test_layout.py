"""The layout tells the architecture: every module imports only from its own layer or below, and no import circles.

The layers, top to bottom (docs/architecture.md): the apps' wiring; the
stages, web views and commands; the state and device management; the core.
Only module-level imports count (a deliberate lazy import says why where it is).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.folders import installed_folders

ROOT = Path(__file__).resolve().parents[2]

WIRING = 3
LAYERS: dict[str, int] = {
    "f2stream.pipeline": WIRING,
    "f2stream.ingest": WIRING,
    "f2stream.appbase": WIRING,
    "f2stream.agents": 2,
    "f2stream.web": 2,
    "f2stream.commands": 2,
    "f2stream.tables": 1,
    "f2stream.devices": 1,
    "f2stream.repair": 1,
    "f2stream.simulator": 1,
    "f2stream.verify": 1,
}
CORE = 0


def modules() -> dict[str, Path]:
    """Every module of the project under its installed name."""
    found = {}
    for package, folder in installed_folders().items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def layer(module: str) -> int:
    """The layer of a module: that of its longest listed prefix, else the core."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    return CORE


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that `module` imports at module level."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in tree.body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for imported in names:
            name = imported
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name not in (module, "f2stream"):
                found.add(name)
    return found


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_from_a_higher_layer(module: str) -> None:
    upward = sorted(target for target in GRAPH[module] if layer(target) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from above: {upward}"


def test_no_import_circles() -> None:
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            raise AssertionError(" -> ".join([*trail[trail.index(module) :], module]))
        if module in done:
            return
        for target in sorted(GRAPH.get(module, ())):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_the_layers_name_real_modules() -> None:
    for prefix in LAYERS:
        assert any(m == prefix or m.startswith(prefix + ".") for m in GRAPH), prefix


def test_the_wiring_is_imported_by_nobody() -> None:
    importers = {
        m: sorted(t for t in targets if layer(t) == WIRING) for m, targets in GRAPH.items() if layer(m) < WIRING
    }
    assert not any(importers.values()), importers
