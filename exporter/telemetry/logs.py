"""structlog configured once: JSON off a TTY, console on one, redaction right before rendering."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO, cast

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from opentelemetry import trace

from exporter.redaction import Redactor
from exporter.telemetry.cycle_log import CaptureCycleLog, drop_below, keep_for_cycle
from exporter.telemetry.tracing import span_ids

__all__ = [
    "HttpParserErrorScrub",
    "LibraryRateLimit",
    "RedactProcessor",
    "add_trace_context",
    "configure_logging",
]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class RedactProcessor:
    """Scrub every value of an event dict (known secrets, URLs, secret-looking keys)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Return the redacted event."""
        return self._redactor.redact_mapping(dict(event))


def add_trace_context(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add the current span's ``trace_id`` and ``span_id`` unless the event sets its own.

    Log lines written inside a probe's span (library warnings included) then join the trace.
    """
    if "trace_id" not in event:
        trace_id, span_id = span_ids(trace.get_current_span())
        if trace_id is not None:
            event["trace_id"] = trace_id
            event["span_id"] = span_id
    return event


class _Sink:
    """Write log lines to a stream, dropping those it refuses: a log call must never raise.

    A daemon whose stderr pipe was closed (``ingest-exporter run | head``) would otherwise
    fail every log call with ``BrokenPipeError``, the signal handler included, and never stop.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # a broken pipe, a full disk, a closed file
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


class LibraryRateLimit(logging.Filter):
    """Let each library message template through once per ``period`` seconds.

    During an outage aiokafka logs the same reconnect error about ten times a second; the
    exporter's own events (``probe_completed``, ``task_failed``) already say what is wrong, so
    the repeats are counted and the next line that passes carries ``suppressed=N``.
    """

    def __init__(self, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._period = period
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Return whether to emit ``record``; count it when it is a repeat."""
        key = (record.name, str(record.msg))
        now = self._clock()
        last, suppressed = self._seen.get(key, (-math.inf, 0))
        if now - last < self._period:
            self._seen[key] = (last, suppressed + 1)
            return False
        if len(self._seen) > 1_000:  # templates are few; this only bounds pathological input
            self._seen.clear()
        self._seen[key] = (now, 0)
        if suppressed:
            record.suppressed = suppressed
        return True


class HttpParserErrorScrub(logging.Filter):
    """Replace aiohttp's log record of a malformed request by one without the request's bytes.

    aiohttp logs every request it cannot parse with the parser's exception, whose text quotes
    the offending line: for a header over 8 KiB that is the start of its value, typically a
    bearer token (``Got more than 8190 bytes when reading: b'Bearer ...'``). No redactor can
    recognise an unlabelled token, so the record keeps only the error's type and status. A
    client's malformed request is not the exporter's error: the level becomes warning.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a record that carries an HTTP parser error; keep every other record."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "http_request_rejected", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.error_type = type(exc).__name__
            record.status = exc.code
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    redactor: Redactor | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and route stdlib logging through it) for the whole process."""
    stream = stream or sys.stderr
    sink = cast("TextIO", _Sink(stream))
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    redactor = redactor or Redactor()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        add_trace_context,
        # The status page's per-cycle log lines (redacted there too), any level.
        CaptureCycleLog(redactor),
    ]
    numeric = _LEVELS.get(level, logging.ERROR)
    # Last before rendering, so nothing added by an earlier processor escapes it.
    redact = RedactProcessor(redactor)
    structlog.configure(
        # Debug events reach the processors only while a probe cycle captures them.
        processors=[keep_for_cycle(numeric), *shared, drop_below(numeric), redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=False,
    )
    # Library loggers (aiokafka, asyncio) go through the same redaction and renderer.
    handler = logging.StreamHandler(sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *shared[1:],
                redact,
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        )
    )
    # Before the rate limit, which keys on the (rewritten) message template.
    handler.addFilter(HttpParserErrorScrub())
    if numeric > logging.DEBUG:
        handler.addFilter(LibraryRateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (aiokafka reconnect spam) is kept at warning unless debugging.
    root.setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
