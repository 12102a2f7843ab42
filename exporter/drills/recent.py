"""The last drills in memory, for pages that must not read Redis while they render.

The daemon's refresh job copies the drill records and running markers it reads from Redis
here (every replica's, once per probe interval), and a drill this process ran lands here as it
ends; the status page reads only this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.store import KEEP

__all__ = ["RecentDrills"]


class RecentDrills:
    """The newest ``keep`` finished drills by id, and the markers of the running ones."""

    def __init__(self, *, enabled: bool, keep: int = KEEP) -> None:
        self.enabled = enabled
        self._keep = keep
        self._records: dict[str, FailoverDrillSnapshot] = {}
        self._running: list[dict[str, Any]] = []

    def observe(self, snapshot: FailoverDrillSnapshot) -> None:
        """Keep a finished drill (a record seen again replaces itself); forget the oldest."""
        self._records[snapshot.drill_id] = snapshot
        if len(self._records) > self._keep:
            oldest = min(self._records.values(), key=lambda r: r.timestamps.started)
            del self._records[oldest.drill_id]

    def set_running(self, markers: Iterable[Mapping[str, Any]]) -> None:
        """Replace the running drills' markers (drill id, label, scenario, phase, start)."""
        finished = set(self._records)
        self._running = [dict(m) for m in markers if m.get("drill_id") not in finished]

    def records(self) -> list[FailoverDrillSnapshot]:
        """Return the kept drills, newest first."""
        return sorted(self._records.values(), key=lambda r: r.timestamps.started, reverse=True)

    def running(self) -> list[dict[str, Any]]:
        """Return the markers of the drills running on any replica at the last refresh."""
        return list(self._running)

    def get(self, drill_id: str) -> FailoverDrillSnapshot | None:
        """Return the kept drill ``drill_id``, if any."""
        return self._records.get(drill_id)
