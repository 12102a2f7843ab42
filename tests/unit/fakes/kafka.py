"""An in-memory Kafka: one cluster, the consumer and admin client over it, and a connector.

The bridge, the Kafka probe's lag reader and the manifest publisher all talk to these, so
one model of the broker's behaviour serves every unit test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from exporter.config import KafkaSettings
from exporter.connectors.kafka import KafkaConnector
from tests.waiting import Changes

__all__ = [
    "Cluster",
    "FakeAdmin",
    "FakeConsumer",
    "FakeKafkaConnector",
    "Record",
    "partition_metadata",
    "topic_metadata",
]

#: The error code a broker answers for a topic it does not know.
UNKNOWN_TOPIC = 3


@dataclass
class Record:
    """The fields of an aiokafka ``ConsumerRecord`` the exporter reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


@dataclass
class Cluster:
    """The partitions, logs and committed offsets shared by every consumer a test creates.

    Logs and commits are keyed by ``(topic, partition)``; an aiokafka ``TopicPartition`` is
    an equal key, so either works.
    """

    partitions: dict[str, int] = field(default_factory=dict)
    logs: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    down: bool = False
    commit_hangs: bool = False
    consumers: list[FakeConsumer] = field(default_factory=list)
    _news: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def produce(
        self,
        topic: str,
        partition: int,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        timestamp: int | None = None,
    ) -> int:
        """Append a record (timestamp in ms, made up when not given) and return its offset."""
        log = self.logs.setdefault((topic, partition), [])
        stamp = 1_700_000_000_000 + len(log) if timestamp is None else timestamp
        log.append(Record(topic, partition, len(log), key, value, stamp))
        # Wake the consumers in a long poll; later polls wait on a fresh event.
        self._news.set()
        self._news = asyncio.Event()
        return len(log) - 1

    def factory(self, **options: Any) -> FakeConsumer:
        """Build a consumer the way ``AIOKafkaConsumer(**options)`` would be built."""
        consumer = FakeConsumer(self, options)
        self.consumers.append(consumer)
        return consumer

    async def news(self, timeout_ms: int) -> None:
        """Wait until a record is produced or ``timeout_ms`` passed, as a fetch long-poll does."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_ms / 1000):
                await self._news.wait()


class FakeConsumer:
    """Behave like aiokafka 0.14 as measured: a dead cluster never makes ``getmany`` raise.

    Group use (the bridge): ``subscribe`` and the first ``getmany`` join, positions start at
    the committed offsets and ``commit`` stores offsets. Group-less use (the lag reader):
    ``assign``, ``pause``/``resume``, ``seek`` and ``getmany(*partitions)``.
    """

    def __init__(self, cluster: Cluster, options: dict[str, Any] | None = None) -> None:
        self.cluster = cluster
        self.options = options or {}
        self.listener: Any = None
        self.topics_wanted: list[str] = []
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.position: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        #: ``getmany`` calls; ``polled`` is called after each one returns.
        self.fetches = 0
        self.polled = Changes()
        self.stopped = False
        self.stop_raises_cancelled = False

    @classmethod
    def reading(cls, stamps: Mapping[TopicPartition, Sequence[int]]) -> FakeConsumer:
        """Return a group-less consumer over partitions holding records stamped ``stamps`` (ms)."""
        cluster = Cluster()
        for tp, partition_stamps in stamps.items():
            cluster.partitions[tp.topic] = max(
                cluster.partitions.get(tp.topic, 0), tp.partition + 1
            )
            cluster.logs[tp.topic, tp.partition] = []
            for stamp in partition_stamps:
                cluster.produce(tp.topic, tp.partition, timestamp=stamp)
        return cls(cluster)

    def _log(self, tp: TopicPartition) -> list[Record]:
        return self.cluster.logs.get((tp.topic, tp.partition), [])

    async def start(self) -> None:
        """Bootstrap: fail at once when the cluster is down (connection refused)."""
        if self.cluster.down:
            raise KafkaError("Unable to bootstrap from [('127.0.0.1', 9, <AddressFamily>)]")

    async def topics(self) -> set[str]:
        """Return the cluster's topics, like ``fetch_all_metadata``."""
        if self.cluster.down:
            raise KafkaError("Unable to get cluster metadata over all known brokers")
        return set(self.cluster.partitions)

    def subscribe(self, topics: list[str], listener: Any) -> None:
        """Remember the subscription; the group is joined on the first poll."""
        self.topics_wanted, self.listener = topics, listener

    def assignment(self) -> frozenset[TopicPartition]:
        """Return the assigned partitions."""
        return frozenset(self.assigned)

    def assign(self, tps: Iterable[TopicPartition]) -> None:
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
        self.position[tp] = offset

    def highwater(self, tp: TopicPartition) -> int:
        """Return the partition's end offset."""
        return len(self._log(tp))

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return each log's next offset."""
        return {tp: len(self._log(tp)) for tp in tps}

    async def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return each log's first offset."""
        return dict.fromkeys(tps, 0)

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Join on first use, then return records from the positions (nothing when down).

        Waits up to ``timeout_ms`` for a record when there is none, like a fetch long-poll.
        """
        self.fetches += 1
        if self.listener is not None and not self.assigned and not self.cluster.down:
            await self._join()
        batch: dict[TopicPartition, list[Record]] = {}
        if not self.cluster.down:
            for tp in sorted(tps or self.assigned):
                if tp in self.paused or tp not in self.position:
                    continue
                start = self.position[tp]
                records = self._log(tp)[start : start + (max_records or 500)]
                if records:
                    batch[tp] = records
                    self.position[tp] += len(records)
        if not batch:
            await self.cluster.news(timeout_ms)
        self.polled()
        return batch

    async def polls(self, count: int) -> None:
        """Wait until ``count`` more polls returned: the caller went round its loop that often."""
        target = self.fetches + count
        await self.polled.until(lambda: self.fetches >= target)

    async def _join(self) -> None:
        self.assigned = {
            TopicPartition(t, p)
            for t in self.topics_wanted
            for p in range(self.cluster.partitions[t])
        }
        for tp in self.assigned:
            self.position[tp] = self.cluster.committed.get((tp.topic, tp.partition), 0)
        await self.listener.on_partitions_assigned(set(self.assigned))

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store offsets; hang (like aiokafka's retry loop) when the cluster is unreachable."""
        if self.cluster.down or self.cluster.commit_hangs:
            await asyncio.Event().wait()
        self.commits.append(dict(offsets))
        for tp, offset in offsets.items():
            self.cluster.committed[tp.topic, tp.partition] = offset

    async def stop(self) -> None:
        """Close; optionally reproduce aiokafka's stray CancelledError from Fetcher.close()."""
        self.stopped = True
        if self.stop_raises_cancelled:
            raise asyncio.CancelledError


def partition_metadata(
    index: int, leader: int = 1, replicas: int = 3, isr: int = 3
) -> dict[str, Any]:
    """Return one partition as a broker's metadata describes it."""
    return {
        "error_code": 0,
        "partition": index,
        "leader": leader,
        "replicas": list(range(replicas)),
        "isr": list(range(isr)),
    }


def topic_metadata(name: str, *partitions: dict[str, Any], error_code: int = 0) -> dict[str, Any]:
    """Return one topic as a broker's metadata describes it."""
    return {"error_code": error_code, "topic": name, "partitions": list(partitions)}


@dataclass
class FakeAdmin:
    """An admin client answering from canned metadata, committed offsets and topic configs."""

    topics: list[dict[str, Any]] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    brokers: int = 1
    #: ``describe_topics`` never answers (a broker that hangs).
    describe_hangs: bool = False
    #: The error code ``create_topics`` answers (0: created).
    create_code: int = 0
    #: The ``cleanup.policy`` of every topic.
    policy: str = "compact"
    created: list[Any] = field(default_factory=list)

    async def describe_cluster(self) -> dict[str, Any]:
        """Return ``brokers`` brokers, the first one the controller."""
        return {"brokers": [{"node_id": n} for n in range(1, self.brokers + 1)], "controller_id": 1}

    async def describe_topics(self, topics: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Return the canned metadata of every topic, or of ``topics`` (unknown ones: code 3)."""
        if self.describe_hangs:
            await asyncio.Event().wait()
        if topics is None:
            return self.topics
        known = {t["topic"]: t for t in self.topics}
        return [known.get(name, topic_metadata(name, error_code=UNKNOWN_TOPIC)) for name in topics]

    async def list_consumer_group_offsets(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the committed offsets (-1 for none), as the coordinator would."""
        return {tp: OffsetAndMetadata(self.committed.get(tp, -1), "") for tp in partitions}

    async def create_topics(self, topics: list[Any], timeout_ms: int) -> Any:
        """Record the request; the topics exist afterwards unless ``create_code`` is an error."""
        self.created.extend(topics)
        if self.create_code == 0:
            self.topics.extend(topic_metadata(t.name) for t in topics)
        return SimpleNamespace(topic_errors=[(topics[0].name, self.create_code, None)])

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        """Return the topic's cleanup policy in the broker's response shape."""
        entry = {"config_names": "cleanup.policy", "config_value": self.policy}
        body = {"resources": [{"config_entries": [entry]}]}
        return [SimpleNamespace(to_object=lambda: body)]


class FakeKafkaConnector(KafkaConnector):
    """A Kafka connector whose admin client is a :class:`FakeAdmin` (or a failure to get one)."""

    def __init__(
        self,
        admin: FakeAdmin | Exception,
        *,
        settings: KafkaSettings | None = None,
        timeout: float = 0.5,
        clients_allowed: bool = True,
    ) -> None:
        super().__init__(settings or KafkaSettings(), timeout=timeout)
        self.fake_admin = admin
        self.clients_allowed = clients_allowed
        self.resets = 0

    async def admin(self) -> Any:
        """Return the fake admin client, or raise the configured failure."""
        if isinstance(self.fake_admin, Exception):
            raise self.fake_admin
        return self.fake_admin

    async def reset(self) -> None:
        """Count resets."""
        self.resets += 1

    def client_options(self) -> dict[str, Any]:
        """Return the real options, unless the test forbids creating clients."""
        if not self.clients_allowed:
            raise AssertionError("the code under test created a client it did not need")
        return super().client_options()

    async def diagnose(self) -> Exception | None:
        """Try the bootstrap address for real, as the connector does (no client needed)."""
        return await KafkaConnector(self.settings, timeout=self.timeout).diagnose()
