from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
import structlog

from exporter.probes.base import Check, ConnectivityReport, FunctionProbe, Status
from exporter.probes.runner import ProbeRunner
from exporter.reasons import Reason
from exporter.redaction import MASK, Redactor
from exporter.scheduler import ProbeScheduler
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat
from exporter.telemetry.cycle_log import capture_cycle_log
from exporter.telemetry.logs import configure_logging

CANARY = "Canary-pw-5519"


class _Stream(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def stream(restore_logging: None) -> _Stream:
    """Configure logging as the CLI does (info, JSON) into a stream; restored after the test."""
    out = _Stream()
    configure_logging(level="info", fmt="json", redactor=Redactor([CANARY]), stream=out)
    return out


def _events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines() if line]


def test_a_cycle_keeps_its_events_redacted_and_at_every_level(stream: _Stream) -> None:
    """Inside a capture, debug lines are kept (not written) and secrets are masked in both."""
    log = structlog.get_logger("t")
    log.debug("before")
    with capture_cycle_log(10) as cycle:
        log.debug("pool_checked", dsn=f"postgresql://u:{CANARY}@h/db")
        log.warning("probe_slow", detail=f"password {CANARY} refused", nested={"a": [1]})
        logging.getLogger("aiokafka").warning("broker %s gone", "b-1")
    log.info("after")
    lines = cycle.close()
    assert [line["event"] for line in lines] == ["pool_checked", "probe_slow", "broker b-1 gone"]
    assert lines[0]["level"] == "debug"
    assert lines[0]["dsn"] == f"postgresql://u:{MASK}@h/db"
    assert lines[1]["detail"] == f"password {MASK} refused"
    assert lines[1]["nested"] == "{'a': [1]}"  # kept as text: a line is for reading
    assert lines[2]["logger"] == "aiokafka"
    assert "timestamp" in lines[0]
    assert CANARY not in json.dumps(lines)
    assert _events(stream) == ["probe_slow", "broker b-1 gone", "after"]
    assert CANARY not in stream.getvalue()


def test_a_cycle_log_is_bounded(stream: _Stream) -> None:
    """Past the limit lines are counted, not kept; long values are cut."""
    log = structlog.get_logger("t")
    with capture_cycle_log(3) as cycle:
        for i in range(5):
            log.info("probe_completed", index=i, detail="x" * 2_000)
    lines = cycle.close()
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert cycle.dropped == 2
    assert len(lines[0]["detail"]) == 500
    assert lines[0]["detail"].endswith("…")


async def test_tasks_started_in_a_cycle_log_into_it_until_it_ends(stream: _Stream) -> None:
    """Child tasks share the cycle's log; what they log after it closed is not kept."""
    log = structlog.get_logger("t")
    late = asyncio.Event()

    async def child() -> None:
        log.info("child_logged")
        await late.wait()
        log.info("child_logged_late")

    with capture_cycle_log(10) as cycle:
        task = asyncio.create_task(child())
        await asyncio.sleep(0)  # let the child log once inside the cycle
    late.set()
    await task
    assert [line["event"] for line in cycle.close()] == ["child_logged"]
    assert _events(stream) == ["child_logged", "child_logged_late"]


class _Services:
    """What ProbeScheduler uses of a services bundle: a runner with one failing sync probe."""

    def __init__(self) -> None:
        self.runner = ProbeRunner(default_timeout=2.0, redact=Redactor([CANARY]))
        self.state = ExporterState()

    async def connectivity_report(self) -> ConnectivityReport:
        def down() -> Check:
            # Runs in a worker thread: its log line must still land in the cycle.
            structlog.get_logger("probe").debug("ping_sent", password_hint=CANARY)
            return Check("ping", Status.DOWN, Reason.REFUSED, f"refused ({CANARY})")

        probes = [
            FunctionProbe("timescale", "connect", lambda: True),
            FunctionProbe("redis", "ping", down),
        ]
        return await self.runner.run(probes, deployment="eu")


async def test_the_scheduler_stores_each_cycle_with_its_log_lines(stream: _Stream) -> None:
    """A probe cycle lands in the history with its probe_completed lines and probe debug line."""
    services = _Services()
    scheduler = ProbeScheduler(services, interval=60.0, log_lines=50)
    ready = asyncio.Event()
    heartbeat = Heartbeat(asyncio.get_running_loop().time, on_ready=lambda _: ready.set())
    task = asyncio.create_task(scheduler.run(heartbeat))
    try:
        await asyncio.wait_for(ready.wait(), timeout=5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        services.runner.close()
    (cycle,) = services.state.history.cycles("eu")
    events: list[dict[str, Any]] = [dict(line) for line in cycle.log_lines]
    assert [e["event"] for e in events].count("probe_completed") == 2
    assert any(e["event"] == "ping_sent" and e["level"] == "debug" for e in events)
    assert not cycle.ok
    assert services.state.reports["eu"] is cycle.report
    assert CANARY not in json.dumps(events)
    assert "ping_sent" not in _events(stream)  # debug: kept for the page, not written
