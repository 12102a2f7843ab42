from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from exporter.config import IngestSettings
from tests.integration.conftest import running_daemon, wait_for
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

CANARY = "Canary-pw-7731"
_OPENMETRICS = "application/openmetrics-text; version=1.0.0"
_STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


def leaky_probe() -> bool:
    """Fail with the canary password in the exception text (an operator probe)."""
    raise ConnectionError(f"login refused for ingest with password {CANARY}")


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """Run an OTLP/HTTP receiver and clear every OTEL_* variable the test did not set."""
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    ):
        monkeypatch.delenv(name, raising=False)
    # Export every 100 ms instead of every 5 s, so the test does not wait on the batcher.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    with OtlpReceiver() as server:
        yield server


def _wrong_password_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{CANARY}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _openmetrics(base_url: str) -> str:
    headers = {"Accept": _OPENMETRICS}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/metrics", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        return await response.text()


def _exemplar_trace_ids(text: str) -> set[str]:
    ids: set[str] = set()
    # The parser is untyped; the samples' shape is pinned by prometheus_client's own tests.
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            if sample.name == "ingest_probe_duration_seconds_bucket" and sample.exemplar:
                ids.add(sample.exemplar.labels["trace_id"])
    return ids


def _one(spans: list[ReceivedSpan], predicate: Callable[[ReceivedSpan], bool]) -> ReceivedSpan:
    matching = [s for s in spans if predicate(s)]
    assert matching, "no span matched"
    return matching[-1]


async def test_daemon_exports_redacted_probe_spans_to_an_otlp_receiver(
    receiver: OtlpReceiver,
    settings_factory: Callable[..., IngestSettings],
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    unique: str,
) -> None:
    """Cycle and probe spans reach a real OTLP receiver with semantic attributes, no secret."""
    service = f"ingest-exporter-test-{unique}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    # The SDK reads these itself; what arrives at the receiver proves it (a header value is a
    # registered secret, so it must be one that no span carries).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=tenant-under-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"deployment.environment=test%20{unique}")
    timescale = urlsplit(service_env["TIMESCALEDB_URL"])
    redis = urlsplit(service_env["REDIS_URL"])
    kafka_host, _, kafka_port = service_env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rpartition(":")
    settings = settings_factory(
        TIMESCALEDB_URL=_wrong_password_url(service_env["TIMESCALEDB_URL"]),
        INGEST_OPERATOR_PROBES="leak=tests.integration.test_tracing:leaky_probe",
        # Never created (auto creation is off): the topic checks report it missing, by name.
        INGEST_DIMENSIONS="ticks",
        KAFKA_INGEST_TOPICS=f"ticks:trace-{unique}",
    )
    with capture_logs() as logs:
        async with running_daemon(settings) as (daemon, base_url):
            await wait_for(lambda: daemon.state.cycles["local"] >= 2, timeout=60)
            exemplars = _exemplar_trace_ids(await _openmetrics(base_url))
            await wait_for(lambda: exemplars <= {s.trace_id for s in receiver.spans()}, timeout=20)
    spans = receiver.spans()
    assert receiver.bad_requests == 0

    cycles = [s for s in spans if s.name == "probe_cycle"]
    assert cycles
    assert all(s.attributes["ingest.deployment"] == "local" for s in cycles)
    assert all(s.parent_span_id == "" for s in cycles)
    assert exemplars, "the OpenMetrics scrape carried no exemplar"
    assert exemplars <= {s.trace_id for s in cycles}
    cycle_ids = {(s.trace_id, s.span_id) for s in cycles}
    probes = [s for s in spans if s.name.startswith("probe ")]
    assert probes
    assert all((s.trace_id, s.parent_span_id) in cycle_ids for s in probes)

    pg = _one(probes, lambda s: s.name == "probe timescale")
    assert pg.attributes["db.system.name"] == "postgresql"
    assert pg.attributes["db.namespace"] == timescale.path.lstrip("/")
    assert pg.attributes["server.address"] == timescale.hostname
    assert pg.attributes["server.port"] == timescale.port
    assert pg.attributes["error.type"] == "auth"
    assert pg.attributes["ingest.check.status"] == "down"
    assert pg.status_code == _STATUS_ERROR
    assert pg.status_message.startswith("connect: auth")

    rd = _one(probes, lambda s: s.name == "probe redis")
    assert rd.attributes["db.system.name"] == "redis"
    assert rd.attributes["db.namespace"] == (redis.path.lstrip("/") or "0")
    assert rd.attributes["server.port"] == redis.port
    assert rd.attributes["ingest.check.status"] == "ok"
    assert "error.type" not in rd.attributes

    kf = _one(probes, lambda s: s.name == "probe kafka")
    assert kf.attributes["messaging.system"] == "kafka"
    assert kf.attributes["server.address"] == kafka_host
    assert kf.attributes["server.port"] == int(kafka_port)
    assert kf.attributes["messaging.destination.name"] == f"trace-{unique}"
    topic_events = [a for name, a in kf.events if a.get("ingest.check.name") == "topics"]
    assert topic_events
    assert topic_events[0]["messaging.destination.name"] == f"trace-{unique}"

    leak = _one(probes, lambda s: s.name == "probe operator")
    assert leak.status_code == _STATUS_ERROR
    assert "error.type" in leak.attributes
    assert "***" in leak.status_message

    assert all(s.resource["service.name"] == service for s in spans)
    assert all(s.resource["deployment.environment"] == f"test {unique}" for s in spans)
    assert {(h["x-tenant"], h["content-encoding"]) for h in receiver.headers()} == {
        ("tenant-under-test", "gzip")
    }
    assert all("service.version" in s.resource for s in spans)
    for span in spans:
        assert not [text for text in span.strings() if CANARY in text], span.name
    assert not [body for body in receiver.bodies() if CANARY.encode() in body]

    completed = [e for e in logs if e["event"] == "probe_completed"]
    by_id = {s.span_id: s for s in probes}
    assert completed
    for event in completed:
        match = by_id.get(event["span_id"])
        if match is None:
            continue  # the last cycle's spans may have been cut off by the stop
        assert match.trace_id == event["trace_id"]
        assert match.attributes["ingest.connector"] == event["connector"]
    assert sum(e["span_id"] in by_id for e in completed) >= 4


async def test_no_endpoint_exports_nothing_but_keeps_trace_ids(
    receiver: OtlpReceiver,
    settings_factory: Callable[..., IngestSettings],
) -> None:
    """Without an OTLP endpoint nothing is sent anywhere, yet exemplars still carry trace ids."""
    async with running_daemon(settings_factory()) as (daemon, base_url):
        await wait_for(lambda: daemon.state.cycles["local"] >= 1, timeout=60)
        report = daemon.state.reports["local"]
        exemplars = _exemplar_trace_ids(await _openmetrics(base_url))
    assert report.trace_id is not None
    assert len(report.trace_id) == 32
    assert report.trace_id in exemplars
    assert receiver.spans() == []


async def test_sdk_disabled_means_no_trace_ids(
    receiver: OtlpReceiver,
    settings_factory: Callable[..., IngestSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_SDK_DISABLED=true wins over a configured endpoint: no spans, no trace ids."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    async with running_daemon(settings_factory()) as (daemon, base_url):
        assert daemon.tracer_provider is None
        await wait_for(lambda: daemon.state.cycles["local"] >= 1, timeout=60)
        exemplars = _exemplar_trace_ids(await _openmetrics(base_url))
        report = daemon.state.reports["local"]
    assert report.trace_id is None
    assert all(r.span_id is None for r in report.results)
    assert exemplars == set()
    assert receiver.spans() == []
