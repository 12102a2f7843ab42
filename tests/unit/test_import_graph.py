"""The package's import graph: no circle anywhere, every module importable on its own."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"

# Run in a fresh interpreter: for each module, forget every exporter module imported so far,
# then import that one first. Third-party libraries stay loaded (they cannot be part of a
# circle of ours), which makes this ~7x faster than one `python -c` per module.
_IMPORT_EACH_ALONE = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "exporter" or m.startswith("exporter.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def _modules() -> dict[str, Path]:
    """Return every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(name: str, source: str, *, is_package: bool = False) -> Iterator[str]:
    """Yield every module ``name`` imports: top level, lazy or for type checking."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from exporter.probes import base` imports the module exporter.probes.base.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        found = _imported(name, source, is_package=path.name == "__init__.py")
        graph[name] = {target for target in found if target in modules} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle as a path of module names, or None when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            if (found := visit(target)) is not None:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if (found := visit(start)) is not None:
            return found
    return None


_EVERY_KIND = """
import exporter.errors
from exporter.reasons import Reason
from . import base
from .._cleanup import shielded
from exporter.probes import _timescale_sql as sql
if TYPE_CHECKING:
    from exporter.state import ExporterState
def later():
    from exporter.daemon import Daemon
"""


def test_the_parser_sees_every_kind_of_import() -> None:
    """Absolute, relative, from-package, lazy and type-checking imports are all found."""
    found = set(_imported("exporter.probes.kafka", _EVERY_KIND))
    assert {
        "exporter.errors",
        "exporter.reasons",
        "exporter.probes.base",  # relative, a module imported from its package
        "exporter._cleanup",
        "exporter.probes._timescale_sql",
        "exporter.state",
        "exporter.daemon",
    } <= found
    assert "exporter.reasons.Reason" in found  # a name: dropped later, not a module
    package = set(_imported("exporter.probes", "from . import base", is_package=True))
    assert "exporter.probes.base" in package


def test_the_graph_covers_the_package() -> None:
    """Every module is a node, and a known lazy import (cli -> daemon) is an edge."""
    graph = _graph()
    assert len(graph) > 40
    assert "exporter.daemon" in graph["exporter.cli"]


def test_the_cycle_finder_reports_a_circle() -> None:
    """A circle in a made-up graph is reported as the path that closes it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back() -> None:
    """No chain of imports, counting lazy and TYPE_CHECKING ones, leads back to its start."""
    assert _cycle(_graph()) is None


def test_probes_import_nothing_from_telemetry() -> None:
    """Probes return data; the telemetry reads it, so exporter.probes never imports it."""
    graph = _graph()
    leaning = {
        name: sorted(t for t in targets if t.startswith("exporter.telemetry"))
        for name, targets in graph.items()
        if name.startswith("exporter.probes")
    }
    assert len(leaning) >= 8  # every probe module was looked at
    assert {name: found for name, found in leaning.items() if found} == {}


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """Each module, imported first, loads without a circle or a warning."""
    # __main__ runs the command line on import; it only imports exporter.cli.
    names = [name for name in _modules() if name != "exporter.__main__"]
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _IMPORT_EACH_ALONE, *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}
    assert len(names) > 40
