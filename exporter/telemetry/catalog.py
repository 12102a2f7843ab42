"""Every metric the exporter can publish, in one list (the README table is built from it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from exporter.bridge import METRIC_SPECS as BRIDGE
from exporter.cache import METRIC_SPECS as CACHE
from exporter.drills.metrics import METRIC_SPECS as DRILLS
from exporter.metricspec import MetricSpec
from exporter.publisher import METRIC_SPECS as PUBLISHER
from exporter.telemetry.metrics import MEASUREMENTS, METRICS
from exporter.telemetry.web import PROBE_METRICS

__all__ = ["README_MARKERS", "all_specs", "markdown_table", "update_readme"]

README_MARKERS = ("<!-- metrics-table:start -->", "<!-- metrics-table:end -->")


def all_specs() -> list[MetricSpec]:
    """Return every published metric family, sorted by exposed name."""
    specs: dict[str, MetricSpec] = {**METRICS, **MEASUREMENTS}
    for group in (BRIDGE, CACHE, DRILLS, PUBLISHER, PROBE_METRICS):
        specs.update({spec.name: spec for spec in group})
    return sorted(specs.values(), key=lambda s: s.exposed_name)


def markdown_table() -> str:
    """Return the README's metrics table."""
    lines = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for spec in all_specs():
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
        text = spec.help.replace("|", "\\|")
        lines.append(f"| `{spec.exposed_name}` | {spec.type} | {labels} | {text} |")
    return "\n".join(lines)


def update_readme(path: Path) -> bool:
    """Rewrite the table between the README markers; return whether anything changed."""
    text = path.read_text(encoding="utf-8")
    start, end = README_MARKERS
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    updated = pattern.sub(f"{start}\n{markdown_table()}\n{end}", text)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":
    changed = update_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
    print("README metrics table " + ("updated" if changed else "already current"))
