"""The drill runner without a database: stop conditions, deadline, cancel, span and logs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from exporter.config import IngestSettings
from exporter.drills.plan import plan_failover_drill
from exporter.drills.record import DrillResult
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.runner import execute_failover_drill
from exporter.probes.base import ConnectivityReport, ProbeResult, Reason, Status
from exporter.redaction import Redactor

from .drill_samples import settings


@dataclass
class FakeTarget:
    """A deployment whose probes say ``status`` for timescale, after ``delay`` seconds."""

    settings: IngestSettings
    status: Status = Status.DOWN
    delay: float = 0.0
    redactor: Redactor = field(default_factory=Redactor)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def connectivity_report(self) -> ConnectivityReport:
        """Answer one timescale check."""
        self.called.set()
        # A probe run that takes this long: what a deadline or a cancel must cut short.
        await asyncio.sleep(self.delay)
        reason = Reason.REFUSED if self.status is Status.DOWN else None
        result = ProbeResult(
            "timescale", "connect", self.status, reason, 0.001, "connection refused", time.time()
        )
        return ConnectivityReport("local", time.time(), 0.001, (result,), connectors=("timescale",))


def _tracer() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


async def test_a_failed_pre_check_aborts_with_one_span_event_and_log_per_phase() -> None:
    """Connector down at pre-check: aborted, recorded once, one span with one phase event."""
    exporter, provider = _tracer()
    config = settings(inject_command=["true"])
    plan = plan_failover_drill(config, scenario="kill", initiator="test")
    stored: list[FailoverDrillSnapshot] = []

    async def record(snapshot: FailoverDrillSnapshot) -> None:
        stored.append(snapshot)

    with capture_logs() as logs:
        snapshot = await execute_failover_drill(
            FakeTarget(config), plan, tracer=provider.get_tracer("t"), record=record
        )
    assert snapshot.result is DrillResult.ABORTED
    assert snapshot.aborted_reason == (
        "timescale connector not up at pre-check (connect: connection refused)"
    )
    assert stored == [snapshot]
    [span] = exporter.get_finished_spans()
    assert span.name == "failover_drill"
    assert span.attributes is not None
    assert span.attributes["ingest.drill.result"] == "aborted"
    assert [e.name for e in span.events] == ["phase pre_check"]
    assert snapshot.trace_id == f"{span.context.trace_id:032x}"
    phases = [e for e in logs if e["event"] == "drill_phase_finished"]
    assert [(e["phase"], e["status"]) for e in phases] == [("pre_check", "fail")]
    assert [p.status.value for p in snapshot.phases] == ["fail"] + ["skipped"] * 7


async def test_the_deadline_before_any_fault_aborts() -> None:
    """A pre-check slower than the deadline: aborted with the phase named."""
    config = settings(deadline_seconds=0.3)
    plan = plan_failover_drill(config, scenario="observe")
    t0 = time.monotonic()
    snapshot = await execute_failover_drill(FakeTarget(config, delay=30), plan)
    assert time.monotonic() - t0 < 2
    assert snapshot.result is DrillResult.ABORTED
    assert snapshot.aborted_reason == "deadline 0.3s passed during pre_check"
    assert snapshot.phases[0].summary == "the drill's deadline passed"


async def test_a_cancelled_drill_is_recorded_aborted_and_stays_cancelled() -> None:
    """SIGTERM's cancel: the record is stored as aborted, then the cancel goes on."""
    config = settings()
    plan = plan_failover_drill(config, scenario="observe")
    stored: list[FailoverDrillSnapshot] = []

    async def record(snapshot: FailoverDrillSnapshot) -> None:
        await asyncio.sleep(0.05)  # a store that takes a moment still completes
        stored.append(snapshot)

    target = FakeTarget(config, delay=30)
    task = asyncio.create_task(execute_failover_drill(target, plan, record=record))
    await target.called.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [snapshot] = stored
    assert snapshot.result is DrillResult.ABORTED
    assert snapshot.aborted_reason == "cancelled during pre_check (the exporter is stopping)"
    assert snapshot.phases[0].summary == "cancelled"


async def test_an_unexpected_error_ends_as_a_record_not_a_crash() -> None:
    """A bug in a step is an aborted record naming the error type, never a raised exception."""

    class Broken(FakeTarget):
        async def connectivity_report(self) -> ConnectivityReport:
            raise ValueError("no such thing")

    config = settings()
    plan = plan_failover_drill(config, scenario="observe")
    with capture_logs() as logs:
        snapshot = await execute_failover_drill(Broken(config), plan)
    assert snapshot.result is DrillResult.ABORTED
    assert snapshot.aborted_reason == "drill error during pre_check: ValueError: no such thing"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["drill_error"]
