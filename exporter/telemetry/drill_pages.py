"""The drills on the status pages: history with verdicts, RTO/RPO against objectives, reports.

Everything comes from :class:`~exporter.drills.recent.RecentDrills`, the in-memory copy the
daemon's drill refresh keeps (every replica's records, read from Redis once per interval), so a
render never touches Redis. ``/drills/{id}`` renders the drill's own markdown report as HTML,
the same text ``/api/v1/drills/{id}?format=markdown`` serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from exporter.telemetry._html import badge, cell, duration, esc, moment, page, table, when
from exporter.telemetry._markdown import markdown_to_html

if TYPE_CHECKING:
    from exporter.drills.report import FailoverDrillSnapshot

__all__ = ["DrillSource", "drill_row", "drills_view", "render_drill", "render_drills"]

View = Mapping[str, Any]

_RESULT_KIND = {"ok": "ok", "warn": "degraded", "fail": "down", "aborted": "unknown"}
#: (row key, objective key, column title, unit) of the measured numbers shown in the list.
_MEASURES = (
    ("detection_seconds", "detection_seconds", "Detection", "s"),
    ("rto_seconds", "rto_seconds", "RTO", "s"),
    ("rpo_lost_writes", "lost_writes", "Lost writes", ""),
    ("rpo_seconds", "rpo_seconds", "RPO", "s"),
)


class DrillSource(Protocol):
    """The in-memory drill history (a :class:`~exporter.drills.recent.RecentDrills`)."""

    @property
    def enabled(self) -> bool:
        """Tell whether drills are on in the configuration."""

    def records(self) -> Sequence[FailoverDrillSnapshot]:
        """Return the kept drills, newest first."""

    def running(self) -> Sequence[Mapping[str, Any]]:
        """Return the running drills' markers."""

    def get(self, drill_id: str) -> FailoverDrillSnapshot | None:
        """Return one kept drill."""


def drill_row(record: FailoverDrillSnapshot) -> dict[str, Any]:
    """Return a drill's list row: its summary, measured numbers and the objectives it had."""
    measured = record.measured
    return {
        **record.summary(),
        "detection_seconds": measured.detection_seconds,
        "rto_seconds": measured.rto_seconds,
        "rpo_lost_writes": measured.rpo.lost_writes,
        "rpo_bytes": measured.rpo.bytes,
        "rpo_seconds": measured.rpo.seconds,
        "objectives": dict(record.settings.get("objectives", {})),
        "trace_id": record.trace_id,
    }


def drills_view(source: DrillSource | None, limit: int | None = None) -> dict[str, Any]:
    """Return the JSON view of the drills: on or off, running markers, newest records."""
    if source is None:
        return {"enabled": False, "running": [], "drills": []}
    records = source.records()
    return {
        "enabled": source.enabled,
        "running": source.running(),
        "drills": [drill_row(r) for r in records[:limit]],
    }


def _measure(row: View, key: str, objective_key: str, unit: str) -> str:
    value, objective = row.get(key), row["objectives"].get(objective_key)
    if value is None:
        return "-"
    shown = f"{value:.2f} s" if unit == "s" else f"{value:g}"
    if objective is None:
        return shown
    target = f"{objective:g} s" if unit == "s" else f"{objective:g}"
    if value > objective:
        return f'<span class="over">{shown}</span> / {target}'
    return f"{shown} / {target}"


def _rows(rows: Sequence[View], now: float) -> str:
    cells = []
    for row in rows:
        why = "; ".join(row["failed_objectives"]) or row["aborted_reason"] or "-"
        drill_id = esc(row["drill_id"])
        cells.append(
            f'<tr class="drill" data-drill="{drill_id}" data-result="{esc(row["result"])}">'
            + cell(f'<a href="/drills/{drill_id}">{drill_id}</a>')
            + cell(f"{esc(row['scenario'])} · {esc(row['deployment'])}")
            + cell(when(row["started"], now))
            + cell(duration(row["duration_seconds"]), "num", "took")
            + cell(badge(row["result"], _RESULT_KIND.get(row["result"], "unknown")))
            + "".join(
                cell(_measure(row, key, goal, unit), "num", title.lower())
                for key, goal, title, unit in _MEASURES
            )
            + cell(esc(why), "detail")
            + "</tr>"
        )
    head = [
        "Drill", "Scenario", "Started (UTC)", "Duration", "Result",
        *(title for _, _, title, _ in _MEASURES),
        "Failed objectives",
    ]  # fmt: skip
    note = '<p class="meta">Measured values / objectives; over an objective in red.</p>'
    return note + table(head, cells, "drills")


def render_drills_section(view: View, now: float, *, more: bool) -> str:
    """Return the drills part of a page: running drills, then the history (or why empty)."""
    if not view["enabled"]:
        return '<p class="age">Failover drills are off (failover_drill.enabled).</p>'
    running = "".join(
        f'<li class="running-drill">{esc(m.get("drill_id", "?"))}: {esc(m.get("scenario", "?"))}'
        f" on {esc(m.get('deployment', '?'))}, phase {esc(m.get('phase', '?'))}, started "
        f"{moment(m['started']) if isinstance(m.get('started'), int | float) else '-'}</li>"
        for m in view["running"]
    )
    parts = [f"<p>Running now:</p><ul>{running}</ul>" if running else ""]
    if view["drills"]:
        parts.append(_rows(view["drills"], now))
    else:
        parts.append('<p class="age">No drill recorded yet.</p>')
    if more:
        parts.append('<p class="meta"><a href="/drills">every kept drill</a></p>')
    return "".join(parts)


def render_drills(view: View, *, now: float, refresh: int, version: str) -> str:
    """Return the HTML of ``/drills``: every kept drill, newest first."""
    body = "<h2>Failover drills</h2>" + render_drills_section(view, now, more=False)
    return page(
        "drills · ingest-exporter",
        body,
        version=version,
        generated_at=now,
        refresh=refresh,
        path="/drills",
    )


def render_drill(record: FailoverDrillSnapshot, *, now: float, version: str) -> str:
    """Return the HTML of ``/drills/{id}``: the drill's report, as its markdown says it."""
    drill_id = esc(record.drill_id)
    links = (
        f'<p class="meta"><a href="/api/v1/drills/{drill_id}">JSON record</a> · '
        f'<a href="/api/v1/drills/{drill_id}?format=markdown">markdown</a> · '
        '<a href="/drills">all drills</a></p>'
    )
    body = (
        f'<section class="drill-report" data-drill="{drill_id}">'
        f"{markdown_to_html(record.to_markdown())}{links}</section>"
    )
    return page(
        f"drill {record.drill_id} · ingest-exporter",
        body,
        version=version,
        generated_at=now,
        path=f"/drills/{record.drill_id}",
    )
