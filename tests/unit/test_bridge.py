from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from exporter import bridge as bridge_module
from exporter.bridge import FAILURE_REASONS, METRIC_SPECS, KafkaIngestBridge
from exporter.config import DimensionSettings, KafkaSettings, TopicBinding
from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ConfigError, ConnectorError, DeliveryError
from exporter.events import CallbackBus, IngestEvent
from exporter.supervisor import Heartbeat
from tests.waiting import Changes

from .fakes.kafka import Cluster, FakeConsumer, Record

DIMENSIONS = (DimensionSettings(name="trades"), DimensionSettings(name="quotes"))


class Sink:
    """Collect delivered events; optionally fail on chosen offsets."""

    def __init__(self) -> None:
        self.events: list[IngestEvent] = []
        self.fail_on: set[tuple[int, int]] = set()
        self.changed = Changes()

    async def __call__(self, event: IngestEvent) -> None:
        """Take one event."""
        if (event.partition, event.offset) in self.fail_on:
            raise RuntimeError("sink is full of secret-payload")
        self.events.append(event)
        self.changed()

    async def wait(self, count: int, timeout: float = 2.0) -> None:
        """Wait until ``count`` events arrived."""
        await self.changed.until(lambda: len(self.events) >= count, timeout)


def make_bridge(
    cluster: Cluster,
    sink: Sink,
    *,
    topics: Iterable[tuple[str, str]] = (("trades", "t.trades"),),
    **kwargs: Any,
) -> KafkaIngestBridge:
    """Build a bridge on the fake cluster with fast timings."""
    settings_kwargs = {k: kwargs.pop(k) for k in ("commit_mode",) if k in kwargs}
    settings = KafkaSettings(
        ingest_topics=tuple(TopicBinding(dimension=d, topic=t) for d, t in topics),
        consumer_group="g1",
        **settings_kwargs,
    )
    connector = KafkaConnector(settings, timeout=0.2)
    options: dict[str, Any] = {
        "poll_timeout": 0.01,
        "liveness_interval": 0.05,
        "commit_interval": 0.05,
        "close_timeout": 1.0,
        "consumer_factory": cluster.factory,
        "group_members": _no_members,
    }
    return KafkaIngestBridge(
        settings,
        DIMENSIONS,
        CallbackBus(sink),
        deployment="local",
        connector=connector,
        **(options | kwargs),
    )


async def _no_members(group: str) -> int:
    """Report that ``group`` has no live member (the fake cluster has no coordinator)."""
    return 0


@asynccontextmanager
async def running(
    bridge: KafkaIngestBridge, heartbeat: Heartbeat
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the bridge in a task; cancel it and wait for its cleanup at the end."""
    task = asyncio.get_running_loop().create_task(bridge.run(heartbeat))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def value(n: int) -> bytes:
    """Return a good JSON record value carrying sequence number ``n``."""
    return json.dumps({"seq": n}).encode()


def samples(bridge: KafkaIngestBridge) -> dict[tuple[str, tuple[str, ...]], float]:
    """Flatten the bridge's metric families into {(sample name, label values): value}."""
    flat: dict[tuple[str, tuple[str, ...]], float] = {}
    for family in bridge.metric_families():
        for s in family.samples:
            flat[s.name, tuple(s.labels.values())] = s.value
    return flat


# -- delivery and commits -------------------------------------------------------------------


async def test_events_arrive_in_order_per_partition_and_offsets_commit(
    heartbeat: Heartbeat,
) -> None:
    """Records of three partitions reach the bus in offset order and their offsets are committed."""
    cluster, sink = Cluster({"t.trades": 3}), Sink()
    for n in range(30):
        cluster.produce("t.trades", n % 3, value(n), key=b"k%d" % (n % 3))
    changes: list[int] = []
    bridge = make_bridge(cluster, sink, on_change=lambda: changes.append(1))
    async with running(bridge, heartbeat):
        await sink.wait(30)
        for n in range(30, 45):
            cluster.produce("t.trades", n % 3, value(n))
        await sink.wait(45)
    for partition in range(3):
        offsets = [e.offset for e in sink.events if e.partition == partition]
        assert offsets == list(range(15))
        assert cluster.committed["t.trades", partition] == 15
    first = sink.events[0]
    assert first.dimension == "trades"
    assert first.key is not None
    assert first.key.startswith(b"k")
    assert first.timestamp == pytest.approx(1_700_000_000.0)
    assert bridge.newest_event_timestamp("trades") == pytest.approx(1_700_000_000.014)
    assert samples(bridge)["ingest_bridge_messages_total", ("local", "trades")] == 45
    assert samples(bridge)["ingest_bridge_commits_total", ("local",)] >= 2
    assert changes, "on_change is called after batches"


async def test_consumer_options_disable_autocommit_and_use_settings() -> None:
    """The consumer joins the configured group, never auto-commits and uses auto_offset_reset."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    bridge = make_bridge(cluster, sink)
    ready: list[Heartbeat] = []
    joined = Changes()

    def on_ready(beating: Heartbeat) -> None:
        ready.append(beating)
        joined()

    heartbeat = Heartbeat(time.monotonic, on_ready)
    async with running(bridge, heartbeat):
        await joined.until(lambda: ready)
        await cluster.consumers[0].polls(5)  # room for a second "ready" to show
    options = cluster.consumers[0].options
    assert options["group_id"] == "g1"
    assert options["enable_auto_commit"] is False
    assert options["auto_offset_reset"] == "earliest"
    assert options["request_timeout_ms"] >= options["session_timeout_ms"]
    assert ready == [heartbeat], "ready once the group was joined"
    assert cluster.consumers[0].stopped


async def test_periodic_mode_commits_on_interval_and_on_cancel(heartbeat: Heartbeat) -> None:
    """In periodic mode offsets are committed on the interval, and what was delivered on stop."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    for n in range(5):
        cluster.produce("t.trades", 0, value(n))
    bridge = make_bridge(cluster, sink, commit_mode="periodic", commit_interval=60.0)
    async with running(bridge, heartbeat):
        await sink.wait(5)
        await cluster.consumers[0].polls(5)  # room for a premature commit to show
        assert cluster.committed == {}, "nothing committed before the interval"
    assert cluster.committed == {("t.trades", 0): 5}, "delivered offsets committed on cancel"


async def test_revoked_partitions_commit_only_their_offsets(heartbeat: Heartbeat) -> None:
    """A rebalance commits what was delivered on the revoked partitions and keeps the rest."""
    cluster, sink = Cluster({"t.trades": 2}), Sink()
    cluster.produce("t.trades", 0, value(0))
    cluster.produce("t.trades", 1, value(1))
    bridge = make_bridge(cluster, sink, commit_mode="periodic", commit_interval=60.0)
    async with running(bridge, heartbeat):
        await sink.wait(2)
        consumer = cluster.consumers[0]
        await consumer.listener.on_partitions_revoked({TopicPartition("t.trades", 0)})
        assert consumer.commits == [{TopicPartition("t.trades", 0): 1}]
    assert cluster.committed == {("t.trades", 0): 1, ("t.trades", 1): 1}


# -- bad input ------------------------------------------------------------------------------


async def test_poison_messages_are_skipped_counted_and_committed(heartbeat: Heartbeat) -> None:
    """Undecodable records are skipped as ``decode``, counted, logged once a minute, committed."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    cluster.produce("t.trades", 0, value(0))
    poison = [b"\xff\xfe secret-payload", b"{secret-payload", b'["secret-payload"]', b"NaN", None]
    for raw in poison:
        cluster.produce("t.trades", 0, raw)
    cluster.produce("t.trades", 0, value(6))
    bridge = make_bridge(cluster, sink)
    with capture_logs() as logs:
        async with running(bridge, heartbeat) as task:
            await sink.wait(2)
            await cluster.consumers[0].polls(2)  # the run carries on past the poison
            assert not task.done()
    assert [e.payload["seq"] for e in sink.events] == [0, 6]
    skipped = [e for e in logs if e["event"] == "bridge_message_skipped"]
    # Rate-limited: the first of the five is logged, the counter has all of them.
    assert [(e["offset"], e["suppressed"]) for e in skipped] == [(1, 0)]
    failed = {
        s.labels["reason"]: s.value
        for f in bridge.metric_families()
        for s in f.samples
        if s.name == "ingest_bridge_messages_failed_total"
    }
    assert failed["decode"] == 5
    assert {e["reason"] for e in skipped} == {"decode"}
    assert all(e["topic"] == "t.trades" and e["dimension"] == "trades" for e in skipped)
    assert "secret-payload" not in repr(logs)
    assert cluster.committed["t.trades", 0] == 7


async def test_schema_rejections_are_counted_as_schema(heartbeat: Heartbeat) -> None:
    """A validator raising ValueError skips the record under reason ``schema``."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    cluster.produce("t.trades", 0, b'{"no_time": 1}')
    cluster.produce("t.trades", 0, b'{"time": "2024-01-01T00:00:00Z"}')

    def require_time(event: IngestEvent) -> None:
        if "time" not in event.payload:
            raise ValueError("missing time")

    bridge = make_bridge(cluster, sink, validate=require_time)
    async with running(bridge, heartbeat):
        await sink.wait(1)
    assert [e.offset for e in sink.events] == [1]
    flat = samples(bridge)
    assert flat["ingest_bridge_messages_failed_total", ("local", "trades", "schema")] == 1
    assert flat["ingest_bridge_messages_failed_total", ("local", "trades", "decode")] == 0


async def test_delivery_failure_raises_and_the_next_run_retries_only_that_event(
    heartbeat: Heartbeat,
) -> None:
    """A failing bus ends the run; events before it stay committed, the failed one is retried."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    for n in range(4):
        cluster.produce("t.trades", 0, value(n))
    sink.fail_on = {(0, 2)}
    bridge = make_bridge(cluster, sink)
    with capture_logs() as logs, pytest.raises(DeliveryError) as caught:
        await bridge.run(heartbeat)
    assert "secret-payload" not in str(caught.value)
    assert "t.trades[0]@2" in str(caught.value)
    assert "secret-payload" not in repr(logs)
    assert [e["event"] for e in logs].count("bridge_delivery_failed") == 1
    assert cluster.committed["t.trades", 0] == 2
    sink.fail_on = set()
    async with running(bridge, heartbeat):
        await sink.wait(4)
    assert [e.offset for e in sink.events] == [0, 1, 2, 3]
    flat = samples(bridge)
    assert flat["ingest_bridge_messages_failed_total", ("local", "trades", "delivery")] == 1


# -- failures of the cluster -----------------------------------------------------------------


async def test_lost_cluster_raises_within_the_liveness_deadline(heartbeat: Heartbeat) -> None:
    """When metadata stops answering the run raises promptly, without a hanging final commit."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    bridge = make_bridge(cluster, sink, commit_mode="periodic", commit_interval=60.0)
    cluster.produce("t.trades", 0, value(0))
    task = asyncio.get_running_loop().create_task(bridge.run(heartbeat))
    await sink.wait(1)
    cluster.down = True
    cluster.consumers[0].stop_raises_cancelled = True  # aiokafka 0.14 does this on close
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(ConnectorError) as caught:
        await task
    assert time.monotonic() - started < 0.5
    assert caught.value.connector == "kafka"
    assert "bridge_cluster_unreachable" in [e["event"] for e in logs]
    assert cluster.consumers[0].stopped
    assert cluster.committed == {}, "no commit attempted against a dead cluster"


async def test_next_run_skips_events_delivered_by_a_run_whose_commit_failed(
    heartbeat: Heartbeat,
) -> None:
    """After a commit timed out, the restarted run does not deliver the same events again."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    for n in range(3):
        cluster.produce("t.trades", 0, value(n))
    cluster.commit_hangs = True
    bridge = make_bridge(cluster, sink)
    with pytest.raises(ConnectorError) as caught:
        await bridge.run(heartbeat)
    assert caught.value.reason == "timeout"
    assert len(sink.events) == 3
    assert cluster.committed == {}
    cluster.commit_hangs = False
    cluster.produce("t.trades", 0, value(3))
    async with running(bridge, heartbeat):
        await sink.wait(4)
        await cluster.consumers[-1].polls(2)  # room for a redelivery to show
    assert [e.offset for e in sink.events] == [0, 1, 2, 3]
    assert cluster.committed["t.trades", 0] == 4


async def test_recreated_topic_is_not_skipped(heartbeat: Heartbeat) -> None:
    """When a partition's log is shorter than what was handled, its old watermark is forgotten."""
    cluster, sink = Cluster({"t.trades": 1}), Sink()
    for n in range(3):
        cluster.produce("t.trades", 0, value(n))
    bridge = make_bridge(cluster, sink)
    async with running(bridge, heartbeat):
        await sink.wait(3)
    cluster.logs.clear()
    cluster.committed.clear()
    cluster.produce("t.trades", 0, value(10))
    with capture_logs() as logs:
        async with running(bridge, heartbeat):
            await sink.wait(4)
    assert sink.events[-1].payload == {"seq": 10}
    assert "bridge_partition_rewound" in [e["event"] for e in logs]


async def test_missing_topic_is_logged_and_raised_until_it_exists(heartbeat: Heartbeat) -> None:
    """A missing topic fails the run with a clear event; a later run consumes once it exists."""
    cluster, sink = Cluster({}), Sink()
    bridge = make_bridge(cluster, sink)
    with capture_logs() as logs, pytest.raises(ConnectorError) as caught:
        await bridge.run(heartbeat)
    assert caught.value.reason == "missing"
    missing = [e for e in logs if e["event"] == "bridge_topic_missing"]
    assert missing == [
        {
            "event": "bridge_topic_missing",
            "log_level": "error",
            "deployment": "local",
            "topic": "t.trades",
            "dimension": "trades",
        }
    ]
    cluster.partitions["t.trades"] = 1
    cluster.produce("t.trades", 0, value(0))
    async with running(bridge, heartbeat):
        await sink.wait(1)


async def test_unreachable_cluster_at_start_raises(heartbeat: Heartbeat) -> None:
    """A cluster that refuses the bootstrap fails the run at once (the supervisor backs off)."""
    cluster, sink = Cluster({"t.trades": 1}, down=True), Sink()
    with pytest.raises(ConnectorError):
        await make_bridge(cluster, sink).run(heartbeat)
    assert cluster.consumers[0].stopped


async def test_group_join_timeout_raises(heartbeat: Heartbeat) -> None:
    """A run that never joins its group fails after ``join_timeout``."""

    class NeverJoins(FakeConsumer):
        async def getmany(
            self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
        ) -> dict[TopicPartition, list[Record]]:
            await self.cluster.news(timeout_ms)
            return {}

    cluster, sink = Cluster({"t.trades": 1}), Sink()
    bridge = make_bridge(
        cluster, sink, join_timeout=0.05, consumer_factory=lambda **o: NeverJoins(cluster, o)
    )
    with pytest.raises(ConnectorError, match="join"):
        await bridge.run(heartbeat)


async def test_without_topics_the_run_returns(heartbeat: Heartbeat) -> None:
    """A deployment with no ingest topics has nothing to consume: the run ends at once."""
    cluster, sink = Cluster({}), Sink()
    await make_bridge(cluster, sink, topics=()).run(heartbeat)
    assert cluster.consumers == []


# -- configuration and metrics ----------------------------------------------------------------


def test_bindings_must_name_declared_dimensions_once() -> None:
    """Unknown dimensions and a topic bound to two dimensions are configuration errors."""
    cluster, sink = Cluster({}), Sink()
    with pytest.raises(ConfigError, match="unknown dimension"):
        make_bridge(cluster, sink, topics=(("nope", "t.x"),))
    with pytest.raises(ConfigError, match="bound twice"):
        make_bridge(cluster, sink, topics=(("trades", "t.x"), ("quotes", "t.x")))


def test_metric_families_match_their_specs_and_start_at_zero() -> None:
    """Every declared family is published with its labels; counters exist before any record."""
    cluster, sink = Cluster({}), Sink()
    bridge = make_bridge(cluster, sink, topics=(("trades", "t.a"), ("quotes", "t.b")))
    families = {f.name: f for f in bridge.metric_families()}
    assert set(families) == {s.name for s in METRIC_SPECS}
    for spec in METRIC_SPECS:
        assert families[spec.name].type == spec.type
        for s in families[spec.name].samples:
            assert tuple(s.labels) == spec.labels
    flat = samples(bridge)
    for dimension in ("quotes", "trades"):
        assert flat["ingest_bridge_messages_total", ("local", dimension)] == 0
        for reason in FAILURE_REASONS:
            assert flat["ingest_bridge_messages_failed_total", ("local", dimension, reason)] == 0
    assert bridge.newest_event_timestamp("trades") is None
    assert bridge.dimensions == ("quotes", "trades")


def test_public_names_are_exported() -> None:
    """``__all__`` lists exactly the public names the module defines."""
    here = bridge_module.__name__
    defined = {
        name
        for name, obj in vars(bridge_module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == here
    }
    assert set(bridge_module.__all__) == defined | {"FAILURE_REASONS", "METRIC_SPECS"}


async def test_bridge_refuses_a_group_other_consumers_are_in(heartbeat: Heartbeat) -> None:
    """A group with live members is not joined (their partitions would move) unless allowed."""
    cluster, sink = Cluster({"t.trades": 3}), Sink()

    async def two_members(group: str) -> int:
        return 2

    bridge = make_bridge(cluster, sink, group_members=two_members)
    with capture_logs() as logs, pytest.raises(ConnectorError, match="2 other member"):
        await bridge.run(heartbeat)
    assert cluster.consumers[-1].topics_wanted == []
    assert cluster.consumers[-1].stopped
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["bridge_group_in_use"]
