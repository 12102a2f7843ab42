"""Read-only lag of named groups on the shared broker: a real consumer is never disturbed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from exporter.config import IngestSettings, KafkaLagSettings, KafkaSettings
from exporter.connectors.kafka import KafkaConnector
from exporter.probes.base import ProbeResult, Reason, Status
from exporter.probes.kafka import KafkaProbe
from exporter.probes.runner import ProbeRunner

from .conftest import running_daemon, sample, scrape, scrape_until

PARTITIONS = 3


@pytest.fixture
def bootstrap(service_env: dict[str, str]) -> str:
    """Return the shared broker's host:port."""
    return service_env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0]


@pytest.fixture
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """Return an admin client of the test's own (closed after)."""
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    yield client
    await client.close()


@pytest.fixture
async def topic(admin: AIOKafkaAdminClient, unique: str) -> AsyncIterator[str]:
    """Create a three-partition topic of the test's own; delete it after."""
    name = f"test-lag-{unique}"
    await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    yield name
    await admin.delete_topics([name])


async def produce(bootstrap: str, topic: str, values: Iterable[int]) -> None:
    """Write one message per value, round-robin over the partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, str(value).encode(), partition=value % PARTITIONS)
    finally:
        await producer.stop()


async def broker_lag(admin: AIOKafkaAdminClient, bootstrap: str, group: str) -> int:
    """Return the group's lag the way kafka-consumer-groups computes it: end minus committed."""
    committed = await admin.list_consumer_group_offsets(group)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await reader.start()
    try:
        end = await reader.end_offsets(list(committed))
    finally:
        await reader.stop()
    return sum(end[tp] - meta.offset for tp, meta in committed.items() if meta.offset >= 0)


def daemon_lag(text: str, group: str, topic: str) -> float:
    """Return the sum of the daemon's lag-in-messages gauges for ``group`` on ``topic``."""
    total = 0.0
    for partition in range(PARTITIONS):
        value = sample(
            text,
            "ingest_kafka_consumer_lag_messages",
            group=group,
            topic=topic,
            partition=str(partition),
        )
        assert value is not None, f"no lag for partition {partition}"
        total += value
    return total


def cycles(text: str) -> float:
    """Return the daemon's completed probe cycles."""
    return sample(text, "ingest_probe_cycles_total") or 0.0


async def two_more_cycles(base_url: str) -> str:
    """Scrape until the daemon completed two cycles after now (one began after any change)."""
    start = cycles(await scrape(base_url))
    return await scrape_until(base_url, lambda text: cycles(text) >= start + 2)


class Assignments(ConsumerRebalanceListener):  # type: ignore[misc] # aiokafka is untyped
    """Record every assignment and revocation the consumer goes through."""

    def __init__(self) -> None:
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Note a revocation."""
        self.events.append(("revoked", frozenset(revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Note an assignment."""
        self.events.append(("assigned", frozenset(assigned)))


async def consume(consumer: AIOKafkaConsumer, received: list[int], count: int) -> None:
    """Read ``count`` more messages, then commit what was read."""
    target = len(received) + count
    while len(received) < target:
        batch = await consumer.getmany(timeout_ms=200, max_records=target - len(received))
        received += [int(r.value) for records in batch.values() for r in records]
    await consumer.commit()


async def test_a_real_consumer_keeps_its_partitions_and_messages_while_its_lag_is_read(
    settings_factory: Callable[..., IngestSettings],
    admin: AIOKafkaAdminClient,
    bootstrap: str,
    topic: str,
    unique: str,
) -> None:
    """The daemon reads group G's lag as the broker computes it; G's consumer never notices."""
    group = f"test-lag-real-{unique}"
    listener = Assignments()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[int] = []
    settings = settings_factory(
        KAFKA_LAG_GROUPS=group,
        INGEST_PROBE_INTERVAL_SECONDS="1",
        INGEST_PROBE_TIMEOUT_SECONDS="0.9",
    )
    try:
        consumer.subscribe([topic], listener=listener)
        await produce(bootstrap, topic, range(30))
        await consume(consumer, received, 6)
        async with running_daemon(settings) as (_, base_url):
            for step in range(4):
                # Between steps the consumer is idle (its heartbeats go on in the background),
                # so both sides measure the same committed offsets.
                text = await two_more_cycles(base_url)
                expected = await broker_lag(admin, bootstrap, group)
                assert abs(daemon_lag(text, group, topic) - expected) <= 1, (step, expected)
                assert sample(text, "ingest_kafka_consumer_group_members", group=group) == 1.0
                state = sample(
                    text, "ingest_kafka_consumer_group_state", group=group, state="Stable"
                )
                assert state == 1.0
                check = sample(text, "ingest_check_up", check=f"group_lag:{group}")
                assert check == 1.0
                await produce(bootstrap, topic, range(30 + 10 * step, 40 + 10 * step))
                await consume(consumer, received, 8)
            await consume(consumer, received, 70 - len(received))
            text = await two_more_cycles(base_url)
            assert daemon_lag(text, group, topic) == 0.0
        assert consumer.assignment() == {TopicPartition(topic, p) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()
    # One assignment at the start, no rebalance while the daemon read the lag.
    assigned = [partitions for kind, partitions in listener.events if kind == "assigned"]
    assert len(assigned) == 1
    assert [kind for kind, _ in listener.events].count("revoked") <= 2  # the join, the leave
    assert sorted(received) == list(range(70))


async def run(probe: KafkaProbe) -> dict[str, ProbeResult]:
    """Run the probe once through the runner; return the results by check name."""
    results = await ProbeRunner(default_timeout=3.0).run_one(probe)
    return {r.check: r for r in results}


def values(result: ProbeResult, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Return the check's measurements called ``name`` by their labels."""
    return {m.labels: m.value for m in result.measurements if m.name == name}


@pytest.fixture
async def connector(bootstrap: str) -> AsyncIterator[KafkaConnector]:
    """Return a started connector to the shared broker (stopped after)."""
    kafka = KafkaConnector(KafkaSettings(bootstrap_servers=(bootstrap,)), timeout=2.0)
    await kafka.start()
    yield kafka
    await kafka.stop()


async def commit_and_leave(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` and leave it: offsets stay, no member does."""
    # No auto-commit: on stop it would commit its own position, which may already be reset
    # to the end, over the offset committed here.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_lag_of_a_group_without_members_keeps_growing_in_seconds(
    connector: KafkaConnector, bootstrap: str, topic: str, unique: str
) -> None:
    """A member-less group's oldest unconsumed message ages run after run; thresholds judge it."""
    group = f"test-lag-idle-{unique}"
    await produce(bootstrap, topic, range(9))
    await commit_and_leave(bootstrap, group, {TopicPartition(topic, p): 1 for p in range(3)})
    lag = KafkaLagSettings(
        groups=({"name": group, "warn_seconds": 1.5, "down_seconds": 3.0},),
    )
    probe = KafkaProbe(connector, topics=[], lag=lag)
    name = f"group_lag:{group}"
    ages: list[float] = []
    statuses: list[tuple[Status, Reason | None]] = []
    try:
        for _ in range(4):
            result = (await run(probe))[name]
            [age] = values(result, "ingest_kafka_consumer_lag_seconds").values()
            ages.append(age)
            statuses.append((result.status, result.reason))
            await asyncio.sleep(1.0)
    finally:
        await probe.aclose()
    assert all(0.9 <= later - earlier <= 1.6 for earlier, later in itertools.pairwise(ages))
    by_partition = values(result, "ingest_kafka_consumer_lag_messages")
    assert sorted(by_partition.values()) == [2.0, 2.0, 2.0]
    assert values(result, "ingest_kafka_consumer_group_members") == {(("group", group),): 0.0}
    assert (
        values(result, "ingest_kafka_consumer_group_state")[(("group", group), ("state", "Empty"))]
        == 1.0
    )
    assert statuses[0] == (Status.OK, None)
    assert statuses[-1] == (Status.DOWN, Reason.STALE)
    assert (Status.DEGRADED, Reason.STALE) in statuses


async def test_patterns_and_unknown_groups_are_checks_of_their_own(
    connector: KafkaConnector, bootstrap: str, topic: str, unique: str
) -> None:
    """A pattern reports every group it matches; a named group nobody created is unknown."""
    first, second = f"test-lag-re-{unique}-a", f"test-lag-re-{unique}-b"
    for group in (first, second):
        await commit_and_leave(bootstrap, group, {TopicPartition(topic, 0): 0})
    pattern = f"/test-lag-re-{unique}-.*/"
    absent = f"test-lag-absent-{unique}"
    lag = KafkaLagSettings(groups=(pattern, absent, f"/nothing-{unique}/"))
    probe = KafkaProbe(connector, topics=[], lag=lag)
    try:
        results = await run(probe)
    finally:
        await probe.aclose()
    matched = results[f"group_lag:{pattern}"]
    assert matched.status is Status.OK, matched.detail
    members = values(matched, "ingest_kafka_consumer_group_members")
    assert set(members) == {(("group", first),), (("group", second),)}
    for name, what in ((absent, "not found"), (f"/nothing-{unique}/", "no group matches")):
        check = results[f"group_lag:{name}"]
        assert (check.status, check.reason) == (Status.UNKNOWN, Reason.MISSING)
        assert what in check.detail
