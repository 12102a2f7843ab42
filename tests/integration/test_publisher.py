"""The manifest publisher against the real Kafka broker (and a private one for an outage).

Nothing here covers ``KAFKA_MANIFEST_PUBLISH=false``: that switch means the daemon never
starts the publisher task, so there is no publisher behaviour to test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from structlog.testing import capture_logs

from exporter.config import IngestSettings, KafkaSettings, build_institutional_ingest_config
from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ConnectorError
from exporter.manifest import SupervisionView, build_manifest
from exporter.provisioner import InstitutionalIngestProvisioner
from exporter.publisher import ManifestPublisher
from exporter.supervisor import Heartbeat, RestartPolicy, TaskState, TaskSupervisor
from tests.integration.conftest import wait_for
from tests.integration.kafka_instance import KafkaInstance

from .net import free_port

Records = list[ConsumerRecord]


@pytest.fixture
def bootstrap(service_env: dict[str, str]) -> str:
    """Return the shared broker's bootstrap address."""
    return service_env["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """Return an admin client of the shared broker (the test's own, not the publisher's)."""
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await client.start()
    yield client
    await client.close()


@pytest.fixture
async def topic(admin: AIOKafkaAdminClient, unique: str) -> AsyncIterator[str]:
    """Return a topic name unique to the test; delete the topic afterwards."""
    name = f"test.manifest.{unique}"
    yield name
    if name in await admin.list_topics():
        await admin.delete_topics([name])


@pytest.fixture
async def kafka(bootstrap: str) -> AsyncIterator[KafkaConnector]:
    """Return a started connector of the shared broker."""
    connector = KafkaConnector(KafkaSettings(bootstrap_servers=(bootstrap,)), timeout=2.0)
    await connector.start()
    yield connector
    await connector.stop()


async def read(bootstrap: str, topic: str, *, count: int, timeout: float = 15.0) -> Records:
    """Read ``topic`` from the start like kafka-console-consumer (no group) until ``count``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: Records = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def publisher_for(
    kafka: KafkaConnector, topic: str, snapshot: Callable[[], dict[str, Any]], **options: Any
) -> ManifestPublisher:
    """Build a publisher of ``snapshot`` on ``topic`` (deployment ``eu-1`` by default)."""
    options.setdefault("deployment", "eu-1")
    options.setdefault("interval", 300.0)
    return ManifestPublisher(kafka, topic=topic, snapshot=snapshot, **options)


async def running(publisher: ManifestPublisher) -> asyncio.Task[None]:
    """Start ``publisher.run`` and return its task once its first document is acknowledged."""
    before = publisher.published
    task = asyncio.create_task(publisher.run(Heartbeat(asyncio.get_running_loop().time)))
    await wait_for(lambda: publisher.published > before or task.done(), timeout=20)
    if task.done():
        task.result()  # surface the failure
    return task


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a publisher task and wait for its cleanup."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_consumer_reads_the_services_manifest_keyed_by_deployment(
    settings_factory: Callable[..., IngestSettings], bootstrap: str, topic: str, unique: str
) -> None:
    """A plain consumer reads the bundle's manifest JSON with the deployment name as key."""
    name = f"dep-{unique}"
    settings = settings_factory(
        INGEST_DEPLOYMENT=name, KAFKA_MANIFEST_TOPIC=topic, KAFKA_MANIFEST_PUBLISH="true"
    )
    services = InstitutionalIngestProvisioner(settings).provision()
    await services.start(supervise=False)
    try:
        publisher = services.publisher
        assert publisher is not None
        assert publisher.topic == topic
        task = await running(publisher)
        await stop(task)
    finally:
        await services.stop()
    (record,) = await read(bootstrap, topic, count=1)
    assert record.key == name.encode("utf-8")
    assert dict(record.headers) == {"content-type": b"application/json"}
    assert record.value is not None
    doc = json.loads(record.value)
    assert doc["deployment"] == name
    # The redactor knows the configured passwords; the local stack's is "ingest", so every
    # "ingest" in the manifest is masked too (over-redaction by design, never a leak).
    assert doc["manifest"] == services.redactor.redact_mapping(services.managed_manifest())
    assert {c["kind"] for c in doc["manifest"]["connectors"]} == {"timescale", "redis", "kafka"}
    assert doc["failover"] is None
    published_at = datetime.fromisoformat(doc["published_at"])
    assert published_at.utcoffset() == timedelta(0)
    assert abs(published_at.timestamp() - time.time()) < 60


async def test_the_created_topic_is_compacted(
    kafka: KafkaConnector, admin: AIOKafkaAdminClient, topic: str
) -> None:
    """The publisher creates its missing topic with cleanup.policy=compact and one partition."""
    publisher = publisher_for(kafka, topic, lambda: {"manifest": {}, "failover": None})
    with capture_logs() as logs:
        await stop(await running(publisher))
    assert any(e["event"] == "manifest_topic_created" for e in logs)
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    (response,) = await admin.describe_configs([resource])
    entries = response.to_object()["resources"][0]["config_entries"]
    assert {e["config_names"]: e["config_value"] for e in entries} == {"cleanup.policy": "compact"}
    (described,) = await admin.describe_topics([topic])
    assert len(described["partitions"]) == 1
    assert len(described["partitions"][0]["replicas"]) == 1  # min(3, one broker)


async def test_a_restarted_run_reuses_the_compacted_topic_quietly(
    kafka: KafkaConnector, bootstrap: str, topic: str
) -> None:
    """A second run finds the compacted topic (no creation, no warning) and publishes again."""
    publisher = publisher_for(kafka, topic, lambda: {"manifest": {"n": 1}, "failover": None})
    await stop(await running(publisher))
    with capture_logs() as logs:
        await stop(await running(publisher))
    events = {e["event"] for e in logs}
    assert "manifest_topic_created" not in events
    assert "manifest_topic_not_compacted" not in events
    assert "manifest_topic_config_unknown" not in events
    records = await read(bootstrap, topic, count=2)
    assert [r.offset for r in records] == [0, 1]
    assert publisher.published == 2


async def test_a_snapshot_change_is_published_promptly(
    kafka: KafkaConnector, bootstrap: str, topic: str
) -> None:
    """Changing the snapshot produces a new message within one check interval."""
    current: dict[str, Any] = {"manifest": {"version": 1}, "failover": None}
    publisher = publisher_for(kafka, topic, lambda: current, check_interval=0.2)
    task = await running(publisher)
    try:
        changed_at = time.monotonic()
        current = {"manifest": {"version": 2}, "failover": {"enabled": True}}
        await wait_for(lambda: publisher.published >= 2, timeout=5)
        latency = time.monotonic() - changed_at
    finally:
        await stop(task)
    assert latency < 1.5
    records = await read(bootstrap, topic, count=2)
    docs = [json.loads(r.value or b"") for r in records]
    assert [d["manifest"]["version"] for d in docs] == [1, 2]
    assert docs[1]["failover"] == {"enabled": True}
    assert {r.key for r in records} == {b"eu-1"}


async def test_canary_credentials_never_appear_in_published_bytes(
    kafka: KafkaConnector, bootstrap: str, topic: str
) -> None:
    """Canary passwords in every credential setting are absent from the bytes on the topic."""
    token = uuid.uuid4().hex[:12]  # in every canary, and nowhere else
    canaries = {
        "timescale": f"pg@{token}:pw",  # '@' and ':' inside the userinfo password
        "sslpassword": f"ssl{token}key",
        "redis": f"redis{token}pw",
        "sasl": f"sasl{token}pw",
    }
    settings = build_institutional_ingest_config(
        environ={
            "TIMESCALEDB_URL": (
                f"postgresql://ingest:{canaries['timescale']}@127.0.0.1:55432/ingest"
                f"?sslmode=prefer&sslpassword={canaries['sslpassword']}"
            ),
            "REDIS_URL": f"redis://default:{canaries['redis']}@127.0.0.1:56379/0",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "svc-ingest",
            "KAFKA_SASL_PASSWORD": canaries["sasl"],
            "INGEST_DEPLOYMENT": "canary",
            "INGEST_DIMENSIONS": "trades",
            "TIMESCALE_FAILOVER_DRILL": "true",
        }
    )
    deployment = settings.deployment()
    # A supervision message that escaped the supervisor's redaction: only the publisher's
    # own net stands between it and the topic.
    leaked = f"connect failed: {deployment.timescale.url.get_secret_value()}"
    views = [SupervisionView(task="probe-loop:canary", state="backoff", restarts=1,
                             last_error_type="OSError", last_error_message=leaked)]  # fmt: skip
    redactor = InstitutionalIngestProvisioner(settings).redactor

    def snapshot() -> dict[str, Any]:
        manifest = build_manifest(settings, deployment, supervision={"timescale": views})
        drill = settings.failover_drill.model_dump(mode="json")
        return {"manifest": manifest.model_dump(mode="json"), "failover": drill}

    publisher = publisher_for(kafka, topic, snapshot, deployment="canary", redact=redactor)
    await stop(await running(publisher))
    (record,) = await read(bootstrap, topic, count=1)
    raw = (record.key or b"") + (record.value or b"")
    assert token.encode() not in raw
    for canary in canaries.values():
        assert canary.encode() not in raw
    doc = json.loads(record.value or b"")
    timescale = doc["manifest"]["connectors"][0]
    assert timescale["endpoint"].startswith("postgresql://ingest:***@127.0.0.1:55432/ingest?")
    assert "sslpassword=***" in timescale["endpoint"]
    assert "connect failed:" in timescale["supervision"][0]["last_error_message"]
    assert doc["failover"]["dimensions"] == ["trades"]


@pytest.mark.parametrize("target", ["blackhole", "refused"])
async def test_an_unreachable_broker_makes_run_raise_within_its_deadline(
    blackhole: int, target: str
) -> None:
    """With no broker to talk to, run raises a ConnectorError promptly instead of looping."""
    port = blackhole if target == "blackhole" else free_port()
    settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{port}",))
    connector = KafkaConnector(settings, timeout=1.0)
    await connector.start()
    publisher = publisher_for(connector, "never.created", lambda: {"manifest": {}}, deadline=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectorError) as caught:
            await publisher.run(Heartbeat(asyncio.get_running_loop().time))
    finally:
        await connector.stop()
    assert time.monotonic() - started < 5.0
    assert caught.value.reason in {"timeout", "refused", "error"}
    assert publisher.failures == 1
    assert publisher.published == 0


@pytest.mark.slow
async def test_a_broker_outage_fails_runs_until_the_broker_returns() -> None:
    """Stopping the broker makes runs fail and back off; after restart the manifest is resent."""
    broker = KafkaInstance()
    try:
        async with broker:
            await _outage_and_recovery(broker)
    finally:
        broker.close()


async def _outage_and_recovery(broker: KafkaInstance) -> None:
    settings = KafkaSettings(bootstrap_servers=(broker.bootstrap,))
    connector = KafkaConnector(settings, timeout=1.0)
    await connector.start()
    publisher = publisher_for(
        connector, "ops.manifest", lambda: {"manifest": {}}, interval=0.5, deadline=2.0
    )
    supervisor = TaskSupervisor()
    policy = RestartPolicy(backoff_initial=0.2, backoff_max=1.0, reset_after=5.0)
    supervisor.create(publisher.run, name="manifest:eu-1", restart=policy, hang_timeout=20)
    try:
        assert await supervisor.wait_ready("manifest:eu-1", timeout=30)
        await broker.stop()
        await wait_for(lambda: publisher.failures >= 2, timeout=30)
        published = publisher.published
        info = supervisor.get("manifest:eu-1")
        assert info is not None
        assert info.last_error_type == "ConnectorError"
        await broker.start()
        await wait_for(lambda: publisher.published > published, timeout=60)
        info = supervisor.get("manifest:eu-1")
        assert info is not None
        assert info.state is TaskState.RUNNING
    finally:
        assert await supervisor.cancel_all(timeout=10)
        await connector.stop()
