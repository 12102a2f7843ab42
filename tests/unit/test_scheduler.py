"""The periodic jobs: the probe cycle writes the snapshot and reports ready; operator jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs

from exporter.probes.base import ConnectivityReport, ProbeResult, Reason, Status
from exporter.scheduler import ProbeScheduler, periodic
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat
from tests.waiting import Changes


class Reporter:
    """A services bundle stand-in: each cycle answers the next report, counted."""

    def __init__(self, *, trace_id: str | None = "ef" * 16) -> None:
        self.state = ExporterState()
        self.calls = Changes()
        self.started: list[float] = []
        self.trace_id = trace_id

    async def connectivity_report(self) -> ConnectivityReport:
        """Return one ok and one refused check."""
        self.started.append(asyncio.get_running_loop().time())
        self.calls()
        results = (
            ProbeResult("redis", "ping", Status.OK, None, 0.002, "", time.time()),
            ProbeResult(
                "kafka", "metadata", Status.DOWN, Reason.REFUSED, 0.5, "refused", time.time()
            ),
        )
        return ConnectivityReport("eu", time.time(), 0.5, results, trace_id=self.trace_id)


@asynccontextmanager
async def running(job: Callable[[Heartbeat], Awaitable[None]]) -> AsyncIterator[Changes]:
    """Run ``job`` with a heartbeat; yield what counts its ``ready()`` calls; cancel it after."""
    ready = Changes()
    task = asyncio.ensure_future(job(Heartbeat(time.monotonic, lambda _: ready())))
    try:
        yield ready
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_each_cycle_is_recorded_and_the_first_makes_the_job_ready() -> None:
    """Every cycle lands in the snapshot; the heartbeat says ready after the first."""
    reporter = Reporter()
    scheduler = ProbeScheduler(reporter, interval=0.01)
    async with running(scheduler.run) as ready:
        await ready.until(lambda: ready.count >= 3)
        assert ready.count == scheduler.cycles, "ready after every cycle, the first included"
        assert reporter.state.cycles["eu"] >= 3
        assert reporter.state.reports["eu"].trace_id == "ef" * 16
        assert reporter.state.failures[("eu", "kafka", "refused")] >= 3


async def test_cycles_start_on_a_fixed_cadence_never_early() -> None:
    """The k-th cycle never starts before k intervals after the first (no burst, no drift)."""
    reporter = Reporter()
    interval = 0.05
    scheduler = ProbeScheduler(reporter, interval=interval)
    async with running(scheduler.run):
        await reporter.calls.until(lambda: len(reporter.started) >= 4)
    first = reporter.started[0]
    # The loop clock's resolution may fire a timer up to a millisecond early.
    offsets = [at - first - k * interval for k, at in enumerate(reporter.started)]
    assert min(offsets) >= -0.002, offsets


async def test_every_check_is_logged_once_per_cycle_with_stable_keys() -> None:
    """A cycle logs ``probe_completed`` per check: connector, check, status, reason, trace."""
    reporter = Reporter()
    scheduler = ProbeScheduler(reporter, interval=60.0)
    with capture_logs() as logs:
        async with running(scheduler.run) as ready:
            await ready.until(lambda: ready.count == 1)
            assert scheduler.cycles == 1
    completed = [e for e in logs if e["event"] == "probe_completed"]
    assert [(e["connector"], e["check"], e["status"], e["reason"]) for e in completed] == [
        ("redis", "ping", "ok", None),
        ("kafka", "metadata", "down", "refused"),
    ]
    for event in completed:
        assert event["deployment"] == "eu"
        assert event["trace_id"] == "ef" * 16
        assert event["duration_seconds"] >= 0
    assert completed[1]["detail"] == "refused"
    assert completed[0]["detail"] is None, "an empty detail is left out, not logged as ''"


async def test_periodic_runs_the_job_each_interval_and_is_ready_after_the_first() -> None:
    """An operator ingest job runs again and again; the first completed run makes it ready."""
    runs = Changes()

    async def job() -> None:
        runs()

    async with running(periodic(job, 0.01)) as ready:
        await runs.until(lambda: runs.count >= 3)
        assert ready.count >= 2, "ready after each completed run"


async def test_a_failing_periodic_job_raises_for_the_supervisor() -> None:
    """An exception in the operator job ends the run (the supervisor restarts it with backoff)."""

    async def job() -> None:
        raise RuntimeError("ingest failed")

    ready: list[Heartbeat] = []
    with pytest.raises(RuntimeError, match="ingest failed"):
        await periodic(job, 0.01)(Heartbeat(time.monotonic, ready.append))
    assert ready == []
