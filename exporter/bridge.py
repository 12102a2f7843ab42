"""The Kafka ingest bridge: consume the ingest topics and deliver decoded events to the bus.

Each supervised run bootstraps a fresh consumer, checks the topics exist, joins the group and
delivers every record to the bus in order per partition, committing offsets only after delivery.
A run raises when the cluster is unreachable, so the supervisor restarts it with backoff. aiokafka
never reports a dead broker itself (``getmany`` keeps returning nothing, commits retry forever),
so each run fetches cluster metadata every ``liveness_interval`` seconds under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError
from prometheus_client.core import Metric

from exporter._cleanup import shielded
from exporter.checklog import Throttle
from exporter.config import DimensionSettings, KafkaSettings
from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ConfigError, ConnectorError, DeliveryError
from exporter.events import EventBus, IngestEvent, decode_payload
from exporter.metricspec import MetricSpec, family, spec
from exporter.reasons import Reason, classify
from exporter.supervisor import Heartbeat

__all__ = ["FAILURE_REASONS", "METRIC_SPECS", "KafkaIngestBridge"]

_log = structlog.get_logger(__name__)

#: Why a record was not delivered (the ``reason`` label; a fixed set).
FAILURE_REASONS: Final = ("decode", "schema", "delivery")

METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_bridge_messages",
        "counter",
        "deployment dimension",
        "Records the Kafka ingest bridge consumed since start, delivered or not.",
    ),
    spec(
        "ingest_bridge_messages_failed",
        "counter",
        "deployment dimension reason",
        "Records the bridge did not deliver: decode (not a UTF-8 JSON object), "
        "schema (rejected by the validator), delivery (the event bus raised).",
    ),
    spec(
        "ingest_bridge_last_event_timestamp_seconds",
        "gauge",
        "deployment dimension",
        "Broker timestamp (Unix seconds) of the newest event the bridge delivered.",
    ),
    spec("ingest_bridge_commits", "counter", "deployment", "Offset commits the bridge made."),
)

_Partition = tuple[str, int]


def _where(record: Any) -> dict[str, Any]:
    # Never the payload in a log: it is untrusted data and may carry personal data or secrets.
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


class KafkaIngestBridge:
    """Consume the ingest topics of one deployment and deliver each record to ``bus``.

    ``validate`` may reject a decoded event by raising `ValueError` (a pydantic
    ``ValidationError`` is one): the record is skipped and counted as ``schema``. Delivered and
    skipped records are remembered per partition across runs, so a run that starts after a
    failed commit skips what an earlier run already handled instead of delivering it twice.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        dimensions: Iterable[DimensionSettings],
        bus: EventBus,
        *,
        deployment: str,
        connector: KafkaConnector,
        on_change: Callable[[], None] | None = None,
        validate: Callable[[IngestEvent], object] | None = None,
        poll_timeout: float = 1.0,
        max_records: int = 500,
        liveness_interval: float = 5.0,
        commit_interval: float = 5.0,
        join_timeout: float = 60.0,
        session_timeout: float = 10.0,
        close_timeout: float = 10.0,
        consumer_factory: Callable[..., Any] = AIOKafkaConsumer,
        group_members: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        declared = {d.name for d in dimensions}
        self._topics: dict[str, str] = {}
        for binding in settings.ingest_topics:
            if binding.dimension not in declared:
                raise ConfigError("kafka.ingest_topics", f"unknown dimension {binding.dimension!r}")
            if self._topics.setdefault(binding.topic, binding.dimension) != binding.dimension:
                raise ConfigError("kafka.ingest_topics", f"topic {binding.topic!r} bound twice")
        self.settings, self.deployment = settings, deployment
        self._log = _log.bind(deployment=deployment)
        self._bus, self._connector = bus, connector
        self._on_change: Callable[[], None] = on_change or (lambda: None)
        self._validate = validate
        self._poll_ms, self._max_records = int(poll_timeout * 1000), max_records
        self._liveness_interval, self._commit_interval = liveness_interval, commit_interval
        self._join_timeout, self._session_ms = join_timeout, int(session_timeout * 1000)
        # The connector's timeout bounds one metadata request or one commit.
        self._close_timeout, self._call_timeout = close_timeout, connector.timeout
        self._consumer_factory = consumer_factory
        self._group_members = group_members or self._members_from_coordinator
        # Next offset to read per partition, over all runs; commits lag behind it.
        self._handled: dict[_Partition, int] = {}
        self._pending: dict[_Partition, int] = {}
        self._joined = self._lost = False  # lost: the cluster failed this run, skip final commit
        self._lock = threading.Lock()  # a rendering thread may read the numbers
        #: The dimensions fed by at least one ingest topic, sorted.
        self.dimensions = tuple(sorted(set(self._topics.values())))
        self._messages: Counter[str] = Counter(dict.fromkeys(self.dimensions, 0))
        self._failed: Counter[tuple[str, str]] = Counter(
            dict.fromkeys(((d, r) for d in self.dimensions for r in FAILURE_REASONS), 0)
        )
        self._newest: dict[str, float] = {}
        self._commits = 0
        self._skipped_log = Throttle()

    def newest_event_timestamp(self, dimension: str) -> float | None:
        """Return the broker timestamp of the newest event delivered for ``dimension``."""
        return self._newest.get(dimension)

    # -- the supervised run ----------------------------------------------------------------

    async def run(self, heartbeat: Heartbeat) -> None:
        """Consume until cancelled; raise when the cluster or a topic is unavailable."""
        if not self._topics:
            self._log.info("bridge_disabled")
            return
        consumer = self._consumer_factory(**self._consumer_options())
        self._joined, self._lost, self._pending = False, False, {}
        try:
            try:
                async with asyncio.timeout(self._call_timeout * 2):
                    await consumer.start()
            except Exception as exc:
                raise await self._unreachable(exc, "bootstrap failed") from exc
            await self._check_cluster(consumer)
            await self._check_group_unused()
            topics = sorted(self._topics)
            consumer.subscribe(topics=topics, listener=_Rebalance(self, consumer))
            self._log.info("bridge_started", topics=topics, group=self.settings.consumer_group)
            await self._consume(consumer, heartbeat)
        finally:
            # A final commit to a cluster that just failed us would only delay the restart.
            await self._close(consumer, commit=not self._lost)

    def _consumer_options(self) -> dict[str, Any]:
        options = self._connector.client_options()
        options.update(
            group_id=self.settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset=self.settings.auto_offset_reset,
            session_timeout_ms=self._session_ms,
            # A JoinGroup may wait a whole session for old members: never time it out early.
            request_timeout_ms=max(options["request_timeout_ms"], self._session_ms + 5_000),
        )
        return options

    async def _consume(self, consumer: Any, heartbeat: Heartbeat) -> None:
        loop = asyncio.get_running_loop()
        started = next_check = next_commit = loop.time()
        next_check += self._liveness_interval
        next_commit += self._commit_interval
        ready = False
        while True:
            heartbeat.beat()
            try:
                async with asyncio.timeout(self._poll_ms / 1000 + self._call_timeout):
                    batch = await consumer.getmany(
                        timeout_ms=self._poll_ms, max_records=self._max_records
                    )
            except TimeoutError as exc:
                raise await self._unreachable(exc, "fetch did not return") from exc
            heartbeat.beat()
            if self._joined and not ready:
                ready = True
                heartbeat.ready()
            elif not self._joined and loop.time() - started > self._join_timeout:
                raise ConnectorError(self._connector.name, Reason.TIMEOUT, "consumer group join")
            changed = False
            if batch:
                await self._deliver(consumer, batch)
                changed = True
                if self.settings.commit_mode == "after_delivery":
                    await self._commit(consumer)
            now = loop.time()
            if now >= next_commit and self.settings.commit_mode == "periodic":
                changed = await self._commit(consumer) or changed
                next_commit = now + self._commit_interval
            if now >= next_check:
                await self._check_cluster(consumer)
                next_check = now + self._liveness_interval
            if changed:
                self._on_change()

    async def _check_cluster(self, consumer: Any) -> None:
        """Fetch cluster metadata under a deadline; raise if unreachable or a topic is gone."""
        try:
            async with asyncio.timeout(self._call_timeout):
                topics = set(await consumer.topics())
        except Exception as exc:
            raise await self._unreachable(exc, "cluster metadata unavailable") from exc
        if missing := sorted(set(self._topics) - topics):
            for topic in missing:
                self._log.error("bridge_topic_missing", topic=topic, dimension=self._topics[topic])
            what = "topic " + ", ".join(missing)
            raise ConnectorError(self._connector.name, Reason.MISSING, what)

    async def _check_group_unused(self) -> None:
        """Refuse to join a group other consumers are in, unless sharing it is allowed.

        Joining would take partitions, and so messages, away from those consumers: the
        bridge is for its own group. (Lag of other groups is read without joining: see
        ``kafka.lag.groups``.) A member of our own that crashed counts until its session
        expires; the supervisor's restart then finds the group free.
        """
        if self.settings.allow_shared_group:
            return
        group = self.settings.consumer_group
        try:
            async with asyncio.timeout(self._call_timeout * 2):
                members = await self._group_members(group)
        except Exception as exc:
            raise await self._unreachable(exc, "consumer group unavailable") from exc
        if members:
            self._log.error("bridge_group_in_use", group=group, members=members)
            what = f"group {group} has {members} other member(s); set allow_shared_group to join"
            raise ConnectorError(self._connector.name, Reason.PERMISSION, what)

    async def _members_from_coordinator(self, group: str) -> int:
        # A client of its own, closed at once: asked once per run, and the connector's admin
        # client belongs to the probes (which reset it on their own failures).
        admin = AIOKafkaAdminClient(**self._connector.client_options())
        try:
            await admin.start()
            replies = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        return len(replies[0].to_object()["groups"][0]["members"])

    async def _unreachable(self, exc: Exception, what: str) -> ConnectorError:
        self._lost = True
        # The probe's reason for the same outage (refused, not error): asked of the broker.
        reason = await self._connector.explain(exc)
        error_type = type(exc).__name__
        self._log.warning("bridge_cluster_unreachable", reason=reason.value, error_type=error_type)
        return ConnectorError(self._connector.name, reason, what)

    # -- delivery --------------------------------------------------------------------------

    async def _deliver(self, consumer: Any, batch: Mapping[Any, list[Any]]) -> None:
        """Deliver a fetched batch, one partition's records in offset order."""
        for tp, records in batch.items():
            key: _Partition = (tp.topic, tp.partition)
            dimension = self._topics[tp.topic]
            for record in records:
                if tp not in consumer.assignment():
                    break  # revoked during this batch: the new owner reads from the commit
                if record.offset < self._handled.get(key, -1) and not self._rewound(consumer, tp):
                    # An earlier run delivered it but could not commit: commit it now.
                    self._pending[key] = self._handled[key]
                    continue
                await self._deliver_one(dimension, record)
                self._handled[key] = self._pending[key] = record.offset + 1

    def _rewound(self, consumer: Any, tp: Any) -> bool:
        """Forget what was handled on ``tp`` when its log is now shorter (topic re-created)."""
        key = (tp.topic, tp.partition)
        end = consumer.highwater(tp)
        if end is None or end >= self._handled[key]:
            return False
        self._log.warning("bridge_partition_rewound", topic=tp.topic, partition=tp.partition)
        del self._handled[key]
        return True

    async def _deliver_one(self, dimension: str, record: Any) -> None:
        with self._lock:
            self._messages[dimension] += 1
        payload = decode_payload(record.value)
        if payload is None:
            self._skip(dimension, record, "decode")
            return
        event = IngestEvent(
            dimension=dimension,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            timestamp=record.timestamp / 1000.0,
            payload=payload,
        )
        if self._validate is not None:
            try:
                self._validate(event)
            except ValueError:
                self._skip(dimension, record, "schema")
                return
        try:
            await self._bus.publish(event)
        except Exception as exc:
            with self._lock:
                self._failed[dimension, "delivery"] += 1
            # Not skipped: the offset stays uncommitted, so the restarted run retries it.
            self._log.warning(
                "bridge_delivery_failed", **_where(event), error_type=type(exc).__name__
            )
            raise DeliveryError(event, exc) from exc
        with self._lock:
            if event.timestamp > self._newest.get(dimension, float("-inf")):
                self._newest[dimension] = event.timestamp

    def _skip(self, dimension: str, record: Any, reason: str) -> None:
        with self._lock:
            self._failed[dimension, reason] += 1
        # A poison stream skips thousands a second: one line a minute per kind (the counter
        # ingest_bridge_messages_failed_total has every one), naming the latest offset.
        held = self._skipped_log.allow((record.topic, reason))
        if held is not None:
            self._log.warning(
                "bridge_message_skipped",
                **_where(record),
                dimension=dimension,
                reason=reason,
                suppressed=held,
            )

    # -- offsets ---------------------------------------------------------------------------

    async def _commit(self, consumer: Any, only: Iterable[Any] | None = None) -> bool:
        """Commit delivered offsets of assigned partitions; return whether anything was sent."""
        if only is None:
            wanted = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            # Offsets of partitions no longer ours cannot be committed; the new owner rereads.
            self._pending = {k: v for k, v in self._pending.items() if k in wanted}
        else:
            wanted = {(tp.topic, tp.partition) for tp in only}
        offsets = {TopicPartition(*k): v for k, v in self._pending.items() if k in wanted}
        if not offsets:
            return False
        try:
            async with asyncio.timeout(self._call_timeout):
                await consumer.commit(offsets)
        except CommitFailedError:
            self._log.warning("bridge_commit_failed", reason="rebalanced")
            return False
        except Exception as exc:
            self._lost = True
            reason = classify(exc)
            self._log.warning("bridge_commit_failed", reason=reason.value)
            raise ConnectorError(self._connector.name, reason, "offset commit") from exc
        for tp, offset in offsets.items():
            key = (tp.topic, tp.partition)
            if self._pending.get(key) == offset:
                del self._pending[key]
        with self._lock:
            self._commits += 1
        self._on_change()  # the commits counter changed: cached metrics must re-render
        return True

    async def _close(self, consumer: Any, *, commit: bool) -> None:
        """Commit what was delivered and close the consumer: shielded and bounded."""

        async def close() -> None:
            if commit and self._pending:
                # A failure is logged by _commit; the next run skips what was handled.
                with contextlib.suppress(ConnectorError):
                    await self._commit(consumer)
                self._on_change()
            try:
                await consumer.stop()
            except asyncio.CancelledError:
                # aiokafka 0.14's Fetcher.close() re-raises the cancellation of its own fetch
                # task; only a cancellation of this closing task itself must propagate.
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise

        # A lost cluster gets one call's time: leaving the group would wait for a reply
        # until request_timeout_ms (measured: 10 s against a SIGSTOPped broker). Failures are
        # logged, never raised: closing must not hide why the run ended.
        bound, name = (self._call_timeout if self._lost else self._close_timeout), self.deployment
        if not await shielded(close(), timeout=bound, event="bridge_close", deployment=name):
            # Drop the sockets stop() did not reach.
            drop = consumer._client.close()
            await shielded(drop, timeout=self._call_timeout, event="bridge_drop", deployment=name)
        self._log.info("bridge_stopped")

    # -- metrics ---------------------------------------------------------------------------

    def metric_families(self) -> Iterator[Metric]:
        """Yield the bridge's counters and gauges from memory (no I/O)."""
        with self._lock:
            rows: dict[str, list[tuple[tuple[str, ...], float]]] = {
                "ingest_bridge_messages": [((d,), n) for d, n in self._messages.items()],
                "ingest_bridge_messages_failed": [(k, n) for k, n in self._failed.items()],
                "ingest_bridge_last_event_timestamp_seconds": [
                    ((d,), t) for d, t in self._newest.items()
                ],
                "ingest_bridge_commits": [((), self._commits)],
            }
        for metric in METRIC_SPECS:
            published = family(metric)
            for labels, value in sorted(rows[metric.name]):
                published.add_metric([self.deployment, *labels], value)
            yield published


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc] # aiokafka is untyped
    """Commit delivered offsets before partitions move; note when the group was joined."""

    def __init__(self, bridge: KafkaIngestBridge, consumer: Any) -> None:
        self._bridge, self._consumer = bridge, consumer

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        """Commit what was delivered on the partitions being taken away."""
        # A failure is logged by _commit; the new owner then redelivers those records.
        if revoked:
            with contextlib.suppress(ConnectorError):
                await self._bridge._commit(self._consumer, only=revoked)

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        """Record that the group was joined (even with no partitions for this member)."""
        self._bridge._joined = True
        self._bridge._log.info("bridge_partitions_assigned", partitions=len(list(assigned)))
