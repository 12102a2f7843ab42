"""The services bundle on the real stack: delivery, commits, giving up visibly, no leaks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from exporter.config import IngestSettings
from exporter.errors import ExporterError
from exporter.events import AsyncQueueBus, IngestEvent
from exporter.provisioner import InstitutionalIngestProvisioner
from exporter.redaction import Redactor
from exporter.state import ExporterState
from exporter.supervisor import TaskState, TaskSupervisor
from exporter.telemetry.logs import configure_logging

from .conftest import running_daemon, sample, scrape, wait_for


@pytest.fixture
async def topic(service_env: dict[str, str], unique: str) -> AsyncIterator[str]:
    """Create a 2-partition topic on the shared broker; delete it after the test."""
    name = f"test.services.{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for seq in range(first, first + count):
            value = json.dumps({"seq": seq}).encode()
            await producer.send_and_wait(topic, value, partition=seq % 2)
    finally:
        await producer.stop()


async def _drain(bus: AsyncQueueBus, count: int) -> list[IngestEvent]:
    events: list[IngestEvent] = []
    async with asyncio.timeout(30):
        while len(events) < count:
            events.append(await bus.get())
    return events


async def test_bundle_delivers_and_stop_commits_so_nothing_is_redelivered(
    settings_factory: Callable[..., IngestSettings],
    service_env: dict[str, str],
    topic: str,
    unique: str,
) -> None:
    """Events reach the given bus; after stop() a new bundle in the group gets only new ones."""
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    settings = settings_factory(
        INGEST_DIMENSIONS="intraday_trades",
        KAFKA_INGEST_TOPICS=f"intraday_trades:{topic}",
        KAFKA_INGEST_CONSUMER_GROUP=f"test-services-{unique}",
        REDIS_CACHE_STRATEGY="disabled",
    )
    provisioner = InstitutionalIngestProvisioner(settings)
    await _produce(bootstrap, topic, 0, 10)

    first_bus = AsyncQueueBus(maxsize=100)
    services = provisioner.provision(event_bus=first_bus, supervisor=TaskSupervisor())
    await services.start()
    first = await _drain(first_bus, 10)
    await services.stop()
    await services.stop()  # idempotent
    assert sorted(json.loads(json.dumps(e.payload))["seq"] for e in first) == list(range(10))
    assert {e.dimension for e in first} == {"intraday_trades"}

    await _produce(bootstrap, topic, 10, 4)
    second_bus = AsyncQueueBus(maxsize=100)
    again = provisioner.provision(event_bus=second_bus, supervisor=TaskSupervisor())
    await again.start()
    try:
        second = await _drain(second_bus, 4)
        # Not a wait: a redelivery is the absence of an end; give one room to show up.
        await asyncio.sleep(1.0)  # anything redelivered would arrive now
        assert second_bus.qsize() == 0
    finally:
        await again.stop()
    assert sorted(e.payload["seq"] for e in second) == [10, 11, 12, 13]


async def test_a_job_past_its_restart_limit_is_failed_everywhere(
    settings_factory: Callable[..., IngestSettings], unique: str
) -> None:
    """A bridge that keeps crashing ends `failed`: describe(), manifest and /metrics agree."""
    settings = settings_factory(
        INGEST_DIMENSIONS="intraday_trades",
        KAFKA_INGEST_TOPICS=f"intraday_trades:test.never.created.{unique}",
        KAFKA_INGEST_CONSUMER_GROUP=f"test-services-{unique}",
        INGEST_TASK_MAX_RESTARTS="2",
        INGEST_TASK_BACKOFF_INITIAL_SECONDS="0.1",
        INGEST_TASK_BACKOFF_MAX_SECONDS="0.2",
    )
    task = "kafka-bridge:local"
    async with running_daemon(settings) as (daemon, url):
        await wait_for(
            lambda: (
                (info := daemon.supervisor.get(task)) is not None and info.state is TaskState.FAILED
            ),
            timeout=30,
        )
        info = daemon.supervisor.get(task)
        assert info is not None
        assert info.restarts == 2
        assert info.last_error_type == "ConnectorError"
        kafka = next(c for c in daemon.manifests()[0]["connectors"] if c["name"] == "kafka")
        assert kafka["supervised"] is False
        assert any(v["state"] == "failed" for v in kafka["supervision"])
        text = await scrape(url)
        assert sample(text, "ingest_supervisor_task_up", task=task) == 0
        assert sample(text, "ingest_supervisor_task_restarts_total", task=task) == 2
        # The probe loop is never given up on and keeps running.
        assert sample(text, "ingest_supervisor_task_up", task="probe-loop:local") == 1


CANARIES = {
    "timescale_password": "Cn1@pa:ss/wd",
    "timescale_query": "Cn2tokQ",
    "redis_password": "Cn3-redis-pw",
    "sasl_user": "Cn4-sasl-user",
    "sasl_password": "Cn5-sasl-pw",
}


def _forms(value: str) -> set[str]:
    return {value, quote(value, safe=""), quote(value)}


async def _read_manifest(bootstrap: str, topic: str) -> bytes:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            record = await consumer.getone()
        key: bytes = record.key or b""
        value: bytes = record.value or b""
        return key + b"\n" + value
    finally:
        await consumer.stop()


async def test_canary_credentials_reach_no_output(
    settings_factory: Callable[..., IngestSettings],
    service_env: dict[str, str],
    unique: str,
    tmp_path: Path,
) -> None:
    """Canaries in every credential position appear in no manifest, metric, message or log."""
    password = quote(CANARIES["timescale_password"], safe="")
    timescale = (
        f"postgresql://ingest:{password}@127.0.0.1:55432/ingest"
        f"?sslpassword={CANARIES['timescale_query']}&application_name=canary"
    )
    manifest_topic = f"test.services.manifest.{unique}"
    # SASL settings are only valid with a SASL protocol, which the local broker does not
    # speak: a second deployment carries them (its Kafka fails, its outputs are checked too).
    config = tmp_path / "two.yaml"
    sasl = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": CANARIES["sasl_user"],
        "sasl_password": CANARIES["sasl_password"],
    }
    deployments = [{"name": "local"}, {"name": "sasl", "kafka": sasl}]
    config.write_text(json.dumps({"deployments": deployments}), encoding="utf-8")
    settings = settings_factory(
        config,
        TIMESCALEDB_URL=timescale,
        REDIS_URL=f"redis://default:{CANARIES['redis_password']}@127.0.0.1:56379/0",
        KAFKA_MANIFEST_TOPIC=manifest_topic,
        KAFKA_MANIFEST_PUBLISH="true",
    )
    stream = io.StringIO()
    configure_logging(
        level="debug", fmt="json", redactor=Redactor(settings.secret_values()), stream=stream
    )
    try:
        async with running_daemon(settings) as (daemon, url):
            await wait_for(lambda: daemon.state.ready, timeout=15)
            report = daemon.state.reports["local"]
            assert not report.connector_up("timescale")  # wrong password: auth failure
            # Redis 7's password-less default user accepts any AUTH: the canary is still sent.
            outputs = [await scrape(url)]
            async with aiohttp.ClientSession() as session:
                for path in ("/api/v1/manifest", "/api/v1/connectivity", "/api/v1/failover"):
                    async with session.get(url + path) as response:
                        outputs.append(await response.text())
            published = await _read_manifest(service_env["KAFKA_BOOTSTRAP_SERVERS"], manifest_topic)
            outputs.append(published.decode())
            assert b'"deployment"' in published
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        admin = AIOKafkaAdminClient(bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"])
        await admin.start()
        try:
            await admin.delete_topics([manifest_topic])
        finally:
            await admin.close()
    logs = stream.getvalue()
    assert '"probe_completed"' in logs
    assert '"reason": "auth"' in logs
    outputs.append(logs)
    for name, canary in CANARIES.items():
        for form in _forms(canary):
            for index, text in enumerate(outputs):
                assert form not in text, f"{name} leaked into output #{index}"


async def test_state_records_only_what_a_cycle_reported(
    settings_factory: Callable[..., IngestSettings],
) -> None:
    """A bundle started without supervision probes on demand and leaves the state empty."""
    settings = settings_factory(REDIS_CACHE_STRATEGY="disabled")
    state = ExporterState()
    services = InstitutionalIngestProvisioner(settings).provision(state=state)
    await services.start(supervise=False)
    try:
        report = await services.connectivity_report()
    finally:
        await services.stop()
    assert report.connector_up("redis")
    assert report.connector_up("kafka")
    assert state.reports == {}


async def test_start_and_stop_are_idempotent_and_a_stopped_bundle_stays_stopped(
    settings_factory: Callable[..., IngestSettings],
) -> None:
    """A second start() or stop() is a no-op; start() after stop() refuses to half-work."""
    supervisor = TaskSupervisor()
    settings = settings_factory(REDIS_CACHE_STRATEGY="disabled")
    services = InstitutionalIngestProvisioner(settings).provision(supervisor=supervisor)
    await services.start()
    await services.start()
    assert [info.name for info in supervisor.describe()] == ["probe-loop:local"]
    await services.stop()
    await services.stop()
    info = supervisor.get("probe-loop:local")
    assert info is not None
    assert info.state is TaskState.CANCELLED
    # Its probe threads are released: a restart would leave synchronous probes failing.
    with pytest.raises(ExporterError, match="provision anew"):
        await services.start()


async def test_stop_is_bounded_while_every_dependency_is_black_holed(
    settings_factory: Callable[..., IngestSettings], blackhole: int
) -> None:
    """With connections hanging on every service, stop(timeout) returns within its timeout."""
    settings = settings_factory(
        TIMESCALEDB_URL=f"postgresql://ingest:ingest@127.0.0.1:{blackhole}/ingest",
        REDIS_URL=f"redis://127.0.0.1:{blackhole}/0",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{blackhole}",
        INGEST_PROBE_TIMEOUT_SECONDS="1",
    )
    services = InstitutionalIngestProvisioner(settings).provision(supervisor=TaskSupervisor())
    await services.start()
    # Not a wait: nothing tells that every probe is blocked mid-connection, and the bound
    # only means something once they are.
    await asyncio.sleep(0.5)  # the first cycle is now waiting on the black hole
    t0 = time.monotonic()
    await services.stop(timeout=1.0)
    assert time.monotonic() - t0 < 1.5
