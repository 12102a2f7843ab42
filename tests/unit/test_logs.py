from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from exporter.config import build_institutional_ingest_config, build_redactor
from exporter.probes.base import Check, ConnectivityReport, FunctionProbe, Reason, Status
from exporter.probes.runner import ProbeRunner
from exporter.redaction import MASK, Redactor
from exporter.scheduler import ProbeScheduler
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat
from exporter.telemetry.logs import (
    LibraryRateLimit,
    RedactProcessor,
    add_trace_context,
    configure_logging,
)
from exporter.telemetry.tracing import configure_tracing, tracer_for

CANARY = "Canary-pw-7731"


class _Stream(io.StringIO):
    def __init__(self, *, tty: bool = False) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


# Every test here configures logging for the whole process; each puts it back afterwards.
pytestmark = pytest.mark.usefixtures("restore_logging")


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_off_a_tty_with_level_and_timestamp() -> None:
    """Off a TTY every event is one JSON object with level and an ISO UTC timestamp."""
    stream = _Stream()
    configure_logging(level="info", fmt="auto", stream=stream)
    structlog.get_logger("t").info("connector_started", connector="redis")
    structlog.get_logger("t").debug("hidden")
    (line,) = _lines(stream)
    assert line["event"] == "connector_started"
    assert line["connector"] == "redis"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")


def test_console_on_a_tty() -> None:
    """On a TTY the renderer is the console one, not JSON."""
    stream = _Stream(tty=True)
    configure_logging(level="info", fmt="auto", stream=stream)
    structlog.get_logger("t").info("connector_started", connector="redis")
    text = stream.getvalue()
    assert "connector_started" in text
    assert not text.lstrip().startswith("{")


def test_redaction_runs_last_before_the_renderer() -> None:
    """Redaction is the last processor before rendering, for structlog and stdlib records."""
    configure_logging(level="info", fmt="json", stream=_Stream())
    processors = structlog.get_config()["processors"]
    assert isinstance(processors[-2], RedactProcessor)
    assert isinstance(processors[-1], structlog.processors.JSONRenderer)
    assert processors.index(add_trace_context) < len(processors) - 2
    formatter = logging.getLogger().handlers[0].formatter
    assert isinstance(formatter, structlog.stdlib.ProcessorFormatter)
    assert isinstance(formatter.processors[-2], RedactProcessor)
    assert isinstance(formatter.processors[-1], structlog.processors.JSONRenderer)


def test_secrets_added_by_earlier_processors_are_redacted() -> None:
    """Known secrets, URLs and secret keys are masked, also in context bound earlier."""
    stream = _Stream()
    configure_logging(fmt="json", redactor=Redactor([CANARY]), stream=stream)
    structlog.contextvars.bind_contextvars(dsn=f"postgresql://u:{CANARY}@h/db")
    try:
        structlog.get_logger("t").warning(
            "connector_failed",
            detail=f"login failed with {CANARY}",
            nested={"password": "hunter22", "items": [f"x{CANARY}"]},
        )
    finally:
        structlog.contextvars.clear_contextvars()
    assert CANARY not in stream.getvalue()
    (line,) = _lines(stream)
    assert line["dsn"] == f"postgresql://u:{MASK}@h/db"
    assert line["nested"]["password"] == MASK
    assert line["detail"] == f"login failed with {MASK}"


def test_stdlib_logging_goes_through_the_same_processors() -> None:
    """aiokafka/asyncio records come out as redacted JSON with the logger's name."""
    stream = _Stream()
    configure_logging(level="info", fmt="json", redactor=Redactor([CANARY]), stream=stream)
    logging.getLogger("aiokafka.client").warning(
        "Unable connect to %s", f"sasl://user:{CANARY}@broker:9093"
    )
    logging.getLogger("asyncio").info("below warning, filtered")
    assert CANARY not in stream.getvalue()
    (line,) = _lines(stream)
    assert line["logger"] == "aiokafka.client"
    assert line["level"] == "warning"
    assert line["event"] == f"Unable connect to sasl://user:{MASK}@broker:9093"


def test_trace_context_is_added_inside_a_span() -> None:
    """Events inside a span get its trace_id and span_id; an explicit trace_id is kept."""
    stream = _Stream()
    configure_logging(fmt="json", stream=stream)
    provider = TracerProvider(shutdown_on_exit=False)
    log = structlog.get_logger("t")
    with provider.get_tracer("t").start_as_current_span("work") as span:
        log.info("inside")
        log.info("explicit", trace_id="f" * 32)
    log.info("outside")
    inside, explicit, outside = _lines(stream)
    context = span.get_span_context()
    assert inside["trace_id"] == trace.format_trace_id(context.trace_id)
    assert inside["span_id"] == trace.format_span_id(context.span_id)
    assert explicit["trace_id"] == "f" * 32
    assert "span_id" not in explicit
    assert "trace_id" not in outside


class _Services:
    """The two things ProbeScheduler uses of a services bundle."""

    def __init__(self, runner: ProbeRunner) -> None:
        self.runner = runner
        self.state = ExporterState()

    async def connectivity_report(self) -> ConnectivityReport:
        def down() -> Check:
            return Check("ping", Status.DOWN, Reason.REFUSED, "connection refused")

        probes = [
            FunctionProbe("timescale", "connect", lambda: True),
            FunctionProbe("redis", "ping", down),
        ]
        return await self.runner.run(probes, deployment="eu-1")


async def test_one_canonical_probe_completed_line_per_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each check logs one probe_completed event with its span's trace_id and span_id."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)  # the SDK reads them; a sampler set outside must not matter
    memory = InMemorySpanExporter()
    settings = build_institutional_ingest_config(environ={})
    provider = configure_tracing(redactor=build_redactor(settings), exporter=memory)
    runner = ProbeRunner(default_timeout=1.0, tracer=tracer_for(provider))
    services = _Services(runner)
    scheduler = ProbeScheduler(services, interval=60.0)
    ready = asyncio.Event()
    heartbeat = Heartbeat(asyncio.get_running_loop().time, on_ready=lambda _: ready.set())
    with capture_logs() as logs:
        task = asyncio.create_task(scheduler.run(heartbeat))
        await asyncio.wait_for(ready.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    events = [e for e in logs if e["event"] == "probe_completed"]
    spans = {
        trace.format_span_id(s.context.span_id): s for s in memory.get_finished_spans() if s.context
    }
    report = services.state.reports["eu-1"]
    assert len(events) == 2
    keys = {"connector", "check", "status", "reason", "duration_seconds", "deployment"}
    for event in events:
        assert keys <= event.keys()
        assert event["deployment"] == "eu-1"
        assert event["trace_id"] == report.trace_id
        assert spans[event["span_id"]].name == f"probe {event['connector']}"
    down = next(e for e in events if e["connector"] == "redis")
    assert down["status"] == "down"
    assert down["reason"] == "refused"
    assert isinstance(down["duration_seconds"], float)
    assert provider is not None
    provider.shutdown()


class _BrokenPipe(_Stream):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_stream_never_makes_a_log_call_raise() -> None:
    """Writing to a closed pipe drops the line instead of raising into the caller."""
    configure_logging(level="info", fmt="json", stream=_BrokenPipe())
    structlog.get_logger("t").info("signal_received", signal="SIGTERM")
    logging.getLogger("aiokafka").error("still fine")


def test_library_repeats_are_rate_limited_and_counted() -> None:
    """A library template repeats at most once per period; the next line says how many hid."""
    now = [0.0]
    limit = LibraryRateLimit(period=60.0, clock=lambda: now[0])

    def record(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    first = record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
    assert limit.filter(first)
    repeats = [
        record("aiokafka", "Unable connect to node with id %s: %s", 1, f"e{i}") for i in range(9)
    ]
    assert not any(limit.filter(r) for r in repeats)
    assert limit.filter(record("aiokafka.conn", "another message"))  # other templates pass
    now[0] = 61.0
    later = record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
    assert limit.filter(later)
    assert later.suppressed == 9  # type: ignore[attr-defined]


@pytest.mark.parametrize(("level", "expected"), [("info", 1), ("debug", 3)])
def test_library_lines_are_rate_limited_unless_debugging(level: str, expected: int) -> None:
    """A repeated library line is written once outside debug, every time with --log.level=debug."""
    stream = _Stream()
    configure_logging(level=level, fmt="json", stream=stream)
    for attempt in range(3):
        logging.getLogger("aiokafka").error("Unable connect to node %s", attempt)
    assert len(_lines(stream)) == expected
