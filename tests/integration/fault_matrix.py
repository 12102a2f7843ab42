"""The fault matrix's measuring harness: inject, detect, restore, recover, settle, tabulate.

One in-process daemon watches one service through a :class:`FaultProxy`; each case injects a
fault, and the harness measures how long the daemon took to report the connector down (and
why), how long to report it up again after the fault was removed, how fast ``/metrics``
answered meanwhile (p99 of a scrape every 50 ms), and whether the server-side connections
(counted by the proxy) and the daemon's file descriptors and asyncio tasks came back to their
steady values.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from exporter.daemon import Daemon

from .fault_proxy import TASK_NAME, FaultProxy

__all__ = ["FaultRow", "Steady", "measure_case", "render_table", "steady", "until"]

_SCRAPER = "fault-scraper"


@dataclass(frozen=True)
class Steady:
    """The values that must come back after a fault: server connections, fds, tasks."""

    connections: int
    fds: int
    tasks: int

    def __str__(self) -> str:
        return f"{self.connections}/{self.fds}/{self.tasks}"

    def within(self, other: Steady) -> bool:
        """Tell whether nothing grew compared to ``other`` (a pool may well shrink)."""
        return (
            self.connections <= other.connections
            and self.fds <= other.fds
            and self.tasks <= other.tasks
        )


@dataclass
class FaultRow:
    """One measured case of the matrix."""

    service: str
    case: str
    reasons: str = ""
    detection: float | None = None
    recovery: float | None = None
    p99_ms: float = 0.0
    scrapes: int = 0
    failed_scrapes: int = 0
    before: Steady | None = None
    after: Steady | None = None
    settled: float | None = None

    def cells(self) -> list[str]:
        """Return the row as table cells."""
        return [
            self.service,
            self.case,
            self.reasons or "-",
            _seconds(self.detection),
            _seconds(self.recovery),
            f"{self.p99_ms:.1f}",
            f"{self.scrapes - self.failed_scrapes}/{self.scrapes}",
            str(self.before) if self.before else "-",
            str(self.after) if self.after else "-",
            _seconds(self.settled),
        ]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


_HEADER = [
    "service",
    "fault",
    "reason",
    "detect s",
    "recover s",
    "/metrics p99 ms",
    "scrapes ok",
    "conns/fds/tasks before",
    "after",
    "settled in s",
]


def render_table(rows: list[FaultRow]) -> str:
    """Return the rows as a Markdown table."""
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + " --- |" * len(_HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def steady(proxies: list[FaultProxy]) -> Steady:
    """Return the connections through ``proxies`` and this process's fds and tasks.

    The proxies' own sockets and tasks, and the scraper's, are left out: what remains is the
    daemon's (the test process holds nothing else that changes during a case).
    """
    fds = len(os.listdir("/proc/self/fd")) - sum(p.sockets for p in proxies)
    names = (TASK_NAME, _SCRAPER)
    tasks = sum(1 for t in asyncio.all_tasks() if t.get_name() not in names)
    return Steady(sum(p.upstream for p in proxies), fds, tasks)


async def until(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Return the seconds until ``predicate`` held (checked every 20 ms), None on timeout."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            return None
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def connector_up(daemon: Daemon, connector: str) -> bool | None:
    """Return whether the last report had ``connector`` up (None before the first report)."""
    report = daemon.state.reports.get(daemon.services[0].name)
    return None if report is None else report.connector_up(connector)


def failure_reasons(daemon: Daemon, connector: str) -> set[str]:
    """Return the failure reasons of the connector's checks in the last report."""
    report = daemon.state.reports.get(daemon.services[0].name)
    if report is None:
        return set()
    return {r.reason.value for r in report.results if r.connector == connector and r.reason}


class _Scraper:
    """Scrape ``/metrics`` every 50 ms in the background; keep latencies and failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Scraper:
        self._task = asyncio.create_task(self._run(), name=_SCRAPER)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                t0 = time.perf_counter()
                try:
                    async with session.get(self.url) as response:
                        await response.read()
                        if response.status != 200:
                            self.failures += 1
                except aiohttp.ClientError:
                    self.failures += 1
                self.latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def measure_case(
    row: FaultRow,
    daemon: Daemon,
    connector: str,
    proxies: list[FaultProxy],
    *,
    inject: Callable[[], Awaitable[None]],
    restore: Callable[[], Awaitable[None]] | None,
    baseline: Steady | None,
    hold: float = 1.0,
    detect_within: float = 10.0,
    recover_within: float = 30.0,
) -> FaultRow:
    """Run one case on a daemon whose ``connector`` is up; fill and return ``row``.

    ``inject`` starts the fault; the harness waits for the connector to be reported down,
    keeps the fault ``hold`` seconds longer, calls ``restore`` (None: the fault is permanent,
    only detection is measured) and waits for the connector to be up again, then for the
    steady values to be back within ``baseline`` (taken now when None): no more server
    connections, fds or tasks than before the fault.
    """
    url = f"http://127.0.0.1:{daemon.port}/metrics"
    row.before = baseline or steady(proxies)
    async with _Scraper(url) as scraper:
        await inject()
        row.detection = await until(lambda: connector_up(daemon, connector) is False, detect_within)
        # Every reason reported while the fault is held: a first timeout may be followed by
        # the real cause once the driver finishes what the probe's deadline cut short.
        seen = failure_reasons(daemon, connector)
        held_until = time.monotonic() + hold
        while time.monotonic() < held_until:
            await asyncio.sleep(0.05)
            seen |= failure_reasons(daemon, connector)
        row.reasons = ",".join(sorted(seen))
        if restore is not None:
            await restore()
            row.recovery = await until(
                lambda: connector_up(daemon, connector) is True, recover_within
            )
    row.p99_ms = scraper.p99() * 1000
    row.scrapes, row.failed_scrapes = len(scraper.latencies), scraper.failures
    if restore is not None:
        before = row.before
        row.settled = await until(lambda: steady(proxies).within(before), 15.0)
    row.after = steady(proxies)
    return row
