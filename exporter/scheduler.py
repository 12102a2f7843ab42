"""The periodic jobs of a services bundle: the probe cycle and an optional operator ingest job."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from exporter.probes.base import ConnectivityReport
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat
from exporter.telemetry.cycle_log import capture_cycle_log

__all__ = ["IngestJob", "ProbeScheduler", "periodic"]

_log = structlog.get_logger(__name__)

#: An operator coroutine the scheduler runs once per interval.
IngestJob = Callable[[], Awaitable[None]]


class _Reporter(Protocol):
    state: ExporterState

    async def connectivity_report(self) -> ConnectivityReport: ...


class ProbeScheduler:
    """Run one probe cycle per interval and store it in the snapshot."""

    def __init__(self, services: _Reporter, *, interval: float, log_lines: int = 100) -> None:
        self._services = services
        self.interval = interval
        self.log_lines = log_lines
        self.cycles = 0

    async def run(self, heartbeat: Heartbeat) -> None:
        """Probe forever, one cycle per interval (a slow cycle delays, never overlaps)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            heartbeat.beat()
            # The cycle's own log lines, for its page under /probes/{id}.
            with capture_cycle_log(self.log_lines) as cycle_log:
                report = await self._services.connectivity_report()
                _log_report(report)
            self._services.state.record(report, cycle_log.close(), dropped=cycle_log.dropped)
            self.cycles += 1
            heartbeat.ready()
            next_at = max(next_at + self.interval, loop.time())
            await asyncio.sleep(next_at - loop.time())


def periodic(job: IngestJob, interval: float) -> Callable[[Heartbeat], Awaitable[None]]:
    """Return a supervised coroutine factory running ``job`` once per ``interval``."""

    async def run(heartbeat: Heartbeat) -> None:
        while True:
            await job()
            heartbeat.ready()
            await asyncio.sleep(interval)

    return run


def _log_report(report: ConnectivityReport) -> None:
    """Emit the canonical ``probe_completed`` line, one per check."""
    for result in report.results:
        _log.info(
            "probe_completed",
            deployment=report.deployment,
            connector=result.connector,
            check=result.check,
            status=result.status.value,
            reason=result.reason.value if result.reason else None,
            duration_seconds=round(result.latency_seconds, 6),
            detail=result.detail or None,
            trace_id=report.trace_id,
            span_id=result.span_id,
        )
