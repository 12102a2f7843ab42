"""Human-readable rendering of connectivity reports (``ingest-exporter probe``)."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.probes.base import ConnectivityReport

__all__ = ["render_table"]


def render_table(reports: Iterable[ConnectivityReport]) -> str:
    """Return a fixed-width table: one row per check, worst first within each deployment."""
    header = ("DEPLOYMENT", "CONNECTOR", "CHECK", "STATUS", "REASON", "LATENCY", "DETAIL")
    rows: list[tuple[str, ...]] = [header]
    rows.extend(
        (
            report.deployment,
            result.connector,
            result.check,
            result.status.value,
            result.reason.value if result.reason else "-",
            f"{result.latency_seconds * 1000:.1f}ms",
            result.detail[:60],
        )
        for report in reports
        for result in report.results
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
