"""The periodic jobs of a services bundle: the probe cycle and an optional operator ingest job."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from exporter.checklog import CheckLog
from exporter.probes.base import ConnectivityReport
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat
from exporter.telemetry.cycle_log import capture_cycle_log

__all__ = ["IngestJob", "ProbeScheduler", "periodic"]

#: An operator coroutine the scheduler runs once per interval.
IngestJob = Callable[[], Awaitable[None]]


class _Reporter(Protocol):
    state: ExporterState

    async def connectivity_report(self) -> ConnectivityReport: ...


class ProbeScheduler:
    """Run one probe cycle per interval, store it in the snapshot and log what changed."""

    def __init__(self, services: _Reporter, *, interval: float, log_lines: int = 100) -> None:
        self._services = services
        self.interval = interval
        self.log_lines = log_lines
        self.cycles = 0
        self._log = CheckLog()

    async def run(self, heartbeat: Heartbeat) -> None:
        """Probe forever, one cycle per interval (a slow cycle delays, never overlaps)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            heartbeat.beat()
            # The cycle's own log lines (its transitions and per-check lines included), for its
            # page under /probes/{id}.
            with capture_cycle_log(self.log_lines) as cycle_log:
                report = await self._services.connectivity_report()
                self._log.observe(report)
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
