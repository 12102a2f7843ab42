"""OpenTelemetry tracing: one SDK tracer provider, redacted before export, flushed on stop.

The provider is configured from the standard ``OTEL_*`` variables, read through
:func:`exporter.config.otel_environment` (config is the only module that reads the environment)
and handed to the SDK pieces explicitly: resource, sampler, batch processor and OTLP exporter
options. Two SDK pieces still read ``os.environ`` themselves and are left to do so, because
the mapping given here comes from the same environment in production: ``SpanLimits`` (the
``OTEL_*_LIMIT`` variables) and the OTLP exporter's fallbacks for anything not passed (its
``*_CREDENTIAL_PROVIDER`` hook). The resource's own environment detector also runs; the values
from the mapping are merged over it, so they win.

Spans are always created while the SDK is enabled, even with no exporter, so every probe cycle
has a trace id for exemplars and log lines. Nothing is exported unless an endpoint (or
``OTEL_TRACES_EXPORTER`` explicitly) asks for it: an exporter with no collector must not spam
``localhost:4318``. The provider is not installed globally: the daemon passes its tracer down.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, Span, Status
from opentelemetry.util.types import AttributeValue

from exporter import __version__
from exporter.config import otel_environment
from exporter.redaction import MASK, Redactor, is_secret_key, redact_url
from exporter.telemetry._semconv import probe_span_attributes

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from exporter.config import IngestSettings

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

_SAMPLERS: Mapping[str, Callable[[float], sampling.Sampler]] = {
    "always_on": lambda _: sampling.ALWAYS_ON,
    "always_off": lambda _: sampling.ALWAYS_OFF,
    "traceidratio": sampling.TraceIdRatioBased,
    "parentbased_always_on": lambda _: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda _: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio,
}
# OTEL_BSP_* variable -> BatchSpanProcessor keyword.
_BSP_OPTIONS = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "max_queue_size",
    "OTEL_BSP_SCHEDULE_DELAY": "schedule_delay_millis",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "max_export_batch_size",
    "OTEL_BSP_EXPORT_TIMEOUT": "export_timeout_millis",
}


def configure_tracing(
    settings: IngestSettings,
    *,
    redactor: Redactor,
    environ: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """Build the process's tracer provider from the ``OTEL_*`` variables.

    Args:
        settings: The settings tree; its secrets are registered with ``redactor``.
        redactor: Scrubs every span (name, attributes, events, links, status) before export.
        environ: The ``OTEL_*`` variables; by default :func:`exporter.config.otel_environment`.
        exporter: Export to this exporter, synchronously, instead of what the variables say
            (tests pass an ``InMemorySpanExporter``); it is redacted all the same.

    Returns:
        The provider, or ``None`` when ``OTEL_SDK_DISABLED=true`` (use :func:`tracer_for`,
        which then gives a no-op tracer).
    """
    env = otel_environment() if environ is None else dict(environ)
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        _log.info("tracing_disabled")
        return None
    redactor.add(*settings.secret_values())
    provider = TracerProvider(
        sampler=_sampler(env),
        resource=_resource(env),
        # The daemon shuts it down, bounded; an atexit hook per provider would pile up in tests.
        shutdown_on_exit=False,
    )
    if exporter is not None:
        provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exporter), redactor))
        return provider
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    explicit = any(names)
    for name in dict.fromkeys(n for n in names if n) or ("otlp",):
        span_exporter = _exporter(name, env, redactor, explicit=explicit)
        if span_exporter is not None:
            batch = BatchSpanProcessor(span_exporter, **_batch_options(env))
            provider.add_span_processor(RedactingSpanProcessor(batch, redactor))
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


def _sampler(env: Mapping[str, str]) -> sampling.Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    try:
        ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", "") or 1.0)
    except ValueError:
        ratio = 1.0
    if math.isnan(ratio):  # would pass the clamp below and fail the SDK's sampler
        ratio = 1.0
    factory = _SAMPLERS.get(name)
    if factory is None:
        _log.warning("tracing_sampler_unsupported", sampler=name)
        factory = _SAMPLERS["parentbased_always_on"]
    return factory(min(max(ratio, 0.0), 1.0))


def _resource(env: Mapping[str, str]) -> Resource:
    attributes: dict[str, AttributeValue] = {
        "service.name": SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid4()),
    }
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    if env.get("OTEL_SERVICE_NAME", "").strip():
        attributes["service.name"] = env["OTEL_SERVICE_NAME"].strip()
    return Resource.create(attributes)


def _batch_options(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for variable, keyword in _BSP_OPTIONS.items():
        raw = env.get(variable, "").strip()
        if raw.isdigit() and int(raw) > 0:
            options[keyword] = int(raw)
    return options


def _exporter(
    name: str, env: Mapping[str, str], redactor: Redactor, *, explicit: bool
) -> SpanExporter | None:
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
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not endpoint and base:
        endpoint = base.removesuffix("/") + "/v1/traces"
    if not endpoint and not explicit:
        return None  # no collector configured: spans exist for ids, nothing leaves the process
    return _otlp_exporter(endpoint or "http://localhost:4318/v1/traces", env, redactor)


def _otlp_exporter(endpoint: str, env: Mapping[str, str], redactor: Redactor) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.util.re import parse_env_headers

    headers = dict(parse_env_headers(_first(env, "HEADERS"), liberal=True))
    # Header values are usually tokens, and the SDK logs failed exports with the endpoint.
    userinfo = endpoint.partition("://")[2].rpartition("@")[0]
    redactor.add(*headers.values(), userinfo, userinfo.partition(":")[2])
    timeout = _first(env, "TIMEOUT")
    compression = _first(env, "COMPRESSION").lower()
    exporter = OTLPSpanExporter(
        endpoint=endpoint,
        certificate_file=_first(env, "CERTIFICATE") or None,
        client_key_file=_first(env, "CLIENT_KEY") or None,
        client_certificate_file=_first(env, "CLIENT_CERTIFICATE") or None,
        headers=headers or None,
        # The Python SDK reads this variable as seconds; so do we, to agree with it.
        timeout=float(timeout) if _is_number(timeout) else None,
        compression=Compression(compression) if compression in ("gzip", "deflate") else None,
    )
    _log.info("tracing_configured", exporter="otlp", endpoint=redact_url(endpoint))
    return exporter


def _first(env: Mapping[str, str], suffix: str) -> str:
    """Return the traces-specific OTLP variable, else the generic one."""
    value = env.get(f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", "").strip()
    return value or env.get(f"OTEL_EXPORTER_OTLP_{suffix}", "").strip()


def _is_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False
