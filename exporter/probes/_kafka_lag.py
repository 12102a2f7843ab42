"""Consumer-group lag of the ingest bridge, in messages and in seconds.

Lag in messages, per partition, is the high watermark minus the group's committed offset
(what ``kafka-consumer-groups.sh`` shows). The committed offsets are read from the group
coordinator, so they are there whether or not the group has live members. A partition the
group never committed is measured from where the bridge would start: the log start with
``auto_offset_reset=earliest`` (everything retained is lag), the end with ``latest`` (none).

Lag in seconds, per topic, is the age of the oldest unconsumed message: the largest
``now - timestamp`` over the topic's lagging partitions of the record at the committed
offset (the next one the group will read). It keeps growing while the group consumes
nothing, whatever producers do, which is what a stalled bridge looks like. (The age of
the *newest* unconsumed message would stay near zero under steady production and say
nothing about the consumer.) It is 0 when nothing is behind. Record timestamps are the
producer's CreateTime (or the broker's LogAppendTime if the topic says so); a producer
clock ahead of ours is clamped to 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from exporter.probes._kafka_clients import focus, idle
from exporter.probes.base import Check, Measurement, Status
from exporter.reasons import Reason

__all__ = ["LagReader", "PartitionLag", "judge_age", "lag_measurements", "lag_positions"]

# Fetching first-unconsumed records stops this long before the probe's deadline, so the
# offsets already read are still reported (the ages then stay unknown for this run).
_FETCH_MARGIN = 0.05
# ...and never waits longer than this: a position with nothing readable after it (a
# compacted gap, a transaction marker) must not cost every run its whole timeout.
_FETCH_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Where the group stands on one partition."""

    partition: TopicPartition
    position: int
    end: int
    committed: bool

    @property
    def messages(self) -> int:
        """Return the messages between the group's position and the high watermark."""
        return max(0, self.end - self.position)


def lag_positions(
    partitions: Sequence[TopicPartition],
    committed: Mapping[TopicPartition, int],
    beginning: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
    reset: str,
) -> list[PartitionLag]:
    """Return each partition's lag; uncommitted ones start where ``reset`` would put them."""
    lags = []
    for tp in partitions:
        high = end[tp]
        offset = committed.get(tp, -1)
        if offset >= 0:
            lags.append(PartitionLag(tp, offset, high, committed=True))
        else:
            start = beginning.get(tp, high) if reset == "earliest" else high
            lags.append(PartitionLag(tp, start, high, committed=False))
    return lags


class LagReader:
    """Read a group's lag; remember each partition's first-unconsumed timestamp.

    While a partition's committed offset does not move, the record at it stays the same, so
    its timestamp is fetched once and reused: a stalled group costs no fetch per run.
    """

    def __init__(self) -> None:
        self._stamps: dict[TopicPartition, tuple[int, float]] = {}

    async def read(
        self,
        admin: AIOKafkaAdminClient,
        consumer: AIOKafkaConsumer,
        *,
        group: str,
        partitions: Mapping[str, Sequence[int]],
        reset: str,
        deadline: float,
        thresholds: tuple[float | None, float | None] = (None, None),
    ) -> Check:
        """Return the ``consumer_lag`` check; ``deadline`` is on the event loop's clock.

        ``thresholds`` are the ``(warn, down)`` ages in seconds that make it degraded or down.
        """
        tps = [TopicPartition(t, p) for t, ids in partitions.items() for p in ids]
        t0 = time.perf_counter()
        replies = await admin.list_consumer_group_offsets(group, partitions=tps)
        committed = {tp: meta.offset for tp, meta in replies.items()}
        end = await consumer.end_offsets(tps)
        fresh = [tp for tp in tps if committed.get(tp, -1) < 0]
        beginning = await consumer.beginning_offsets(fresh) if fresh and reset == "earliest" else {}
        lags = lag_positions(tps, committed, beginning, end, reset)
        latency = time.perf_counter() - t0
        ages = await self.ages(consumer, lags, deadline)
        return _lag_check(group, partitions, lags, ages, latency, thresholds)

    async def ages(
        self, consumer: AIOKafkaConsumer, lags: Sequence[PartitionLag], deadline: float
    ) -> dict[TopicPartition, float]:
        """Return the age of each lagging partition's first unconsumed record, where known."""
        until = min(deadline - _FETCH_MARGIN, asyncio.get_running_loop().time() + _FETCH_WAIT)
        wanted = {lag.partition: lag.position for lag in lags if lag.messages > 0}
        stamps = {
            tp: cached[1]
            for tp, position in wanted.items()
            if (cached := self._stamps.get(tp)) is not None and cached[0] == position
        }
        pending = {tp: position for tp, position in wanted.items() if tp not in stamps}
        if pending:
            stamps.update(await _first_timestamps(consumer, pending, until))
        # Only partitions still lagging are kept, so the memo is bounded by the partitions.
        self._stamps = {tp: (wanted[tp], stamp) for tp, stamp in stamps.items()}
        now = time.time()
        return {tp: max(0.0, now - stamp) for tp, stamp in stamps.items()}


async def _first_timestamps(
    consumer: AIOKafkaConsumer, pending: Mapping[TopicPartition, int], until: float
) -> dict[TopicPartition, float]:
    """Seek to each position and return the first record's timestamp (Unix seconds)."""
    loop = asyncio.get_running_loop()
    waiting = dict(pending)
    found: dict[TopicPartition, float] = {}
    focus(consumer, waiting)
    try:
        while waiting and (left := until - loop.time()) > 0:
            batch = await consumer.getmany(*waiting, timeout_ms=max(1, int(left * 1000)))
            for tp, records in batch.items():
                position = waiting.get(tp)
                if position is None:
                    continue
                first = next((r for r in records if r.offset >= position), None)
                if first is None:
                    continue
                del waiting[tp]
                # A record without a timestamp (-1, pre-0.10 format) leaves the age unknown.
                if first.timestamp >= 0:
                    found[tp] = first.timestamp / 1000.0
    finally:
        idle(consumer)
    return found


def judge_age(
    age: float, thresholds: tuple[float | None, float | None]
) -> tuple[Status, Reason | None]:
    """Return the status an oldest-unconsumed ``age`` earns against ``(warn, down)`` seconds."""
    warn, down = thresholds
    if down is not None and age >= down:
        return Status.DOWN, Reason.STALE
    if warn is not None and age >= warn:
        return Status.DEGRADED, Reason.STALE
    return Status.OK, None


def lag_measurements(
    group: str,
    topics: Sequence[str],
    lags: Sequence[PartitionLag],
    ages: Mapping[TopicPartition, float],
) -> tuple[list[Measurement], float, int]:
    """Return the lag gauges of ``group``, its oldest known age and the partitions of unknown age.

    A topic with a lagging partition of unknown age gets no seconds gauge: a max over only
    some partitions would understate the lag.
    """
    measurements = [
        Measurement(
            "ingest_kafka_consumer_lag_messages",
            float(lag.messages),
            (
                ("group", group),
                ("topic", lag.partition.topic),
                ("partition", str(lag.partition.partition)),
            ),
        )
        for lag in lags
    ]
    unknown = 0
    oldest = 0.0
    for topic in topics:
        behind = [lag for lag in lags if lag.partition.topic == topic and lag.messages > 0]
        missing = [lag for lag in behind if lag.partition not in ages]
        unknown += len(missing)
        if missing:
            continue
        age = max((ages[lag.partition] for lag in behind), default=0.0)
        oldest = max(oldest, age)
        labels = (("group", group), ("topic", topic))
        measurements.append(Measurement("ingest_kafka_consumer_lag_seconds", age, labels))
    return measurements, oldest, unknown


def _lag_check(
    group: str,
    partitions: Mapping[str, Sequence[int]],
    lags: Sequence[PartitionLag],
    ages: Mapping[TopicPartition, float],
    latency: float,
    thresholds: tuple[float | None, float | None],
) -> Check:
    measurements, oldest, unknown = lag_measurements(group, list(partitions), lags, ages)
    total = sum(lag.messages for lag in lags)
    parts = [f"group {group}: {total} message(s) behind on {len(lags)} partition(s)"]
    if total:
        parts.append(f"oldest unconsumed {oldest:.1f}s old")
    never = sum(1 for lag in lags if not lag.committed)
    if never:
        parts.append(f"{never} partition(s) never committed")
    if unknown:
        parts.append(f"age unknown on {unknown} partition(s)")
    status, reason = judge_age(oldest, thresholds)
    return Check(
        "consumer_lag",
        status,
        reason,
        detail="; ".join(parts),
        measurements=tuple(measurements),
        latency_seconds=latency,
    )
