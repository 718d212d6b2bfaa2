"""Data flows one way: settings -> Zoom client -> poller -> snapshot -> renderer -> web.

No module imports one from a higher layer, and no two modules import each other (nor does
any longer cycle exist). Read from the source with `ast`, so imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"

# Lowest first. A module may import from its own layer or any lower one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("exporter", "exporter.clock", "exporter.logfmt", "exporter.signals", "exporter.build"),
    ("exporter.sources",),
    ("exporter.zoom.models", "exporter.zoom.units", "exporter.zoom.errors"),
    ("exporter.zoom.limits", "exporter.zoom.telemetry"),
    ("exporter.zoom.auth",),
    ("exporter.zoom.transport",),
    ("exporter.zoom.client",),
    ("exporter.settings", "exporter.privacy", "exporter.series"),
    ("exporter.polling.targets", "exporter.polling.planner", "exporter.polling.health"),
    ("exporter.metrics.mos", "exporter.metrics.quality"),
    ("exporter.metrics.snapshot",),
    ("exporter.polling.poller",),
    ("exporter.metrics.collectors", "exporter.metrics.exposition"),
    ("exporter.metrics.store", "exporter.metrics.selfmetrics", "exporter.metrics.accounts"),
    ("exporter.web.webconfig", "exporter.web.status_page", "exporter.web.connections"),
    ("exporter.web.app",),
    ("exporter.runtime",),
    ("exporter.probe", "exporter.daemon", "exporter.healthcheck"),
    ("exporter.usage",),
    ("exporter.cli",),
    ("exporter.__main__",),
)
LEVEL = {module: level for level, modules in enumerate(LAYERS) for module in modules}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The exporter modules `path` imports at run time (a package import names its modules
    too)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {  # `if TYPE_CHECKING:` imports are for the type checker, not the runtime
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("exporter")}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exporter")
        ):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name in KNOWN}


SOURCES = {
    module_name(p): p
    for p in PACKAGE.rglob("*.py")
    if "simulator" not in p.relative_to(PACKAGE).parts
}
KNOWN = set(SOURCES) | {"exporter.simulator"}


def test_every_module_has_a_layer() -> None:
    packages = {
        m for m in SOURCES if (PACKAGE / m.removeprefix("exporter.").replace(".", "/")).is_dir()
    }
    assert set(SOURCES) - packages - set(LEVEL) == set()


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_import_from_a_higher_layer(module: str) -> None:
    if module not in LEVEL:
        return  # a package's empty __init__
    higher = {
        name for name in imports(SOURCES[module]) if name in LEVEL and LEVEL[name] > LEVEL[module]
    }
    assert not higher, f"{module} imports {sorted(higher)} from a higher layer"


def test_no_import_cycles() -> None:
    graph = {module: imports(path) - {module} for module, path in SOURCES.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph.get(module, ())):
            if state.get(name) == 1:
                cycle = [*trail[trail.index(name) :], name] if name in trail else [module, name]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if name not in state:
                visit(name, [*trail, name])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
