"""Recent probe cycles per deployment, and since when each connector and check holds its status.

The status page reads this, never a service. Successful and failed cycles share one window of
the newest ``cycles``; failed ones are also kept in a window of their own (``failed_cycles``), so
a failure stays visible after a run of healthy cycles, as blackbox_exporter keeps them.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.probes.base import ConnectivityReport, Status
from exporter.reasons import Reason
from exporter.telemetry.cycle_log import LogLine

__all__ = ["SPARKLINE_POINTS", "LatencyPoint", "ProbeCycle", "ProbeHistory", "StatusSince"]

#: Cycles drawn in a connector's latency sparkline.
SPARKLINE_POINTS = 30


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    """A connector's probe latency in one cycle (its slowest check) and whether it was up."""

    cycle: int
    latency_seconds: float
    up: bool


@dataclass(frozen=True, slots=True)
class StatusSince:
    """A status, the reason of its worst check, and the wall time it was first seen."""

    status: Status
    reason: Reason | None
    since: float
    #: The status was already there at the first probe: it may be older than ``since``.
    initial: bool = False


@dataclass(frozen=True, slots=True)
class ProbeCycle:
    """One stored probe cycle: its report, the log lines it produced, its id."""

    id: int
    report: ConnectivityReport
    log_lines: tuple[LogLine, ...] = ()
    log_lines_dropped: int = 0
    latencies: Mapping[str, LatencyPoint] = field(default_factory=dict)
    failed_checks: int = 0

    @property
    def ok(self) -> bool:
        """Tell whether every check of the cycle passed."""
        return self.report.ok

    def summary(self) -> dict[str, Any]:
        """Return the JSON row of the cycle lists."""
        report = self.report
        return {
            "id": self.id,
            "deployment": report.deployment,
            "started_at": report.started_at,
            "duration_seconds": round(report.duration_seconds, 6),
            "ok": report.ok,
            "trace_id": report.trace_id,
            "failed_checks": self.failed_checks,
        }

    def as_dict(self, metric_names: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Return the JSON view of the cycle: checks, log lines, trace id.

        Args:
            metric_names: Measurement name -> scraped sample name (see ``ProbeResult.as_dict``).
        """
        return {
            "id": self.id,
            **self.report.as_dict(metric_names),
            "log_lines": [dict(line) for line in self.log_lines],
            "log_lines_dropped": self.log_lines_dropped,
        }


def _worst(report: ConnectivityReport, connector: str) -> StatusSince:
    results = [r for r in report.results if r.connector == connector]
    order = list(Status)
    worst = max(results, key=lambda r: order.index(r.status), default=None)
    if worst is None:
        return StatusSince(Status.UNKNOWN, None, report.started_at)
    return StatusSince(worst.status, worst.reason, worst.checked_at)


class ProbeHistory:
    """Keep the newest probe cycles of every deployment and their status transitions."""

    def __init__(self, *, cycles: int = 100, failed_cycles: int = 100) -> None:
        if cycles < 1 or failed_cycles < 0:
            raise ValueError("need cycles >= 1 and failed_cycles >= 0")
        self._limit = cycles
        self._failed_limit = failed_cycles
        self._ids = itertools.count(1)
        self._recent: dict[str, deque[ProbeCycle]] = {}
        self._failed: dict[str, deque[ProbeCycle]] = {}
        self._by_id: dict[int, ProbeCycle] = {}
        self._since: dict[tuple[str, str, str], StatusSince] = {}
        self._spark: dict[tuple[str, str], deque[LatencyPoint]] = {}

    def add(
        self, report: ConnectivityReport, log_lines: Iterable[LogLine] = (), *, dropped: int = 0
    ) -> ProbeCycle:
        """Store a finished cycle, note status changes, and forget what fell out of both windows."""
        cycle_id = next(self._ids)
        deployment = report.deployment
        latencies: dict[str, LatencyPoint] = {}
        for connector, results in report.by_connector().items():
            self._note(deployment, connector, "", _worst(report, connector))
            for result in results:
                seen = StatusSince(result.status, result.reason, result.checked_at)
                self._note(deployment, connector, result.check, seen)
            if results:
                slowest = max(r.latency_seconds for r in results)
                point = LatencyPoint(cycle_id, slowest, report.connector_up(connector))
                latencies[connector] = point
                spark = self._spark.setdefault(
                    (deployment, connector), deque(maxlen=SPARKLINE_POINTS)
                )
                spark.append(point)
        failed = sum(not r.ok for r in report.results)
        cycle = ProbeCycle(cycle_id, report, tuple(log_lines), dropped, latencies, failed)
        self._by_id[cycle_id] = cycle
        recent = self._recent.setdefault(deployment, deque())
        failures = self._failed.setdefault(deployment, deque())
        recent.append(cycle)
        if not cycle.ok and self._failed_limit:
            failures.append(cycle)
        self._trim(recent, self._limit, failures)
        self._trim(failures, self._failed_limit, recent)
        return cycle

    def _trim(self, window: deque[ProbeCycle], limit: int, other: deque[ProbeCycle]) -> None:
        """Drop the oldest cycles past ``limit``; forget those the other window does not hold."""
        while len(window) > limit:
            old = window.popleft()
            # Both windows run in id order up to the newest cycle, so the other one holds a
            # cycle it could hold (any cycle, or a failed one) exactly when it reaches back to it.
            # A cycle leaving the failed window failed, so the test reads the same for both.
            if old.ok or not other or other[0].id > old.id:
                self._by_id.pop(old.id, None)

    def _note(self, deployment: str, connector: str, check: str, seen: StatusSince) -> None:
        key = (deployment, connector, check)
        known = self._since.get(key)
        if known is None:
            self._since[key] = StatusSince(seen.status, seen.reason, seen.since, initial=True)
        elif known.status is not seen.status:
            self._since[key] = seen
        elif known.reason is not seen.reason:
            # Same status, another reason: keep when it began, show the current reason.
            self._since[key] = StatusSince(seen.status, seen.reason, known.since, known.initial)

    @property
    def deployments(self) -> list[str]:
        """Return the deployments that have at least one stored cycle, sorted."""
        return sorted(self._recent)

    def cycles(self, deployment: str) -> list[ProbeCycle]:
        """Return every stored cycle of ``deployment`` (both windows), newest first."""
        merged = {c.id: c for c in self._recent.get(deployment, ())}
        merged.update((c.id, c) for c in self._failed.get(deployment, ()))
        return [merged[i] for i in sorted(merged, reverse=True)]

    def recent(self, deployment: str, count: int) -> list[ProbeCycle]:
        """Return the newest ``count`` cycles of ``deployment``, newest first."""
        window = self._recent.get(deployment, deque())
        return [window[-i] for i in range(1, min(count, len(window)) + 1)]

    def get(self, cycle_id: int) -> ProbeCycle | None:
        """Return the stored cycle ``cycle_id``, or ``None`` once it was forgotten."""
        return self._by_id.get(cycle_id)

    def since(self, deployment: str, connector: str, check: str = "") -> StatusSince | None:
        """Return the current status of a connector (``check=""``) or check and since when."""
        return self._since.get((deployment, connector, check))

    def latencies(self, deployment: str, connector: str) -> list[LatencyPoint]:
        """Return the connector's latency over the recent cycles, oldest first."""
        return list(self._spark.get((deployment, connector), ()))
