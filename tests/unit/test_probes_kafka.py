"""The Kafka probe's judgements and lag arithmetic, on fake clients (no broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from exporter.config import KafkaSettings
from exporter.probes._kafka_lag import LagReader, lag_positions
from exporter.probes.base import Check, Reason, Status
from exporter.probes.kafka import METRIC_SPECS, KafkaProbe, topics_check
from exporter.probes.runner import ProbeRunner

from .fakes.kafka import (
    FakeAdmin,
    FakeConsumer,
    FakeKafkaConnector,
    partition_metadata,
    topic_metadata,
)

T0 = TopicPartition("orders", 0)
T1 = TopicPartition("orders", 1)


def _values(check: Check) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(m.name, m.labels): m.value for m in check.measurements}


def test_healthy_topics_are_ok_with_their_partition_counts() -> None:
    """Present topics whose partitions are led and in sync pass, with per-topic gauges."""
    check, led = topics_check(
        [topic_metadata("orders", partition_metadata(0), partition_metadata(1))], ["orders"]
    )
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
    check, led = topics_check(
        [topic_metadata("orders", partition_metadata(0))], ["orders", "quotes"]
    )
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.MISSING)
    assert "quotes" in check.detail
    assert _values(check)[("ingest_kafka_topic_partitions", (("topic", "quotes"),))] == 0.0
    assert led == {"orders": [0]}


def test_leaderless_and_under_replicated_partitions_are_counted() -> None:
    """A partition without leader is missing, one short of its ISR is stale; both counted."""
    described = [
        topic_metadata(
            "orders",
            partition_metadata(0, leader=-1),
            partition_metadata(1, isr=2),
            partition_metadata(2),
        )
    ]
    check, led = topics_check(described, ["orders"])
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.MISSING)
    label = (("topic", "orders"),)
    assert _values(check)[("ingest_kafka_partitions_without_leader", label)] == 1.0
    assert _values(check)[("ingest_kafka_under_replicated_partitions", label)] == 1.0
    assert led == {"orders": [1, 2]}  # no offsets can be read without a leader
    only_stale, _ = topics_check(
        [topic_metadata("orders", partition_metadata(0, isr=1))], ["orders"]
    )
    assert (only_stale.status, only_stale.reason) == (Status.DEGRADED, Reason.STALE)


def test_an_unauthorized_topic_is_unknown_permission() -> None:
    """A topic the broker will not describe (code 29) is unknown/permission, not missing."""
    check, led = topics_check([topic_metadata("orders", error_code=29)], ["orders"])
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


def _loop_deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_lag_seconds_is_the_age_of_the_oldest_unconsumed_message() -> None:
    """Lag seconds is now minus the timestamp of the record at the committed offset."""
    now_ms = int(time.time() * 1000)
    consumer = FakeConsumer.reading({T0: [now_ms - 60_000, now_ms - 30_000, now_ms], T1: []})
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
    consumer = FakeConsumer.reading({T0: [stamp, stamp]})
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
    # Not a wait: the age is wall time since the record's stamp, so time must pass.
    await asyncio.sleep(0.05)
    second = await age()
    assert consumer.fetches == fetches
    assert second > first
    admin.committed[T0] = 1  # the group moved on: the new position is fetched
    await age()
    assert consumer.fetches == fetches + 1


async def test_caught_up_group_has_zero_lag_seconds_without_fetching() -> None:
    """A group at the high watermark reports 0 seconds and reads no record."""
    consumer = FakeConsumer.reading({T0: [1, 2]})
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
    consumer = FakeConsumer.reading({T0: [1, 2]})
    consumer.cluster.logs[T0] = []  # positions exist in end offsets below, records do not
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


def _connector(
    admin: FakeAdmin | Exception, *, timeout: float = 1.0, settings: KafkaSettings | None = None
) -> FakeKafkaConnector:
    """Return a connector over ``admin`` that fails the test if the probe creates a client."""
    return FakeKafkaConnector(admin, settings=settings, timeout=timeout, clients_allowed=False)


async def test_without_topics_or_canary_only_metadata_runs() -> None:
    """With nothing configured beyond the cluster, the probe reports metadata alone."""
    checks = await KafkaProbe(_connector(FakeAdmin()))()
    assert [c.name for c in checks] == ["metadata"]
    assert checks[0].measurements[0].value == 1.0


async def test_a_missing_canary_topic_is_degraded_without_producing() -> None:
    """A canary topic absent from metadata is degraded/missing; no client is created."""
    probe = KafkaProbe(_connector(FakeAdmin()), canary_topic="canary")
    checks = {c.name: c for c in await probe()}
    assert (checks["canary"].status, checks["canary"].reason) == (Status.DEGRADED, Reason.MISSING)


async def test_all_topics_missing_leaves_lag_unknown() -> None:
    """When no ingest topic exists, topics is degraded and lag unknown/missing, no consumer."""
    probe = KafkaProbe(_connector(FakeAdmin()), topics=["orders"])
    checks = {c.name: c for c in await probe()}
    assert checks["topics"].reason is Reason.MISSING
    assert (checks["consumer_lag"].status, checks["consumer_lag"].reason) == (
        Status.UNKNOWN,
        Reason.MISSING,
    )


async def test_a_slow_describe_times_out_within_the_probe_timeout() -> None:
    """A hung topic describe ends at 90% of the timeout: every dependent check says timeout."""
    connector = _connector(FakeAdmin(describe_hangs=True), timeout=0.3)
    probe = KafkaProbe(connector, topics=["orders"], canary_topic="canary")
    t0 = time.perf_counter()
    results = await ProbeRunner(default_timeout=0.3).run_one(probe)
    assert time.perf_counter() - t0 < 0.3
    by_name = {r.check: r for r in results}
    assert by_name["metadata"].status is Status.OK
    for name in ("topics", "consumer_lag", "canary"):
        assert (by_name[name].status, by_name[name].reason) == (Status.UNKNOWN, Reason.TIMEOUT)
    assert connector.resets == 1  # a timed-out admin client is not reused


class _HungClusterAdmin(FakeAdmin):
    """An admin client whose cluster describe never answers until told to."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def describe_cluster(self) -> dict[str, Any]:
        """Wait for ``answer``, then describe the cluster."""
        await self.answer.wait()
        return await super().describe_cluster()


async def test_a_run_cancelled_mid_describe_returns_at_once_and_drops_the_admin() -> None:
    """Cancelled inside describe_cluster: the run ends at the timeout and the admin is dropped."""
    admin = _HungClusterAdmin()
    connector = _connector(admin, timeout=0.2)
    probe = KafkaProbe(connector)
    t0 = time.perf_counter()
    [result] = await ProbeRunner(default_timeout=0.2).run_one(probe)
    # Not waiting for the cut-off request is what keeps the probe within its timeout.
    assert time.perf_counter() - t0 < 0.3
    assert (result.check, result.status, result.reason) == ("metadata", Status.DOWN, Reason.TIMEOUT)
    await asyncio.sleep(0)  # the reset runs in the background, after the run has reported
    assert connector.resets == 1  # the next run bootstraps a new admin client
    admin.answer.set()
    [result] = await ProbeRunner(default_timeout=0.2).run_one(probe)
    assert (result.check, result.status) == ("metadata", Status.OK)


async def test_a_run_that_waited_for_the_lock_still_reports_within_its_timeout() -> None:
    """Two overlapping runs (loop and /probe): the second's deadline counts from its call."""
    connector = _connector(FakeAdmin(describe_hangs=True), timeout=0.4)
    probe = KafkaProbe(connector, topics=["orders"])
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


async def test_an_unreachable_broker_is_down_refused(refused_port: int) -> None:
    """The generic aiokafka bootstrap error is diagnosed as refused by a direct connection."""
    error = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AF_INET>)]")
    settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{refused_port}",))
    connector = _connector(error, settings=settings, timeout=1.0)
    [result] = await ProbeRunner(default_timeout=1.0).run_one(KafkaProbe(connector))
    assert (result.check, result.status, result.reason) == ("metadata", Status.DOWN, Reason.REFUSED)


@pytest.mark.parametrize("item", METRIC_SPECS, ids=lambda item: item.name)
def test_metric_specs_follow_the_naming_rules(item: Any) -> None:
    """Every spec is ingest_kafka_*, a gauge, labelled by deployment first, never _total."""
    assert item.name.startswith("ingest_kafka_")
    assert item.type == "gauge"
    assert item.labels[0] == "deployment"
    assert set(item.labels) <= {"deployment", "group", "state", "topic", "partition"}
