"""The Kafka probe's judgements and lag arithmetic, on fake clients (no broker)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from exporter.config import KafkaSettings
from exporter.connectors.kafka import KafkaConnector
from exporter.probes._kafka_lag import LagReader, lag_positions
from exporter.probes.base import Check, Reason, Status
from exporter.probes.kafka import METRIC_SPECS, KafkaProbe, topics_check
from exporter.probes.runner import ProbeRunner

T0 = TopicPartition("orders", 0)
T1 = TopicPartition("orders", 1)


def _partition(index: int, leader: int = 1, replicas: int = 3, isr: int = 3) -> dict[str, Any]:
    return {
        "error_code": 0,
        "partition": index,
        "leader": leader,
        "replicas": list(range(replicas)),
        "isr": list(range(isr)),
    }


def _topic(name: str, *partitions: dict[str, Any], error_code: int = 0) -> dict[str, Any]:
    return {"error_code": error_code, "topic": name, "partitions": list(partitions)}


def _values(check: Check) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(m.name, m.labels): m.value for m in check.measurements}


def test_healthy_topics_are_ok_with_their_partition_counts() -> None:
    """Present topics whose partitions are led and in sync pass, with per-topic gauges."""
    check, led = topics_check([_topic("orders", _partition(0), _partition(1))], ["orders"])
    assert check.status is Status.OK
    assert led == {"orders": [0, 1]}
    label = (("topic", "orders"),)
    assert _values(check) == {
        ("ingest_kafka_topic_partitions", label): 2.0,
        ("ingest_kafka_partitions_without_leader", label): 0.0,
        ("ingest_kafka_under_replicated_partitions", label): 0.0,
    }


def test_a_missing_topic_is_degraded_missing_and_named() -> None:
    """A configured topic absent from metadata is degraded/missing, named in the detail."""
    check, led = topics_check([_topic("orders", _partition(0))], ["orders", "quotes"])
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.MISSING)
    assert "quotes" in check.detail
    assert _values(check)[("ingest_kafka_topic_partitions", (("topic", "quotes"),))] == 0.0
    assert led == {"orders": [0]}


def test_leaderless_and_under_replicated_partitions_are_counted() -> None:
    """A partition without leader is missing, one short of its ISR is stale; both counted."""
    described = [_topic("orders", _partition(0, leader=-1), _partition(1, isr=2), _partition(2))]
    check, led = topics_check(described, ["orders"])
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.MISSING)
    label = (("topic", "orders"),)
    assert _values(check)[("ingest_kafka_partitions_without_leader", label)] == 1.0
    assert _values(check)[("ingest_kafka_under_replicated_partitions", label)] == 1.0
    assert led == {"orders": [1, 2]}  # no offsets can be read without a leader
    only_stale, _ = topics_check([_topic("orders", _partition(0, isr=1))], ["orders"])
    assert (only_stale.status, only_stale.reason) == (Status.DEGRADED, Reason.STALE)


def test_an_unauthorized_topic_is_unknown_permission() -> None:
    """A topic the broker will not describe (code 29) is unknown/permission, not missing."""
    check, led = topics_check([_topic("orders", error_code=29)], ["orders"])
    assert (check.status, check.reason) == (Status.UNKNOWN, Reason.PERMISSION)
    assert led == {}


def test_lag_counts_from_committed_or_from_the_reset_policy() -> None:
    """Committed partitions lag end-committed; uncommitted ones start where the reset puts them."""
    end = {T0: 100, T1: 50}
    earliest = lag_positions([T0, T1], {T0: 90, T1: -1}, {T1: 20}, end, "earliest")
    assert [(lag.messages, lag.committed) for lag in earliest] == [(10, True), (30, False)]
    latest = lag_positions([T0, T1], {T0: 90}, {}, end, "latest")
    assert [lag.messages for lag in latest] == [10, 0]
    ahead = lag_positions([T0], {T0: 120}, {}, {T0: 100}, "earliest")
    assert ahead[0].messages == 0  # a topic recreated under a group: never negative


@dataclass
class Record:
    """The two fields of a ConsumerRecord the lag reader uses."""

    offset: int
    timestamp: int


@dataclass
class FakeConsumer:
    """A group-less consumer over in-memory partitions (offset -> timestamp ms)."""

    logs: dict[TopicPartition, dict[int, int]]
    assigned: set[TopicPartition] = field(default_factory=set)
    paused: set[TopicPartition] = field(default_factory=set)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    fetches: int = 0

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return each log's next offset."""
        return {tp: max(self.logs[tp], default=-1) + 1 for tp in tps}

    async def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return each log's first offset."""
        return {tp: min(self.logs[tp], default=0) for tp in tps}

    def assignment(self) -> set[TopicPartition]:
        """Return the assigned partitions."""
        return set(self.assigned)

    def assign(self, tps: Sequence[TopicPartition]) -> None:
        """Replace the assignment (nothing paused)."""
        self.assigned, self.paused = set(tps), set()

    def pause(self, *tps: TopicPartition) -> None:
        """Pause partitions."""
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        """Resume partitions."""
        self.paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move a partition's position."""
        self.positions[tp] = offset

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[Record]]:
        """Return the record at each unpaused partition's position, if any."""
        self.fetches += 1
        batch = {
            tp: [Record(self.positions[tp], self.logs[tp][self.positions[tp]])]
            for tp in tps
            if tp not in self.paused and self.positions.get(tp) in self.logs[tp]
        }
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
        return batch


@dataclass
class FakeAdmin:
    """An admin client answering from canned metadata and committed offsets."""

    committed: dict[TopicPartition, int] = field(default_factory=dict)
    topics: list[dict[str, Any]] = field(default_factory=list)
    describe_delay: float = 0.0

    async def describe_cluster(self) -> dict[str, Any]:
        """Return one broker."""
        return {"brokers": [{"node_id": 1}], "controller_id": 1}

    async def describe_topics(self) -> list[dict[str, Any]]:
        """Return the canned topics, after the configured delay."""
        await asyncio.sleep(self.describe_delay)
        return self.topics

    async def list_consumer_group_offsets(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the committed offsets (-1 for none), as the coordinator would."""
        return {tp: OffsetAndMetadata(self.committed.get(tp, -1), "") for tp in partitions}


def _loop_deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_lag_seconds_is_the_age_of_the_oldest_unconsumed_message() -> None:
    """Lag seconds is now minus the timestamp of the record at the committed offset."""
    now_ms = int(time.time() * 1000)
    consumer = FakeConsumer({T0: {0: now_ms - 60_000, 1: now_ms - 30_000, 2: now_ms}, T1: {}})
    admin = FakeAdmin(committed={T0: 1})
    check = await LagReader().read(
        cast(Any, admin),
        cast(Any, consumer),
        group="bridge",
        partitions={"orders": [0, 1]},
        reset="earliest",
        deadline=_loop_deadline(),
    )
    values = {(m.name, m.labels): m.value for m in check.measurements}
    lag = "ingest_kafka_consumer_lag_messages"
    group = ("group", "bridge")
    assert values[(lag, (group, ("topic", "orders"), ("partition", "0")))] == 2.0
    assert values[(lag, (group, ("topic", "orders"), ("partition", "1")))] == 0.0
    age = values[("ingest_kafka_consumer_lag_seconds", (group, ("topic", "orders")))]
    assert 29.0 <= age <= 32.0  # the record at offset 1, not the newest or the oldest
    assert consumer.paused == consumer.assigned  # no background fetching afterwards


async def test_an_unmoved_position_reuses_its_timestamp() -> None:
    """While the committed offset stays put, the timestamp is fetched once and the age grows."""
    stamp = int(time.time() * 1000) - 10_000
    consumer = FakeConsumer({T0: {0: stamp, 1: stamp}})
    admin = FakeAdmin(committed={T0: 0})
    reader = LagReader()

    async def age() -> float:
        check = await reader.read(
            cast(Any, admin),
            cast(Any, consumer),
            group="g",
            partitions={"orders": [0]},
            reset="earliest",
            deadline=_loop_deadline(),
        )
        return next(m.value for m in check.measurements if m.name.endswith("_seconds"))

    first = await age()
    fetches = consumer.fetches
    await asyncio.sleep(0.05)
    second = await age()
    assert consumer.fetches == fetches
    assert second > first
    admin.committed[T0] = 1  # the group moved on: the new position is fetched
    await age()
    assert consumer.fetches == fetches + 1


async def test_caught_up_group_has_zero_lag_seconds_without_fetching() -> None:
    """A group at the high watermark reports 0 seconds and reads no record."""
    consumer = FakeConsumer({T0: {0: 1, 1: 2}})
    check = await LagReader().read(
        cast(Any, FakeAdmin(committed={T0: 2})),
        cast(Any, consumer),
        group="g",
        partitions={"orders": [0]},
        reset="earliest",
        deadline=_loop_deadline(),
    )
    labels = (("group", "g"), ("topic", "orders"))
    assert ("ingest_kafka_consumer_lag_seconds", labels, 0.0) in [
        (m.name, m.labels, m.value) for m in check.measurements
    ]
    assert consumer.fetches == 0


async def test_an_unreadable_age_is_omitted_not_understated() -> None:
    """When no record arrives before the deadline, lag seconds is left out for that topic."""
    consumer = FakeConsumer({T0: {0: 1, 1: 2}})
    consumer.logs[T0] = {}  # positions exist in end offsets below, records do not
    consumer.end_offsets = _fixed_end({T0: 5})  # type: ignore[method-assign]
    check = await LagReader().read(
        cast(Any, FakeAdmin(committed={T0: 2})),
        cast(Any, consumer),
        group="g",
        partitions={"orders": [0]},
        reset="earliest",
        deadline=_loop_deadline(0.2),
    )
    assert [m.name for m in check.measurements] == ["ingest_kafka_consumer_lag_messages"]
    assert "age unknown on 1 partition(s)" in check.detail


def _fixed_end(ends: Mapping[TopicPartition, int]) -> Any:
    async def end_offsets(tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: ends[tp] for tp in tps}

    return end_offsets


class FakeConnector:
    """A KafkaConnector stand-in handing out one fake admin client."""

    def __init__(
        self, admin: FakeAdmin | Exception, *, timeout: float = 1.0, port: int = 9
    ) -> None:
        self.settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{port}",))
        self.timeout = timeout
        self._admin = admin
        self.resets = 0

    async def admin(self) -> FakeAdmin:
        """Return the admin client, or fail as configured."""
        if isinstance(self._admin, Exception):
            raise self._admin
        return self._admin

    async def reset(self) -> None:
        """Count resets."""
        self.resets += 1

    async def diagnose(self) -> Exception | None:
        """Try the bootstrap address for real, as the connector does."""
        return await KafkaConnector(self.settings, timeout=self.timeout).diagnose()

    def client_options(self) -> dict[str, Any]:
        """Return options no client should ever use in these tests."""
        raise AssertionError("the probe created a client it did not need")


def _kafka(connector: FakeConnector) -> KafkaConnector:
    return cast(KafkaConnector, connector)


async def test_without_topics_or_canary_only_metadata_runs() -> None:
    """With nothing configured beyond the cluster, the probe reports metadata alone."""
    checks = await KafkaProbe(_kafka(FakeConnector(FakeAdmin())))()
    assert [c.name for c in checks] == ["metadata"]
    assert checks[0].measurements[0].value == 1.0


async def test_a_missing_canary_topic_is_degraded_without_producing() -> None:
    """A canary topic absent from metadata is degraded/missing; no client is created."""
    probe = KafkaProbe(_kafka(FakeConnector(FakeAdmin())), canary_topic="canary")
    checks = {c.name: c for c in await probe()}
    assert (checks["canary"].status, checks["canary"].reason) == (Status.DEGRADED, Reason.MISSING)


async def test_all_topics_missing_leaves_lag_unknown() -> None:
    """When no ingest topic exists, topics is degraded and lag unknown/missing, no consumer."""
    probe = KafkaProbe(_kafka(FakeConnector(FakeAdmin())), topics=["orders"])
    checks = {c.name: c for c in await probe()}
    assert checks["topics"].reason is Reason.MISSING
    assert (checks["consumer_lag"].status, checks["consumer_lag"].reason) == (
        Status.UNKNOWN,
        Reason.MISSING,
    )


async def test_a_slow_describe_times_out_within_the_probe_timeout() -> None:
    """A hung topic describe ends at 90% of the timeout: every dependent check says timeout."""
    connector = FakeConnector(FakeAdmin(describe_delay=10.0), timeout=0.3)
    probe = KafkaProbe(_kafka(connector), topics=["orders"], canary_topic="canary")
    t0 = time.perf_counter()
    results = await ProbeRunner(default_timeout=0.3).run_one(probe)
    assert time.perf_counter() - t0 < 0.3
    by_name = {r.check: r for r in results}
    assert by_name["metadata"].status is Status.OK
    for name in ("topics", "consumer_lag", "canary"):
        assert (by_name[name].status, by_name[name].reason) == (Status.UNKNOWN, Reason.TIMEOUT)
    assert connector.resets == 1  # a timed-out admin client is not reused


async def test_a_run_that_waited_for_the_lock_still_reports_within_its_timeout() -> None:
    """Two overlapping runs (loop and /probe): the second's deadline counts from its call."""
    connector = FakeConnector(FakeAdmin(describe_delay=10.0), timeout=0.4)
    probe = KafkaProbe(_kafka(connector), topics=["orders"])
    runner = ProbeRunner(default_timeout=0.4)
    t0 = time.perf_counter()
    first, second = await asyncio.gather(runner.run_one(probe), runner.run_one(probe))
    assert time.perf_counter() - t0 < 0.4
    for results in (first, second):
        by_name = {r.check: r for r in results}
        assert by_name["metadata"].status is Status.OK
        assert (by_name["topics"].status, by_name["topics"].reason) == (
            Status.UNKNOWN,
            Reason.TIMEOUT,
        )


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_broker_is_down_refused() -> None:
    """The generic aiokafka bootstrap error is diagnosed as refused by a direct connection."""
    error = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AF_INET>)]")
    connector = FakeConnector(error, port=_unused_port())
    [result] = await ProbeRunner(default_timeout=1.0).run_one(KafkaProbe(_kafka(connector)))
    assert (result.check, result.status, result.reason) == ("metadata", Status.DOWN, Reason.REFUSED)


@pytest.mark.parametrize("item", METRIC_SPECS, ids=lambda item: item.name)
def test_metric_specs_follow_the_naming_rules(item: Any) -> None:
    """Every spec is ingest_kafka_*, a gauge, labelled by deployment first, never _total."""
    assert item.name.startswith("ingest_kafka_")
    assert item.type == "gauge"
    assert item.labels[0] == "deployment"
    assert set(item.labels) <= {"deployment", "group", "state", "topic", "partition"}
