"""The public surface: `__all__` is accurate, and the README's metrics table is current."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import exporter
from exporter.telemetry.catalog import README_MARKERS, markdown_table

REPO = Path(__file__).resolve().parents[2]


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(exporter.__path__, prefix="exporter."):
        leaf = info.name.rsplit(".", 1)[-1]
        if not leaf.startswith("_"):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _public_modules())
def test_all_lists_exactly_what_the_module_defines(name: str) -> None:
    """Each public module's `__all__` names objects that exist, with no duplicates."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported))
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ lists missing {item!r}"


def test_readme_metrics_table_matches_the_code() -> None:
    """The README's metrics table is exactly what `make docs` generates from the code."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = README_MARKERS
    block = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert block == markdown_table(), "README metrics table is stale: run `make docs`"
