from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter.bridge import KafkaIngestBridge
from exporter.config import DimensionSettings, KafkaSettings, TopicBinding
from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ConnectorError
from exporter.events import CallbackBus, IngestEvent
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat, RestartPolicy, TaskInfo, TaskState, TaskSupervisor
from exporter.telemetry.metrics import IngestCollector
from tests.integration.conftest import wait_for
from tests.integration.kafka_instance import KafkaInstance

DIMENSIONS = (DimensionSettings(name="trades"),)
CreateTopic = Callable[..., Awaitable[str]]


@asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """Yield a started admin client and close it after."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@pytest.fixture
def bootstrap(service_env: dict[str, str]) -> str:
    """Return the shared broker's address."""
    return service_env["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
async def create_topic(bootstrap: str, unique: str) -> AsyncIterator[CreateTopic]:
    """Create uniquely named topics on the shared broker; delete them after the test."""
    created: list[str] = []

    async def create(suffix: str = "", partitions: int = 1, *, create: bool = True) -> str:
        name = f"test.bridge.{unique}{suffix}"
        if create:
            async with admin_client(bootstrap) as admin:
                await admin.create_topics([NewTopic(name, partitions, 1)])
            created.append(name)
        return name

    yield create
    if created:
        async with admin_client(bootstrap) as admin:
            await admin.delete_topics(created)


def make_bridge(
    bootstrap: str, topic: str, group: str, events: list[IngestEvent], **kwargs: Any
) -> KafkaIngestBridge:
    """Build a bridge that appends every delivered event to ``events``."""
    settings = KafkaSettings(
        bootstrap_servers=(bootstrap,),
        ingest_topics=(TopicBinding(dimension="trades", topic=topic),),
        consumer_group=group,
        client_id=f"test-bridge-{group}",
    )

    async def collect(event: IngestEvent) -> None:
        events.append(event)

    connector = KafkaConnector(settings, timeout=kwargs.pop("timeout", 2.0))
    options: dict[str, Any] = {"poll_timeout": 0.2, "liveness_interval": 1.0}
    return KafkaIngestBridge(
        settings,
        DIMENSIONS,
        CallbackBus(collect),
        deployment="local",
        connector=connector,
        **(options | kwargs),
    )


@asynccontextmanager
async def running(bridge: KafkaIngestBridge) -> AsyncIterator[asyncio.Task[None]]:
    """Run the bridge as a task until the block ends, then cancel it (graceful stop)."""
    ready: list[Heartbeat] = []
    task = asyncio.get_running_loop().create_task(
        bridge.run(Heartbeat(time.monotonic, ready.append))
    )
    try:
        await wait_for(lambda: ready or task.done(), timeout=30)
        if task.done():
            task.result()  # surface why it ended
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def produce(bootstrap: str, topic: str, items: list[tuple[int, bytes]]) -> None:
    """Send ``(partition, value)`` pairs in order, keyed by partition, and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, value in items:
            await producer.send_and_wait(topic, value, key=b"p%d" % partition, partition=partition)
    finally:
        await producer.stop()


def good(partition: int, seq: int) -> tuple[int, bytes]:
    """Return a record for ``partition`` carrying sequence number ``seq``."""
    return partition, json.dumps({"partition": partition, "seq": seq}).encode()


def sequences(events: list[IngestEvent]) -> dict[int, list[int]]:
    """Return the delivered sequence numbers per partition, in delivery order."""
    found: dict[int, list[int]] = {}
    for event in events:
        found.setdefault(event.partition, []).append(event.payload["seq"])
    return found


async def test_events_reach_the_bus_in_order_per_partition(
    bootstrap: str, create_topic: CreateTopic, unique: str
) -> None:
    """Keyed records of a 3-partition topic arrive complete and strictly ordered per partition."""
    topic = await create_topic(partitions=3)
    await produce(bootstrap, topic, [good(i % 3, i // 3) for i in range(60)])
    events: list[IngestEvent] = []
    async with running(make_bridge(bootstrap, topic, f"g-{unique}", events)):
        await produce(bootstrap, topic, [good(i % 3, 20 + i // 3) for i in range(60)])
        await wait_for(lambda: len(events) >= 120, timeout=20)
    assert sequences(events) == {p: list(range(40)) for p in range(3)}
    assert all(e.key == b"p%d" % e.partition and e.dimension == "trades" for e in events)
    assert all(abs(e.timestamp - time.time()) < 120 for e in events), "broker time in seconds"


async def test_committed_offsets_are_not_redelivered(
    bootstrap: str, create_topic: CreateTopic, unique: str
) -> None:
    """A new bridge in the same group receives exactly the records produced after the commit."""
    topic = await create_topic(partitions=2)
    group = f"g-{unique}"
    await produce(bootstrap, topic, [good(i % 2, i // 2) for i in range(20)])
    first: list[IngestEvent] = []
    bridge = make_bridge(bootstrap, topic, group, first)
    async with running(bridge):
        await wait_for(lambda: len(first) >= 20, timeout=20)
    commits = next(f for f in bridge.metric_families() if f.name == "ingest_bridge_commits")
    assert commits.samples[0].value >= 1
    second: list[IngestEvent] = []
    async with running(make_bridge(bootstrap, topic, group, second)):
        await produce(bootstrap, topic, [good(i % 2, 10 + i // 2) for i in range(7)])
        await wait_for(lambda: len(second) >= 7, timeout=20)
        # Not a wait: a redelivery is the absence of an end; give one room to show up.
        await asyncio.sleep(1.0)
    assert len(second) == 7
    assert sorted(e.payload["seq"] for e in second) == [10, 10, 11, 11, 12, 12, 13]


async def test_poison_message_is_skipped_counted_and_never_logged(
    bootstrap: str, create_topic: CreateTopic, unique: str
) -> None:
    """A non-JSON record between good ones is skipped as ``decode`` without logging its bytes."""
    topic = await create_topic()
    secret = f"poison-{unique}-payload"
    await produce(
        bootstrap,
        topic,
        [good(0, 0), (0, b"\xff" + secret.encode()), (0, secret.encode()), good(0, 1)],
    )
    events: list[IngestEvent] = []
    bridge = make_bridge(bootstrap, topic, f"g-{unique}", events)
    with capture_logs() as logs:
        async with running(bridge):
            await wait_for(lambda: len(events) >= 2, timeout=20)
            await produce(bootstrap, topic, [good(0, 2)])
            await wait_for(lambda: len(events) >= 3, timeout=20)
    assert [e.payload["seq"] for e in events] == [0, 1, 2]
    skipped = [e for e in logs if e["event"] == "bridge_message_skipped"]
    # Rate-limited per topic and reason: the first is logged, the counter below has both.
    assert [(e["offset"], e["reason"], e["topic"], e["suppressed"]) for e in skipped] == [
        (1, "decode", topic, 0),
    ]
    assert secret not in repr(logs)
    failed = next(f for f in bridge.metric_families() if f.name == "ingest_bridge_messages_failed")
    counts = {s.labels["reason"]: s.value for s in failed.samples}
    assert counts == {"decode": 2.0, "schema": 0.0, "delivery": 0.0}


async def test_missing_topic_fails_the_run_until_it_is_created(
    bootstrap: str, create_topic: CreateTopic, unique: str
) -> None:
    """A missing topic is logged by name and raised; once created, consumption starts."""
    topic = await create_topic(create=False)
    events: list[IngestEvent] = []
    bridge = make_bridge(bootstrap, topic, f"g-{unique}", events)
    with capture_logs() as logs, pytest.raises(ConnectorError) as caught:
        await bridge.run(Heartbeat(time.monotonic))
    assert caught.value.reason == "missing"
    missing = next(e for e in logs if e["event"] == "bridge_topic_missing")
    assert missing["topic"] == topic
    assert missing["log_level"] == "error"
    await create_topic()
    await produce(bootstrap, topic, [good(0, 0)])
    async with running(bridge):
        await wait_for(lambda: len(events) >= 1, timeout=20)


async def _committed(bootstrap: str, group: str, records: int) -> bool:
    """Tell whether ``group`` has committed offsets past ``records`` records in all."""
    async with admin_client(bootstrap) as admin:
        offsets = await admin.list_consumer_group_offsets(group)
    committed = sum(int(meta.offset) for meta in offsets.values())
    return committed >= records


def _ready(supervisor: TaskSupervisor, name: str) -> bool:
    info = supervisor.get(name)
    return info is not None and info.ready


async def test_broker_outage_restarts_the_bridge_with_backoff_and_loses_nothing(
    service_env: dict[str, str], unique: str
) -> None:
    """A killed broker fails the run, restarts back off, and every event arrives exactly once."""
    async with KafkaInstance(service_env["INGEST_KAFKA_JARS"]) as kafka:
        topic = f"test.bridge.outage.{unique}"
        async with admin_client(kafka.bootstrap) as admin:
            await admin.create_topics([NewTopic(topic, 2, 1)])
        events: list[IngestEvent] = []
        bridge = make_bridge(
            kafka.bootstrap,
            topic,
            f"g-{unique}",
            events,
            timeout=1.0,
            liveness_interval=0.5,
            session_timeout=6.0,
        )
        history: list[tuple[float, TaskInfo]] = []

        def record() -> None:
            history.extend((time.time(), i) for i in supervisor.describe() if i.name == "bridge")

        supervisor = TaskSupervisor(on_change=record)
        policy = RestartPolicy(backoff_initial=0.2, backoff_max=2.0, jitter=0.0)
        supervisor.create(bridge.run, name="bridge", restart=policy)
        try:
            assert await supervisor.wait_ready("bridge", timeout=30)
            await produce(kafka.bootstrap, topic, [good(i % 2, i // 2) for i in range(20)])
            await wait_for(lambda: len(events) >= 20, timeout=20)
            # The batch's commit is done before the broker dies.
            await wait_for(lambda: _committed(kafka.bootstrap, f"g-{unique}", 20), timeout=15)

            killed = time.time()
            await kafka.kill()
            await wait_for(lambda: _failures(history) >= 1, timeout=15)
            detected = _backoffs(history)[0][0] - killed
            await wait_for(lambda: _failures(history) >= 4, timeout=15)
            # What an SRE sees meanwhile: the restarts counter on /metrics.
            during_outage = _restarts_metric(supervisor)

            await kafka.start()
            restarted = time.time()
            await wait_for(lambda: _ready(supervisor, "bridge"), timeout=40)
            resumed = time.time() - restarted
            await produce(kafka.bootstrap, topic, [good(i % 2, 10 + i // 2) for i in range(20)])
            await wait_for(lambda: len(events) >= 40, timeout=30)
            # Not a wait: a duplicate is the absence of an end; give one room to show up.
            await asyncio.sleep(1.0)
        finally:
            await supervisor.cancel_all(timeout=15)

    backoffs = _backoffs(history)
    delays = [round(at - stamp, 2) for stamp, at in backoffs[:4]]
    print(f"detected after {detected:.2f}s; backoffs {delays}; ready {resumed:.1f}s after restart")
    assert detected < 3.0, "a dead broker is noticed within the liveness deadline"
    assert delays == sorted(delays), "backoff grows"
    assert delays[0] < delays[-1]
    restarts = [info.restarts for _, info in history]
    assert restarts == sorted(restarts)
    assert restarts[-1] >= 4
    assert during_outage >= 3
    assert len(events) == 40
    assert sequences(events) == {p: list(range(20)) for p in range(2)}
    assert len({(e.partition, e.offset) for e in events}) == 40, "exactly once"


def _backoffs(history: list[tuple[float, TaskInfo]]) -> list[tuple[float, float]]:
    """Return (published at, next_restart_at) of each distinct backoff, in order."""
    seen: dict[float, float] = {}
    for stamp, info in history:
        if info.state is TaskState.BACKOFF and info.next_restart_at is not None:
            seen.setdefault(info.next_restart_at, stamp)
    return [(stamp, at) for at, stamp in seen.items()]


def _restarts_metric(supervisor: TaskSupervisor) -> float:
    """Return the bridge's `ingest_supervisor_task_restarts_total` as the exporter renders it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(ExporterState(), tasks=supervisor.describe))
    value = registry.get_sample_value("ingest_supervisor_task_restarts_total", {"task": "bridge"})
    assert value is not None
    return value


def _failures(history: list[tuple[float, TaskInfo]]) -> int:
    """Return how many distinct backoffs the bridge went through."""
    return len(_backoffs(history))


async def test_a_group_with_other_members_is_refused_unless_sharing_is_allowed(
    bootstrap: str, create_topic: CreateTopic, unique: str
) -> None:
    """The bridge never joins a group a live consumer is in; it does once told to share."""
    topic = await create_topic(partitions=2)
    group = f"g-shared-{unique}"
    other = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await other.start()
    try:
        other.subscribe([topic])
        await other.getmany(timeout_ms=500)
        await wait_for(lambda: bool(other.assignment()), timeout=20)
        assignment = other.assignment()
        refused = make_bridge(bootstrap, topic, group, [])
        with capture_logs() as logs, pytest.raises(ConnectorError, match="1 other member"):
            await refused.run(Heartbeat(time.monotonic))
        assert "bridge_group_in_use" in [e["event"] for e in logs]
        assert other.assignment() == assignment
    finally:
        await other.stop()
