"""Human-readable rendering of connectivity reports (``ingest-exporter probe``)."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.probes.base import ConnectivityReport

__all__ = ["DETAIL_WIDTH", "render_table"]


#: Characters of a check's detail the narrow table shows.
DETAIL_WIDTH = 60


def render_table(reports: Iterable[ConnectivityReport], *, wide: bool = False) -> str:
    """Return a fixed-width table: one row per check; ``wide`` shows every detail in full."""
    limit = None if wide else DETAIL_WIDTH
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
            _cut(result.detail, limit),
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


def _cut(detail: str, limit: int | None) -> str:
    # Say that something was cut: a detail ending mid-word reads like the whole story.
    if limit is None or len(detail) <= limit:
        return detail
    return detail[: limit - 1] + "…"
