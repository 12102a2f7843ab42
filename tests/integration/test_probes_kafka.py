"""The Kafka probe against the shared broker: topics, lag, canary, failures, connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from exporter.config import IngestSettings, KafkaSettings
from exporter.connectors.kafka import KafkaConnector
from exporter.probes.base import ProbeResult, Reason, Status
from exporter.probes.kafka import KafkaProbe
from exporter.probes.runner import ProbeRunner
from tests.pki import make_pki

from .conftest import running_daemon, sample, scrape_until
from .kafka_instance import KafkaInstance
from .net import free_port

TopicFactory = Callable[[int], Awaitable[str]]


def established_to(port: int) -> int:
    """Count this process's established TCP connections to ``port`` (/proc, like ``ss``)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


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
async def topic_factory(admin: AIOKafkaAdminClient, unique: str) -> AsyncIterator[TopicFactory]:
    """Create uniquely named topics on demand; delete them after the test."""
    created: list[str] = []

    async def create(partitions: int) -> str:
        name = f"test-probe-{unique}-{len(created)}"
        await admin.create_topics([NewTopic(name, partitions, 1)])
        created.append(name)
        return name

    yield create
    if created:
        await admin.delete_topics(created)


@pytest.fixture
async def connector(bootstrap: str) -> AsyncIterator[KafkaConnector]:
    """Return a started connector to the shared broker (stopped after)."""
    kafka = KafkaConnector(KafkaSettings(bootstrap_servers=(bootstrap,)), timeout=2.0)
    await kafka.start()
    yield kafka
    await kafka.stop()


async def produce(bootstrap: str, topic: str, partition: int, count: int) -> None:
    """Write ``count`` messages to one partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for index in range(count):
            await producer.send_and_wait(topic, str(index).encode(), partition=partition)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` and leave: the group keeps offsets, has no member."""
    # No auto-commit: on stop it would commit the consumer's own position, which it may
    # already have reset to the end before our commit landed (lag 0 instead of N).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def run(probe: KafkaProbe, timeout: float = 3.0) -> dict[str, ProbeResult]:
    """Run the probe once through the runner; return the results by check name."""
    results = await ProbeRunner(default_timeout=timeout).run_one(probe)
    return {r.check: r for r in results}


def lag_by_partition(result: ProbeResult) -> dict[int, float]:
    """Return ``ingest_kafka_consumer_lag_messages`` by partition."""
    return {
        int(dict(m.labels)["partition"]): m.value
        for m in result.measurements
        if m.name == "ingest_kafka_consumer_lag_messages"
    }


def lag_seconds(result: ProbeResult) -> float:
    """Return the one topic's ``ingest_kafka_consumer_lag_seconds``."""
    [value] = [m.value for m in result.measurements if m.name.endswith("_lag_seconds")]
    return value


async def test_committed_group_without_members_lags_by_unconsumed_messages(
    connector: KafkaConnector, topic_factory: TopicFactory, bootstrap: str, unique: str
) -> None:
    """N messages produced after a member-less group's commit are lag N on that partition."""
    topic = await topic_factory(3)
    group = f"test-probe-{unique}"
    await produce(bootstrap, topic, 1, 10)
    await commit(bootstrap, group, {TopicPartition(topic, 1): 4})
    probe = KafkaProbe(connector, topics=[topic], group=group)
    try:
        results = await run(probe)
    finally:
        await probe.aclose()
    assert results["topics"].status is Status.OK
    lag = results["consumer_lag"]
    assert lag.status is Status.OK, lag.detail
    assert lag_by_partition(lag) == {0: 0.0, 1: 6.0, 2: 0.0}
    assert "2 partition(s) never committed" in lag.detail


async def test_never_committed_group_lags_by_what_its_reset_policy_reads(
    connector: KafkaConnector, topic_factory: TopicFactory, bootstrap: str, unique: str
) -> None:
    """Without commits, earliest lags by everything retained and latest by nothing."""
    topic = await topic_factory(1)
    await produce(bootstrap, topic, 0, 5)
    for policy, expected in (("earliest", 5.0), ("latest", 0.0)):
        probe = KafkaProbe(
            connector, topics=[topic], group=f"never-{unique}", auto_offset_reset=policy
        )
        try:
            results = await run(probe)
        finally:
            await probe.aclose()
        assert lag_by_partition(results["consumer_lag"]) == {0: expected}


async def test_lag_seconds_grows_while_nothing_is_consumed(
    connector: KafkaConnector, topic_factory: TopicFactory, bootstrap: str, unique: str
) -> None:
    """Two runs a second apart see the oldest unconsumed message a second older."""
    topic = await topic_factory(2)
    await produce(bootstrap, topic, 0, 3)
    probe = KafkaProbe(connector, topics=[topic], group=f"stalled-{unique}")
    try:
        first = lag_seconds((await run(probe))["consumer_lag"])
        # Not a wait: the lag in seconds grows with time itself.
        await asyncio.sleep(1.0)
        second = lag_seconds((await run(probe))["consumer_lag"])
    finally:
        await probe.aclose()
    assert 0.0 <= first < 5.0
    assert 0.9 <= second - first <= 1.5


async def test_missing_topic_is_degraded_missing(
    connector: KafkaConnector, topic_factory: TopicFactory, unique: str
) -> None:
    """A configured topic that does not exist is degraded/missing and named; lag still reads."""
    topic = await topic_factory(1)
    absent = f"test-probe-absent-{unique}"
    probe = KafkaProbe(connector, topics=[topic, absent], group=f"g-{unique}")
    try:
        results = await run(probe)
    finally:
        await probe.aclose()
    check = results["topics"]
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.MISSING)
    assert absent in check.detail
    assert results["consumer_lag"].status is Status.OK
    assert lag_by_partition(results["consumer_lag"]) == {0: 0.0}


async def test_canary_round_trip_and_missing_canary_topic(
    connector: KafkaConnector, topic_factory: TopicFactory, unique: str
) -> None:
    """The canary reads back its own message in well under a second; no topic is missing."""
    canary = await topic_factory(1)
    probe = KafkaProbe(connector, canary_topic=canary)
    absent = KafkaProbe(connector, canary_topic=f"test-probe-nocanary-{unique}")
    try:
        first, second = (await run(probe))["canary"], (await run(probe))["canary"]
        missing = (await run(absent))["canary"]
    finally:
        await probe.aclose()
        await absent.aclose()
    for result in (first, second):
        assert result.status is Status.OK, result.detail
        [latency] = [m.value for m in result.measurements]
        assert 0.0 < latency < 1.0
    assert (missing.status, missing.reason) == (Status.DEGRADED, Reason.MISSING)


async def test_unreachable_broker_is_down_refused() -> None:
    """A bootstrap address nothing listens on: metadata down/refused, the rest unknown/refused."""
    settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{free_port()}",))
    async with KafkaConnector(settings, timeout=2.0) as kafka:
        results = await run(KafkaProbe(kafka, topics=["t"], canary_topic="c"))
    assert list(results) == ["metadata", "topics", "consumer_lag", "canary"]
    assert (results["metadata"].status, results["metadata"].reason) == (
        Status.DOWN,
        Reason.REFUSED,
    )
    assert {(r.status, r.reason) for r in list(results.values())[1:]} == {
        (Status.UNKNOWN, Reason.REFUSED)
    }


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"security_protocol": "SSL"}, Reason.TLS),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "probe",
                "sasl_password": "not-the-password",
            },
            Reason.AUTH,
        ),
    ],
    ids=["tls-to-plaintext", "sasl-to-plaintext"],
)
async def test_a_bootstrap_failure_is_diagnosed_not_error(
    bootstrap: str, options: dict[str, str], reason: Reason
) -> None:
    """A bare aiokafka "Unable to bootstrap" becomes the cause a direct connection finds."""
    settings = KafkaSettings(bootstrap_servers=(bootstrap,), **options)
    async with KafkaConnector(settings, timeout=2.0) as kafka:
        results = await run(KafkaProbe(kafka))
    metadata = results["metadata"]
    assert list(results) == ["metadata"]
    assert (metadata.status, metadata.reason) == (Status.DOWN, reason), metadata.detail
    assert "not-the-password" not in metadata.detail


async def test_a_server_that_is_not_kafka_is_refused(service_env: dict[str, str]) -> None:
    """A bootstrap address served by something else that hangs up (PostgreSQL) is refused."""
    port = service_env["TIMESCALEDB_URL"].rsplit(":", 1)[1].split("/")[0]
    settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{port}",))
    async with KafkaConnector(settings, timeout=2.0) as kafka:
        assert isinstance(await kafka.diagnose(), KafkaConnectionError)
        results = await run(KafkaProbe(kafka))
    assert (results["metadata"].status, results["metadata"].reason) == (
        Status.DOWN,
        Reason.REFUSED,
    )


async def test_a_reachable_broker_diagnoses_nothing(connector: KafkaConnector) -> None:
    """The direct connection to a working broker succeeds, so there is nothing to report."""
    assert await connector.diagnose() is None


async def test_blackhole_times_out_within_ten_percent(blackhole: int) -> None:
    """A broker that accepts and never answers is down/timeout within the timeout + 10%."""
    timeout = 1.0
    settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{blackhole}",))
    async with KafkaConnector(settings, timeout=timeout) as kafka:
        t0 = time.perf_counter()
        results = await run(KafkaProbe(kafka), timeout=timeout)
        elapsed = time.perf_counter() - t0
    assert (results["metadata"].status, results["metadata"].reason) == (
        Status.DOWN,
        Reason.TIMEOUT,
    )
    assert elapsed <= timeout * 1.1, elapsed


async def _settled(port: int, expected: int) -> int:
    # A closed client's sockets close on the next loop iterations, not inside stop().
    # Polled (the socket table announces nothing), and the count is returned either way so
    # the caller's assertion reports it.
    for _ in range(60):
        if established_to(port) == expected:
            break
        await asyncio.sleep(0.05)
    return established_to(port)


@pytest.mark.slow
async def test_connections_stay_constant_over_a_thousand_cycles(
    connector: KafkaConnector, topic_factory: TopicFactory, bootstrap: str, unique: str
) -> None:
    """After 1,000 full cycles, some cancelled mid-request, the probe holds the same sockets."""
    topic, canary = await topic_factory(2), await topic_factory(1)
    await produce(bootstrap, topic, 1, 5)
    port = int(bootstrap.rpartition(":")[2])
    probe = KafkaProbe(
        connector, topics=[topic, f"absent-{unique}"], group=f"g-{unique}", canary_topic=canary
    )
    runner = ProbeRunner(default_timeout=3.0)
    try:
        await runner.run_one(probe)
        before = established_to(port)
        failed = 0
        for cycle in range(1000):
            # Every 10th run is cut off at a different point of its requests.
            probe.timeout = 0.0005 + (cycle % 40) * 0.00025 if cycle % 10 == 3 else None
            results = await runner.run_one(probe)
            failed += any(r.reason is Reason.TIMEOUT for r in results)
        probe.timeout = None
        results = await runner.run_one(probe)
        assert all(r.reason in (None, Reason.MISSING) for r in results), results
        after = await _settled(port, before)
    finally:
        await probe.aclose()
    print(f"kafka sockets before {before}, after {after}; {failed} runs cut short")
    assert failed >= 30  # the faults really cut runs short (how many depends on speed)
    assert after == before, (before, after)
    assert before <= 6  # the connector's admin, our consumer and producer, the test's admin


async def test_median_probe_latency_over_a_hundred_runs(
    connector: KafkaConnector, topic_factory: TopicFactory, bootstrap: str, unique: str
) -> None:
    """A full run (metadata, topics, lag, canary) takes milliseconds on loopback."""
    topic, canary = await topic_factory(3), await topic_factory(1)
    await produce(bootstrap, topic, 0, 5)
    runner = ProbeRunner(default_timeout=3.0)
    medians = {}
    for label, probe in (
        ("metadata only", KafkaProbe(connector)),
        ("full", KafkaProbe(connector, topics=[topic], group=f"g-{unique}", canary_topic=canary)),
    ):
        try:
            await runner.run_one(probe)  # bootstrap is not a steady-state cost
            durations = []
            for _ in range(100):
                t0 = time.perf_counter()
                await runner.run_one(probe)
                durations.append(time.perf_counter() - t0)
        finally:
            await probe.aclose()
        medians[label] = statistics.median(durations)
        print(f"kafka probe ({label}) median over 100 runs: {medians[label] * 1000:.2f} ms")
    assert medians["full"] < 0.25


async def test_daemon_publishes_topic_lag_and_canary_series(
    settings_factory: Callable[..., IngestSettings], topic_factory: TopicFactory, unique: str
) -> None:
    """Configured through the environment, the daemon scrapes topic, lag and canary series."""
    topic, canary = await topic_factory(2), await topic_factory(1)
    settings = settings_factory(
        INGEST_DIMENSIONS="bars",
        KAFKA_INGEST_TOPICS=f"bars:{topic}",
        KAFKA_INGEST_CONSUMER_GROUP=f"daemon-{unique}",
        KAFKA_CANARY_TOPIC=canary,
    )
    async with running_daemon(settings) as (_, url):
        text = await scrape_until(
            url, lambda text: sample(text, "ingest_kafka_canary_latency_seconds") is not None
        )
    assert sample(text, "ingest_kafka_topic_partitions", topic=topic) == 2.0
    assert sample(text, "ingest_kafka_consumer_lag_messages", topic=topic, partition="1") == 0.0
    assert sample(text, "ingest_kafka_consumer_lag_seconds", topic=topic) == 0.0
    for check in ("metadata", "topics", "consumer_lag", "canary"):
        assert sample(text, "ingest_check_up", connector="kafka", check=check) == 1.0


async def test_mutual_tls_with_the_configured_ca_and_client_certificate(tmp_path: Path) -> None:
    """ssl_cafile/certfile/keyfile reach a broker that requires a client certificate."""
    pki = make_pki(tmp_path / "pki")
    async with KafkaInstance(tls=pki) as broker:
        settings = KafkaSettings(
            bootstrap_servers=(broker.tls_bootstrap,),
            security_protocol="SSL",
            ssl_cafile=pki.ca_cert,
            ssl_certfile=pki.client_cert,
            ssl_keyfile=pki.client_key,
        )
        async with KafkaConnector(settings, timeout=5.0) as kafka:
            results = await run(KafkaProbe(kafka), timeout=10.0)
        assert results["metadata"].status is Status.OK, results["metadata"].detail
        # The same CA without a client certificate: the broker refuses the handshake.
        anonymous = settings.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None})
        async with KafkaConnector(anonymous, timeout=5.0) as kafka:
            results = await run(KafkaProbe(kafka), timeout=10.0)
        assert results["metadata"].status is Status.DOWN
        assert results["metadata"].reason in (Reason.TLS, Reason.REFUSED)
