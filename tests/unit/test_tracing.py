from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from exporter import __version__
from exporter.config import IngestSettings, build_institutional_ingest_config, build_redactor
from exporter.probes.base import Check, FunctionProbe, Measurement, Probe, Reason, Status
from exporter.probes.runner import ProbeRunner
from exporter.redaction import MASK, Redactor
from exporter.telemetry.tracing import (
    SERVICE_NAME,
    RedactingSpanProcessor,
    configure_tracing,
    probe_span_attributes,
    shutdown_tracing,
    span_ids,
    tracer_for,
)
from tests.integration.otlp_receiver import OtlpReceiver

CANARY = "Canary-pw-7731"


def _settings(**env: str) -> IngestSettings:
    # A password no attribute value contains: the default dev one ("ingest") would be masked
    # inside every value that spells it, which is right but not what these tests look at.
    env.setdefault("TIMESCALEDB_URL", "postgresql://ingest:Xq7-vault@127.0.0.1:55432/ingest")
    return build_institutional_ingest_config(environ=env)


@pytest.fixture(autouse=True)
def _no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without OTEL_* variables: the SDK reads the process environment."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)


def _configure(
    monkeypatch: pytest.MonkeyPatch,
    env: Mapping[str, str],
    settings: IngestSettings | None = None,
    exporter: InMemorySpanExporter | None = None,
) -> TracerProvider | None:
    """Set the OTEL_* variables ``env`` and configure tracing with the settings' redactor."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    redactor = build_redactor(settings or _settings())
    return configure_tracing(redactor=redactor, exporter=exporter)


@pytest.fixture
def memory() -> InMemorySpanExporter:
    """Return an in-memory span exporter."""
    return InMemorySpanExporter()


@pytest.fixture
def provider(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TracerProvider]:
    """Return a provider exporting (redacted) to ``memory``; the canary is a configured secret."""
    settings = _settings(TIMESCALEDB_URL=f"postgresql://ingest:{CANARY}@db.internal:5433/metrics")
    made = _configure(monkeypatch, {}, settings, memory)
    assert made is not None
    yield made
    made.shutdown()


def _runner(provider: TracerProvider, settings: IngestSettings | None = None) -> ProbeRunner:
    deployment = (settings or _settings()).deployments[0]
    return ProbeRunner(
        default_timeout=1.0,
        tracer=tracer_for(provider),
        span_attributes=probe_span_attributes(deployment),
    )


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def _attrs(span: ReadableSpan) -> Mapping[str, object]:
    return dict(span.attributes or {})


async def test_cycle_span_parents_one_span_per_probe(
    provider: TracerProvider, memory: InMemorySpanExporter
) -> None:
    """A probe cycle is one `probe_cycle` span whose children are the `probe <connector>` spans."""
    probes: list[Probe] = [
        FunctionProbe("timescale", "connect", lambda: True),
        FunctionProbe("redis", "ping", lambda: True),
    ]
    report = await _runner(provider).run(probes, deployment="eu-1")
    spans = _by_name(memory.get_finished_spans())
    cycle = spans["probe_cycle"]
    assert set(spans) == {"probe_cycle", "probe timescale", "probe redis"}
    assert cycle.parent is None
    assert _attrs(cycle)["ingest.deployment"] == "eu-1"
    assert cycle.context is not None
    assert report.trace_id == trace.format_trace_id(cycle.context.trace_id)
    for name in ("probe timescale", "probe redis"):
        child = spans[name]
        assert child.parent is not None
        assert child.parent.span_id == cycle.context.span_id
        assert child.kind is trace.SpanKind.CLIENT
        assert _attrs(child)["ingest.check.status"] == "ok"
        assert "error.type" not in _attrs(child)
    span_of = {r.connector: r.span_id for r in report.results}
    redis_context = spans["probe redis"].context
    assert redis_context is not None
    assert span_of["redis"] == trace.format_span_id(redis_context.span_id)


async def test_builtin_probe_spans_carry_semantic_attributes(
    provider: TracerProvider, memory: InMemorySpanExporter
) -> None:
    """Spans name the server, port and database from parsed settings, never from the URL."""
    settings = _settings(
        TIMESCALEDB_URL=f"postgresql://ingest:{CANARY}@db.internal:5433/metrics",
        REDIS_URL=f"redis://:{CANARY}@cache.internal:6380/4",
        KAFKA_BOOTSTRAP_SERVERS="broker-1:9093,broker-2:9093",
    )
    probes: list[Probe] = [
        FunctionProbe(connector, "check", lambda: True) for connector in ("timescale", "redis")
    ]
    await _runner(provider, settings).run(probes, deployment="local")
    spans = _by_name(memory.get_finished_spans())
    assert (
        _attrs(spans["probe timescale"]).items()
        >= {
            "db.system.name": "postgresql",
            "db.namespace": "metrics",
            "server.address": "db.internal",
            "server.port": 5433,
            "ingest.connector": "timescale",
            "ingest.probe.name": "check",
        }.items()
    )
    assert (
        _attrs(spans["probe redis"]).items()
        >= {
            "db.system.name": "redis",
            "db.namespace": "4",
            "server.address": "cache.internal",
            "server.port": 6380,
        }.items()
    )


def test_kafka_attributes_use_the_first_bootstrap_server_and_a_probe_topic() -> None:
    """Kafka spans get messaging.system, the first broker, and the topic of a one-topic probe."""
    settings = _settings(KAFKA_BOOTSTRAP_SERVERS="[::1]:9093,broker-2:9094")
    attributes = probe_span_attributes(settings.deployments[0])

    class TopicProbe:
        connector = "kafka"
        name = "topic_lag"
        timeout = None

        def __init__(self, topics: tuple[str, ...], canary_topic: str | None = None) -> None:
            self.topics = topics
            self.canary_topic = canary_topic

        def __call__(self) -> bool:
            return True

    plain = attributes(FunctionProbe("kafka", "metadata", lambda: True))
    assert plain == {"messaging.system": "kafka", "server.address": "::1", "server.port": 9093}
    one = attributes(TopicProbe(("ingest.trades",), canary_topic="ingest.trades"))
    assert one["messaging.destination.name"] == "ingest.trades"
    assert "messaging.destination.name" not in attributes(TopicProbe(("a", "b")))
    assert "messaging.destination.name" not in attributes(TopicProbe((), canary_topic=None))
    assert attributes(FunctionProbe("operator", "x", lambda: True)) == {}


async def test_check_events_name_their_single_topic(
    provider: TracerProvider, memory: InMemorySpanExporter
) -> None:
    """A check whose measurements are about one topic names it on its span event."""

    def checks() -> list[Check]:
        per_topic = (
            Measurement("ingest_kafka_topic_partitions", 3.0, (("topic", "trades"),)),
            Measurement("ingest_kafka_under_replicated_partitions", 0.0, (("topic", "trades"),)),
        )
        return [Check("metadata"), Check("topics", measurements=per_topic)]

    await _runner(provider).run([FunctionProbe("kafka", "metadata", checks)], deployment="d")
    span = _by_name(memory.get_finished_spans())["probe kafka"]
    events = {str((e.attributes or {})["ingest.check.name"]): e for e in span.events}
    assert "messaging.destination.name" not in (events["metadata"].attributes or {})
    assert (events["topics"].attributes or {})["messaging.destination.name"] == "trades"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u:p@ss@h1:6432/db?sslmode=require",
            {"server.address": "h1", "server.port": 6432, "db.namespace": "db"},
        ),
        (
            "postgresql://u:secret@[2001:db8::5]/ingest",
            {"server.address": "2001:db8::5", "server.port": 5432, "db.namespace": "ingest"},
        ),
        (
            "postgresql://u:secret@/ingest?host=/run/postgresql&port=5499",
            {"server.address": "/run/postgresql", "server.port": 5499, "db.namespace": "ingest"},
        ),
        (
            "postgres://u:secret@host?dbname=warehouse",
            {"server.address": "host", "server.port": 5432, "db.namespace": "warehouse"},
        ),
    ],
)
def test_timescale_attributes_parse_libpq_urls(url: str, expected: dict[str, object]) -> None:
    """IPv6, socket and query-parameter URLs parse; a password with '@' never leaks in."""
    attributes = probe_span_attributes(_settings(TIMESCALEDB_URL=url).deployments[0])
    got = attributes(FunctionProbe("timescale", "connect", lambda: True))
    assert got == {"db.system.name": "postgresql", **expected}


@pytest.mark.parametrize(
    ("variable", "url", "system"),
    [
        ("TIMESCALEDB_URL", "postgresql://u:pw@h/db?sslpassword=tail@Leak-7731", "postgresql"),
        ("TIMESCALEDB_URL", "postgresql:///db?host=/tmp&password=pw@Leak-7731", "postgresql"),
        ("REDIS_URL", "redis://:pw@h:6379/0?password=pw@Leak-7731", "redis"),
        ("REDIS_URL", "unix:///run/r.sock?password=pw@Leak-7731", "redis"),
    ],
)
def test_an_at_sign_after_a_query_yields_no_target_attributes(
    variable: str, url: str, system: str
) -> None:
    """A URL whose last '@' may sit in a query value gives no host: it could be a secret's tail."""
    deployment = _settings(**{variable: url}).deployments[0]
    connector = "timescale" if system == "postgresql" else "redis"
    got = probe_span_attributes(deployment)(FunctionProbe(connector, "c", lambda: True))
    assert got == {"db.system.name": system}


def test_redis_attributes_and_masked_hosts() -> None:
    """Redis db comes from the path or `db=`; `mask_hosts` drops server.address everywhere."""
    socket = _settings(REDIS_URL="unix:///run/redis.sock?db=2").deployments[0]
    got = probe_span_attributes(socket)(FunctionProbe("redis", "ping", lambda: True))
    assert got == {
        "db.system.name": "redis",
        "db.namespace": "2",
        "server.address": "/run/redis.sock",
    }
    masked = _settings(INGEST_MASK_HOSTS="true").deployments[0]
    attributes = probe_span_attributes(masked)
    for connector in ("timescale", "redis", "kafka"):
        got = attributes(FunctionProbe(connector, "c", lambda: True))
        assert "server.address" not in got
        assert "server.port" in got


async def test_failing_probe_span_has_error_type_and_status(
    provider: TracerProvider, memory: InMemorySpanExporter
) -> None:
    """A down check sets error.type to its bounded reason and a short, redacted ERROR status."""

    def down() -> Check:
        return Check("ping", Status.DOWN, Reason.AUTH, f"AUTH {CANARY} rejected " + "x" * 300)

    def degraded() -> Check:
        return Check("lag", Status.DEGRADED, Reason.STALE, "behind")

    probes: list[Probe] = [
        FunctionProbe("redis", "ping", down),
        FunctionProbe("kafka", "lag", degraded),
    ]
    await _runner(provider).run(probes, deployment="local")
    spans = _by_name(memory.get_finished_spans())
    failed = spans["probe redis"]
    assert _attrs(failed)["error.type"] == "auth"
    assert _attrs(failed)["ingest.check.status"] == "down"
    assert failed.status.status_code is trace.StatusCode.ERROR
    description = failed.status.description or ""
    assert description.startswith("ping: auth")
    assert len(description) <= 120
    assert CANARY not in description
    slow = spans["probe kafka"]
    assert _attrs(slow)["ingest.check.status"] == "degraded"
    assert "error.type" not in _attrs(slow)
    assert slow.status.status_code is trace.StatusCode.UNSET
    assert [dict(e.attributes or {}) for e in slow.events] == [
        {
            "ingest.check.name": "lag",
            "ingest.check.status": "degraded",
            "ingest.check.reason": "stale",
        }
    ]


async def test_raising_probe_is_one_error_span(
    provider: TracerProvider, memory: InMemorySpanExporter
) -> None:
    """An exception becomes a classified error.type; no exception event or stack is recorded."""

    async def boom() -> None:
        raise ConnectionRefusedError(f"redis://:{CANARY}@h:1 refused")

    await _runner(provider).run([FunctionProbe("redis", "ping", boom)], deployment="local")
    span = _by_name(memory.get_finished_spans())["probe redis"]
    assert _attrs(span)["error.type"] == "refused"
    assert [e.name for e in span.events] == ["ingest.check"]


def test_redaction_processor_scrubs_every_string(
    provider: TracerProvider, memory: InMemorySpanExporter
) -> None:
    """A canary planted in attributes, events, links and the status description is removed."""
    tracer = tracer_for(provider)
    with tracer.start_as_current_span("other") as other:
        pass
    link = trace.Link(other.get_span_context(), {"note": f"dsn postgresql://u:{CANARY}@h/db"})
    with tracer.start_as_current_span(f"span {CANARY}", links=[link]) as span:
        span.set_attribute("note", f"connecting with {CANARY}")
        span.set_attribute("db.password", "anything")
        span.set_attribute("list", [f"x {CANARY}", "fine"])
        span.set_attribute("count", 3)
        span.add_event("retry", {"url": f"redis://:{CANARY}@h:6379/0"})
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"password={CANARY}"))
    exported = _by_name(memory.get_finished_spans())[f"span {MASK}"]
    text = repr(
        (
            exported.name,
            dict(exported.attributes or {}),
            [(e.name, dict(e.attributes or {})) for e in exported.events],
            [dict(link.attributes or {}) for link in exported.links],
            exported.status.description,
        )
    )
    assert CANARY not in text
    assert _attrs(exported)["db.password"] == MASK
    assert _attrs(exported)["count"] == 3
    assert _attrs(exported)["list"] == (f"x {MASK}", "fine")
    assert exported.status.description == f"password={MASK}"
    assert exported.context == span.get_span_context()


def test_resource_defaults_and_environment_overrides(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """service.name defaults to ingest-exporter; OTEL_RESOURCE_ATTRIBUTES and SERVICE_NAME win."""
    settings = _settings()
    plain = _configure(monkeypatch, {}, settings, memory)
    assert plain is not None
    assert plain.resource.attributes["service.name"] == SERVICE_NAME
    assert plain.resource.attributes["service.version"] == __version__
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,deployment.environment=prod%20eu",
        "OTEL_SERVICE_NAME": "edge-exporter",
    }
    custom = _configure(monkeypatch, env, settings, memory)
    assert custom is not None
    assert custom.resource.attributes["service.name"] == "edge-exporter"
    assert custom.resource.attributes["deployment.environment"] == "prod eu"
    plain.shutdown()
    custom.shutdown()


def test_resource_secrets_are_redacted(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential in OTEL_RESOURCE_ATTRIBUTES never reaches the exporter."""
    env = {"OTEL_RESOURCE_ATTRIBUTES": f"source.url=postgresql://u:{CANARY}@h/db"}
    made = _configure(monkeypatch, env, exporter=memory)
    assert made is not None
    with tracer_for(made).start_as_current_span("s"):
        pass
    (span,) = memory.get_finished_spans()
    assert span.resource.attributes["source.url"] == f"postgresql://u:{MASK}@h/db"
    made.shutdown()


async def test_sdk_disabled_gives_no_provider_and_no_trace_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_SDK_DISABLED=true: no provider, a no-op tracer, reports without trace ids."""
    env = {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    made = _configure(monkeypatch, env)
    assert made is None
    tracer = tracer_for(made)
    assert isinstance(tracer, trace.NoOpTracer)
    runner = ProbeRunner(default_timeout=1.0, tracer=tracer)
    report = await runner.run([FunctionProbe("redis", "ping", lambda: True)], deployment="d")
    assert report.trace_id is None
    assert report.results[0].span_id is None
    with tracer.start_as_current_span("x") as span:
        assert span_ids(span) == (None, None)


def test_no_endpoint_creates_spans_but_no_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no OTLP endpoint configured spans still get ids, but no processor exports them."""
    made = _configure(monkeypatch, {})
    assert made is not None
    # The SDK has no public view of its processors; an empty list is the whole point here.
    assert made._active_span_processor._span_processors == ()
    with tracer_for(made).start_as_current_span("s") as span:
        trace_id, span_id = span_ids(span)
    assert trace_id is not None
    assert len(trace_id) == 32
    assert span_id is not None
    made.shutdown()


@pytest.mark.parametrize(
    ("variable", "suffix"),
    [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
)
def test_otlp_endpoint_variables_export_over_http(
    variable: str, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The traces endpoint is used as is; the base endpoint gets /v1/traces appended."""
    with OtlpReceiver() as receiver:
        base = receiver.endpoint.removesuffix("/v1/traces")
        monkeypatch.setenv(variable, base + suffix)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-token={CANARY}x")
        redactor = build_redactor(_settings())
        made = configure_tracing(redactor=redactor)
        assert made is not None
        with tracer_for(made).start_as_current_span("exported") as span:
            span.set_attribute("echo", f"header {CANARY}x")
        made.shutdown()
        (received,) = receiver.spans()
    assert f"{CANARY}x" in redactor.secrets
    assert [h["x-token"] for h in receiver.headers()] == [f"{CANARY}x"]
    assert received.name == "exported"
    assert received.attributes["echo"] == f"header {MASK}"
    assert received.span_id == trace.format_span_id(span.get_span_context().span_id)
    assert received.resource["service.name"] == SERVICE_NAME


@pytest.mark.parametrize(("arg", "expected"), [("nan", 1.0), ("x", 1.0), ("2", 1.0), ("-1", 0.0)])
def test_a_bad_sampler_ratio_falls_back_instead_of_failing(
    arg: str, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unparsable or out-of-range OTEL_TRACES_SAMPLER_ARG never stops the exporter starting."""
    env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": arg}
    made = _configure(monkeypatch, env)
    assert made is not None
    assert made.sampler.get_description() == f"TraceIdRatioBased{{{expected}}}"
    made.shutdown()


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_SAMPLER": "always_off"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_exporter_none_sampler_off_and_grpc_send_nothing(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_EXPORTER=none, an always_off sampler or a gRPC protocol export nothing."""
    with OtlpReceiver() as receiver:
        made = _configure(
            monkeypatch, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint, **env}
        )
        assert made is not None
        with tracer_for(made).start_as_current_span("dropped"):
            pass
        made.shutdown()
        assert receiver.spans() == []


async def test_shutdown_is_bounded_even_when_the_exporter_hangs() -> None:
    """shutdown_tracing returns after its timeout although the SDK's shutdown is stuck."""
    release = threading.Event()

    class Stuck(SpanProcessor):
        def shutdown(self) -> None:
            release.wait(10)

    made = TracerProvider(shutdown_on_exit=False)
    made.add_span_processor(Stuck())
    t0 = time.perf_counter()
    assert await shutdown_tracing(made, timeout=0.2) is False
    assert time.perf_counter() - t0 < 1.0
    release.set()
    assert await shutdown_tracing(None, timeout=0.1) is True
    healthy = TracerProvider(shutdown_on_exit=False)
    assert await shutdown_tracing(healthy, timeout=2.0) is True
    # A yield, not a wait: the released shutdown's callback may still be queued for this loop.
    await asyncio.sleep(0)


def test_redacting_processor_passes_flush_and_shutdown_through(
    memory: InMemorySpanExporter,
) -> None:
    """The wrapper forwards force_flush and shutdown to the processor it wraps."""
    calls: list[str] = []

    class Recorder(SpanProcessor):
        def force_flush(self, timeout_millis: int = 30000) -> bool:
            calls.append(f"flush {timeout_millis}")
            return True

        def shutdown(self) -> None:
            calls.append("shutdown")

    wrapper = RedactingSpanProcessor(Recorder(), Redactor())
    assert wrapper.force_flush(50) is True
    wrapper.shutdown()
    assert calls == ["flush 50", "shutdown"]


def test_attribute_keys_survive_a_weak_known_secret(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the dev password "ingest" known, values spelling it are masked but keys are kept."""
    settings = _settings(TIMESCALEDB_URL="postgresql://ingest:ingest@127.0.0.1:55432/ingest")
    made = _configure(monkeypatch, {}, settings, memory)
    assert made is not None
    with tracer_for(made).start_as_current_span("s") as span:
        span.set_attribute("ingest.deployment", "ingest-eu")
    (exported,) = memory.get_finished_spans()
    assert _attrs(exported) == {"ingest.deployment": f"{MASK}-eu"}
    made.shutdown()


def _batch_and_exporter(provider: TracerProvider) -> tuple[Any, Any]:
    """Return the one batch processor behind the redacting wrapper, and its OTLP exporter."""
    # The SDK has no public view of its processors; these are the objects the variables set.
    (wrapper,) = provider._active_span_processor._span_processors
    assert isinstance(wrapper, RedactingSpanProcessor)
    batch = wrapper._inner
    assert isinstance(batch, BatchSpanProcessor)
    return batch._batch_processor, batch.span_exporter


@pytest.mark.parametrize(
    ("sampler", "arg", "description"),
    [
        ("always_off", "", "AlwaysOffSampler"),
        ("traceidratio", "0.25", "TraceIdRatioBased{0.25}"),
        ("parentbased_traceidratio", "0.5", "ParentBased{root:TraceIdRatioBased{0.5},"),
        ("parentbased_traceidratio", "-3", "ParentBased{root:TraceIdRatioBased{0.0},"),
        ("", "", "ParentBased{root:AlwaysOnSampler,"),
    ],
)
def test_the_sdk_reads_the_sampler_variables(
    sampler: str, arg: str, description: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_SAMPLER and _ARG pick the provider's sampler (default parent-based on)."""
    env = {"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg}
    made = _configure(monkeypatch, {name: value for name, value in env.items() if value})
    assert made is not None
    assert made.sampler.get_description().startswith(description)
    made.shutdown()


def test_the_sdk_reads_the_batch_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_BSP_* set the batch processor's queue, delay, batch size and export timeout."""
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces",
        "OTEL_BSP_MAX_QUEUE_SIZE": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "250",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "30",
        "OTEL_BSP_EXPORT_TIMEOUT": "4000",
    }
    made = _configure(monkeypatch, env)
    assert made is not None
    batch, _ = _batch_and_exporter(made)
    assert batch._max_queue_size == 300
    assert batch._schedule_delay_millis == 250
    assert batch._max_export_batch_size == 30
    assert batch._export_timeout_millis == 4000
    made.shutdown()


def test_refused_batch_variables_give_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch variable the SDK refuses (0) gives the defaults and a warning, not a crash."""
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces",
        "OTEL_BSP_MAX_QUEUE_SIZE": "0",
    }
    with capture_logs() as logs:
        made = _configure(monkeypatch, env)
    assert made is not None
    batch, _ = _batch_and_exporter(made)
    assert batch._max_queue_size == 2048
    assert batch._schedule_delay_millis == 5000
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "tracing_batch_options_invalid"
    ]
    made.shutdown()


def test_the_sdk_reads_the_otlp_exporter_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """OTEL_EXPORTER_OTLP_* (traces-specific first) set endpoint, headers, TLS, timeout, gzip."""
    ca, key, cert = (tmp_path / name for name in ("ca.pem", "client.key", "client.pem"))
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=eu,x-token=generic",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"x-token={CANARY}",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca),
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": str(key),
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": str(cert),
    }
    made = _configure(monkeypatch, env)
    assert made is not None
    _, exporter = _batch_and_exporter(made)
    client = exporter._client
    assert client._endpoint == "http://collector.example:4318/v1/traces"
    assert client._headers["x-token"] == CANARY
    assert "x-tenant" not in client._headers  # the traces variable replaces the generic one
    assert client._timeout == 7.0
    assert client._headers["Content-Encoding"] == "gzip"
    session = client._transport._session
    assert session.verify == str(ca)
    assert session.cert == (str(cert), str(key))
    made.shutdown()


def test_the_secrets_of_the_otlp_variables_are_known_to_the_redactor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Header values (raw and decoded) and the endpoint's password are registered secrets."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Basic%20Zm9vOmJhcg==")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://otel:{CANARY}@collector:4318")
    secrets = build_redactor(_settings()).secrets
    assert {"Basic%20Zm9vOmJhcg==", "Basic Zm9vOmJhcg==", CANARY} <= secrets


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_HEADERS", f"authorization: Bearer {CANARY}"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f'x-tenant=eu,x-token="{CANARY}"'),
        ("OTEL_RESOURCE_ATTRIBUTES", f"team=ingest,{CANARY}"),
    ],
)
def test_a_malformed_otel_variable_is_never_logged_verbatim(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Leak 5: the SDK logged a malformed header verbatim; we log a redacted line instead."""
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces", variable: value}
    with caplog.at_level(logging.DEBUG), capture_logs() as logs:
        made = _configure(monkeypatch, env)
    assert made is not None
    assert not [r for r in caplog.records if CANARY in r.getMessage()]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["variable"]) for e in warnings] == [
        ("tracing_variable_malformed", variable)
    ]
    assert CANARY not in repr(logs)
    made.shutdown()
