"""OpenTelemetry tracing: one SDK tracer provider, redacted before export, flushed on stop.

The SDK reads its standard variables itself: ``TracerProvider`` the sampler
(``OTEL_TRACES_SAMPLER``/``_ARG``), ``OTELResourceDetector`` ``OTEL_RESOURCE_ATTRIBUTES``
and ``OTEL_SERVICE_NAME``, ``BatchSpanProcessor`` ``OTEL_BSP_*`` and ``OTLPSpanExporter``
every ``OTEL_EXPORTER_OTLP_*``. This module adds only what the SDK does not do:

* our resource defaults, which those variables override;
* ``OTEL_TRACES_EXPORTER`` (the SDK leaves it to the auto-instrumentation distro), and no
  endpoint, no exporter: spans (and so trace ids for exemplars and logs) exist while the
  SDK is enabled, but an exporter with no collector must not spam ``localhost:4318``;
* the redacting span processor in front of every exporter;
* a start that never fails on a bad variable: a negative sampler ratio samples nothing (the
  SDK would sample everything) and refused ``OTEL_BSP_*`` values give the defaults (the SDK
  would raise);
* no malformed header or resource item logged verbatim: the SDK quotes it in its warning
  (an ``Authorization`` header is a credential), so that warning is filtered and one naming
  only the variable is logged instead.

The provider is not installed globally: the daemon passes its tracer down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, Span, Status

from exporter import __version__
from exporter.config import otel_environment
from exporter.redaction import MASK, Redactor, is_secret_key, redact_url
from exporter.telemetry._semconv import probe_span_attributes

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = [
    "SERVICE_NAME",
    "RedactingSpanProcessor",
    "configure_tracing",
    "probe_span_attributes",
    "shutdown_tracing",
    "span_ids",
    "tracer_for",
]

#: ``service.name`` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise.
SERVICE_NAME = "ingest-exporter"

_log = structlog.get_logger(__name__)


def configure_tracing(
    *, redactor: Redactor, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Build the process's tracer provider; the SDK reads the ``OTEL_*`` variables.

    Args:
        redactor: Scrubs every span (name, attributes, events, links, status) before export.
        exporter: Export to this exporter, synchronously, instead of what the variables say
            (tests pass an ``InMemorySpanExporter``); it is redacted all the same.

    Returns:
        The provider, or ``None`` when ``OTEL_SDK_DISABLED=true`` (use :func:`tracer_for`,
        which then gives a no-op tracer).
    """
    env = otel_environment()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        _log.info("tracing_disabled")
        return None
    _refuse_verbatim_warnings(env)
    defaults = {
        "service.name": SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid4()),
    }
    provider = TracerProvider(
        sampler=_negative_ratio_sampler(env),
        # Resource.create() puts explicit attributes over the variables; these are defaults.
        resource=Resource.create(defaults).merge(OTELResourceDetector().detect()),
        # The daemon shuts it down, bounded; an atexit hook per provider would pile up in tests.
        shutdown_on_exit=False,
    )
    if exporter is not None:
        provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exporter), redactor))
        return provider
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    for name in dict.fromkeys(n for n in names if n) or ("otlp",):
        span_exporter = _exporter(name, env, explicit=any(names))
        if span_exporter is not None:
            provider.add_span_processor(RedactingSpanProcessor(_batch(span_exporter), redactor))
    return provider


def tracer_for(provider: TracerProvider | None) -> trace.Tracer:
    """Return the exporter's tracer from ``provider``, or a no-op tracer without one."""
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer("exporter", __version__)


async def shutdown_tracing(provider: TracerProvider | None, *, timeout: float) -> bool:
    """Flush and shut down ``provider`` without blocking the loop for more than ``timeout``.

    The SDK's shutdown joins its export thread (up to 30 s against a dead collector), so it
    runs in a daemon thread of its own that is abandoned, not awaited, once the time is up.

    Returns:
        True when the shutdown finished in time.
    """
    if provider is None:
        return True
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not finished.done():
            finished.set_result(None)

    def run() -> None:
        try:
            provider.shutdown()
        finally:
            # The loop may be gone when a shutdown outlives it; nobody waits any more then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done)

    threading.Thread(target=run, name="otel-shutdown", daemon=True).start()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(finished)
    except TimeoutError:
        _log.warning("tracing_shutdown_timed_out", timeout_seconds=timeout)
        return False
    return True


def span_ids(span: Span) -> tuple[str | None, str | None]:
    """Return the span's trace and span ids as lower-case hex (``None`` for a no-op span)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None, None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


class RedactingSpanProcessor(SpanProcessor):
    """Hand ``inner`` a scrubbed copy of every ended span; nothing unredacted gets past it.

    Every string goes through the :class:`~exporter.redaction.Redactor`: the name, attribute
    values, event names and attributes, link attributes, the status description and the
    resource's attributes. Values under secret-looking keys become the mask. Attribute keys
    are kept: they are code constants, never data.
    """

    def __init__(self, inner: SpanProcessor, redactor: Redactor) -> None:
        self._inner = inner
        self._redactor = redactor
        self._resources: dict[int, tuple[Resource, Resource]] = {}

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Pass the start through (exporters only see ended spans)."""
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Pass a redacted copy of the ended span on."""
        self._inner.on_end(self.redact(span))

    def shutdown(self) -> None:
        """Shut the wrapped processor down (flushing what it holds)."""
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped processor."""
        return self._inner.force_flush(timeout_millis)

    def redact(self, span: ReadableSpan) -> ReadableSpan:
        """Return a copy of ``span`` with every string scrubbed."""
        scrub = self._redactor
        status = span.status
        if status.description:
            status = Status(status.status_code, scrub(status.description))
        events = [
            Event(scrub(e.name), self._attributes(e.attributes), e.timestamp) for e in span.events
        ]
        links = [Link(link.context, self._attributes(link.attributes)) for link in span.links]
        return ReadableSpan(
            name=scrub(span.name),
            context=span.context,
            parent=span.parent,
            resource=self._resource(span.resource),
            attributes=self._attributes(span.attributes),
            events=events,
            links=links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _attributes(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        # Keys are constants of this code and of the semantic conventions, so only values are
        # scrubbed: a weak known secret (the dev password "ingest") would otherwise turn every
        # "ingest.*" key into "***.*". Values under secret-looking keys are masked whole.
        scrubbed: dict[str, Any] = {}
        for key, value in (attributes or {}).items():
            secret = is_secret_key(key) and value is not None and not isinstance(value, bool)
            scrubbed[key] = MASK if secret else self._redactor.redact_mapping(value)
        return scrubbed

    def _resource(self, resource: Resource) -> Resource:
        # One resource per provider: scrub it once, not once per span.
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            scrubbed = Resource(self._attributes(resource.attributes), resource.schema_url)
            cached = (resource, scrubbed)
            self._resources[id(resource)] = cached
        return cached[1]


# The SDK warns about a malformed item by quoting it, and an item is often a token.
_VERBATIM = {
    "opentelemetry.util.re": "Header format invalid",
    "opentelemetry.sdk.resources": "Invalid key value resource attribute pair",
}
# The SDK's liberal header item (OTLP exporter spec: a token, '=', printable ASCII except ",;\).
_HEADER = re.compile(
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*="
    r"[ \t]*[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*"
)

# What the resource detector accepts: anything with an '='.
_PAIR = re.compile(r"[^=]*=.*", re.DOTALL)


class _DropVerbatim(logging.Filter):
    """Drop the SDK records that quote a malformed variable item (logged redacted instead)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the one quoting raw input."""
        return not str(record.msg).startswith(self.prefix)


def _refuse_verbatim_warnings(env: Mapping[str, str]) -> None:
    """Filter the SDK's verbatim warnings once, and say which variable is malformed instead."""
    for name, prefix in _VERBATIM.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropVerbatim) for f in logger.filters):
            logger.addFilter(_DropVerbatim(prefix))
    headers = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
    if not env.get(headers):
        headers = "OTEL_EXPORTER_OTLP_HEADERS"  # the SDK reads this one only as a fallback
    checks: dict[str, re.Pattern[str]] = {headers: _HEADER, "OTEL_RESOURCE_ATTRIBUTES": _PAIR}
    for variable, valid in checks.items():
        items = [item for item in re.split(r"[ \t]*,[ \t]*", env.get(variable, "")) if item]
        malformed = sum(valid.fullmatch(item) is None for item in items)
        if malformed:
            _log.warning("tracing_variable_malformed", variable=variable, items=malformed)


def _negative_ratio_sampler(env: Mapping[str, str]) -> sampling.Sampler | None:
    """Return a sample-nothing sampler for a negative ratio; ``None`` lets the SDK choose."""
    name = env.get("OTEL_TRACES_SAMPLER", "").lower()
    try:
        negative = float(env.get("OTEL_TRACES_SAMPLER_ARG", "")) < 0
    except ValueError:
        return None  # the SDK warns and samples everything, as for any unusable ratio
    if not negative or name not in ("traceidratio", "parentbased_traceidratio"):
        return None
    if name == "traceidratio":
        return sampling.TraceIdRatioBased(0.0)
    return sampling.ParentBasedTraceIdRatio(0.0)


def _batch(span_exporter: SpanExporter) -> BatchSpanProcessor:
    try:
        return BatchSpanProcessor(span_exporter)
    except ValueError as exc:  # the SDK's own message names the option, never its value
        _log.warning("tracing_batch_options_invalid", error=str(exc))
        # The specification's defaults: queue, delay (ms), batch, export timeout (ms).
        return BatchSpanProcessor(span_exporter, 2048, 5000, 512, 30000)


def _exporter(name: str, env: Mapping[str, str], *, explicit: bool) -> SpanExporter | None:
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        _log.warning("tracing_exporter_unsupported", exporter=name)
        return None
    protocol = _first(env, "PROTOCOL") or "http/protobuf"
    if protocol != "http/protobuf":
        _log.warning("tracing_protocol_unsupported", protocol=protocol)
        return None
    endpoint = _first(env, "ENDPOINT")
    if not endpoint and not explicit:
        return None  # no collector configured: spans exist for ids, nothing leaves the process
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    shown = redact_url(endpoint) if endpoint else None
    _log.info("tracing_configured", exporter="otlp", endpoint=shown)
    return OTLPSpanExporter()


def _first(env: Mapping[str, str], suffix: str) -> str:
    """Return the traces-specific OTLP variable, else the generic one."""
    value = env.get(f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", "").strip()
    return value or env.get(f"OTEL_EXPORTER_OTLP_{suffix}", "").strip()
