"""The Kafka probe's own consumer and producer, and the canary round trip that uses both.

aiokafka clients must reach a broker in ``start()`` and hold one connection per broker they
talk to, so the probe creates each client on first use, keeps it across runs (a run costs
requests, never connections) and throws both away after any failure: the next run
bootstraps afresh instead of reusing a client whose connections or metadata went bad.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Collection, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from exporter._cleanup import in_background
from exporter.connectors.kafka import KafkaConnector
from exporter.probes.base import Check, Measurement

__all__ = ["CANARY_PARTITION", "ProbeClients", "canary_round_trip", "focus", "idle", "track"]

#: The canary always uses this partition, so its consumer seeks without a group.
CANARY_PARTITION = 0

_log = structlog.get_logger(__name__)

_CANARY_PREFIX = b"ingest-exporter-canary:"
_CLOSE_TIMEOUT = 2.0


class ProbeClients:
    """A group-less consumer and a producer, created lazily and reset after failures."""

    def __init__(self, kafka: KafkaConnector) -> None:
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._universe: frozenset[TopicPartition] = frozenset()
        # Cleanup that must outlive a cancelled run (see in_background); close() waits for it.
        self._closing: set[asyncio.Task[Any]] = set()

    def expect(self, partitions: Collection[TopicPartition]) -> None:
        """Declare every partition this run may read (see :func:`track`)."""
        self._universe = frozenset(partitions)

    async def consumer(self) -> AIOKafkaConsumer:
        """Return the started consumer (no group: it only reads offsets and seeks)."""
        consumer = await self._started_consumer()
        if self._universe:
            track(consumer, self._universe)
        return consumer

    async def _started_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **self._kafka.client_options(),
                group_id=None,
                enable_auto_commit=False,
                # A committed offset already deleted by retention reads from the log start,
                # which is then the oldest message the group has yet to consume.
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
                max_partition_fetch_bytes=64 * 1024,
                fetch_max_bytes=1024 * 1024,
            )
            await self._start(consumer)
            self._consumer = consumer
        return self._consumer

    async def producer(self) -> AIOKafkaProducer:
        """Return the started producer (acks=all: the canary takes the durable path)."""
        if self._producer is None:
            producer = AIOKafkaProducer(
                **self._kafka.client_options(),
                acks="all",
                linger_ms=0,
                enable_idempotence=False,
            )
            await self._start(producer)
            self._producer = producer
        return self._producer

    async def _start(self, client: Any) -> None:
        """Start ``client``; a cancelled caller lets start() finish, then stops the client.

        start() itself is never cancelled: aiokafka leaks its bootstrap connection when the
        metadata request of start() is cancelled (only errors close it), which a probe cut
        off by its timeout would otherwise do once per slow run.
        """
        starting = asyncio.ensure_future(client.start())
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # A start() ends within its request timeouts (one per bootstrap server, one for
            # the metadata), then the client is stopped.
            starts = 1 + len(self._kafka.settings.bootstrap_servers)
            bound = _CLOSE_TIMEOUT + starts * self._kafka.timeout
            self.in_background(_stop_after(starting, client), timeout=bound)
            raise
        except Exception:
            # A half-started client holds sockets and tasks; stop it before giving up.
            await asyncio.wait({self.in_background(client.stop())})
            raise

    def in_background(
        self,
        cleanup: Awaitable[object],
        *,
        event: str = "kafka_probe_client_close",
        timeout: float = _CLOSE_TIMEOUT,
    ) -> asyncio.Task[Any]:
        """Run ``cleanup`` in a task nobody cancels (bounded, logged); :meth:`close` waits for it.

        A client stopped halfway keeps its sockets, so closing must not be cut short by
        the probe's timeout; a cancelled run leaves it running here instead. Waiting for
        the task with ``asyncio.wait`` never cancels it.
        """
        # Debug: a failing close follows a failure the probe reports as a check already.
        task = in_background(cleanup, timeout=timeout, event=event, level=logging.DEBUG)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def reset(self) -> None:
        """Close both clients (bounded, failures logged); the next use creates new ones."""
        if closing := self.discard():
            await asyncio.wait(closing)

    def discard(self) -> list[asyncio.Task[Any]]:
        """Start closing both clients in the background; return the closing tasks."""
        clients = [c for c in (self._consumer, self._producer) if c is not None]
        self._consumer = self._producer = None
        return [self.in_background(client.stop()) for client in clients]

    async def close(self) -> None:
        """Reset, and wait (bounded) for clients abandoned while starting to close too."""
        await self.reset()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=_CLOSE_TIMEOUT * 2)


async def _stop_after(starting: asyncio.Future[None], client: Any) -> None:
    """Let an abandoned ``start()`` end, whatever its outcome, then stop the client."""
    # wait() returns however the start ends and raises nothing of it: nothing is swallowed.
    await asyncio.wait({starting})
    if not starting.cancelled() and (error := starting.exception()) is not None:
        _log.debug("kafka_probe_client_start_abandoned", error_type=type(error).__name__)
    async with asyncio.timeout(_CLOSE_TIMEOUT):
        await client.stop()


def track(consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition]) -> None:
    """Assign every partition the probe may read, all paused, unless already assigned.

    The assignment decides which topics the consumer keeps metadata for: changing it each
    run (lag partitions, then the canary's) would refetch metadata every time, and an
    offset query for a topic just dropped from it waits a retry backoff (~200 ms).
    """
    wanted = set(partitions)
    if consumer.assignment() != wanted:
        consumer.assign(sorted(wanted))
    consumer.pause(*wanted)


def focus(consumer: AIOKafkaConsumer, positions: Mapping[TopicPartition, int]) -> None:
    """Fetch only ``positions``' partitions, from those offsets; pause every other one."""
    assigned = consumer.assignment()
    if not set(positions) <= assigned:
        assigned = assigned | set(positions)
        consumer.assign(sorted(assigned))
    consumer.pause(*(assigned - set(positions)))
    consumer.resume(*positions)
    for partition, offset in positions.items():
        consumer.seek(partition, offset)


def idle(consumer: AIOKafkaConsumer) -> None:
    """Pause every assigned partition: no background fetching until the next focus."""
    consumer.pause(*consumer.assignment())


async def canary_round_trip(clients: ProbeClients, topic: str) -> Check:
    """Produce a uniquely tagged message and read it back; time produce-to-receipt.

    Clients are created before the clock starts, so a first run's bootstrap is not counted.
    The caller bounds the whole round trip with its deadline.
    """
    consumer = await clients.consumer()
    producer = await clients.producer()
    partition = TopicPartition(topic, CANARY_PARTITION)
    payload = _CANARY_PREFIX + uuid.uuid4().hex.encode()
    t0 = time.perf_counter()
    sent = await producer.send_and_wait(topic, value=payload, partition=CANARY_PARTITION)
    focus(consumer, {partition: sent.offset})
    try:
        while True:
            batch = await consumer.getmany(partition, timeout_ms=500)
            for record in batch.get(partition, ()):
                if record.value == payload:
                    latency = time.perf_counter() - t0
                    return Check(
                        "canary",
                        detail=f"round trip {latency * 1000:.1f} ms through partition "
                        f"{CANARY_PARTITION} of {topic}",
                        measurements=(Measurement("ingest_kafka_canary_latency_seconds", latency),),
                        latency_seconds=latency,
                    )
    finally:
        idle(consumer)
