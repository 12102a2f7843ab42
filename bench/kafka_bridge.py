"""The Kafka ingest bridge's throughput against a bare aiokafka consumer on the same topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.report import render_table
from exporter.bridge import KafkaIngestBridge
from exporter.config import DimensionSettings, KafkaSettings, TopicBinding
from exporter.connectors.kafka import KafkaConnector
from exporter.events import CallbackBus, IngestEvent
from exporter.supervisor import Heartbeat

__all__ = ["BridgeThroughput", "measure_bridge"]

PARTITIONS = 3
BARE, BRIDGE = "bare aiokafka consumer", "bridge"
MAX_RECORDS = 500  # the bridge's default batch; the bare consumer asks for the same


@dataclass
class BridgeThroughput:
    """Events per second of each consumer, one figure per round."""

    events: int
    rates: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        """Return the median events/s of ``name``."""
        return statistics.median(self.rates[name]) if self.rates.get(name) else float("nan")

    def ratio(self) -> float:
        """Return the bridge's median rate over the bare consumer's."""
        return self.median(BRIDGE) / self.median(BARE)

    def render(self) -> str:
        """Return the markdown table."""
        rows = [
            (
                name,
                f"{self.median(name):,.0f}",
                ", ".join(f"{r:,.0f}" for r in rates),
            )
            for name, rates in self.rates.items()
        ]
        return render_table(["consumer", "events/s (median)", "rounds"], rows)


class _Clock:
    """Record when the first and the ``target``-th event arrived; wake the waiter at the last."""

    def __init__(self, target: int) -> None:
        self.target, self.count = target, 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    def tick(self, n: int = 1) -> None:
        """Count ``n`` events received now."""
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.count += n
        if self.count >= self.target and not self.done.is_set():
            self.last = now
            self.done.set()

    @property
    def rate(self) -> float:
        """Return events/s from the first event to the last, so group joins do not count."""
        return (self.count - 1) / (self.last - self.first) if self.last > self.first else 0.0


async def _bare(bootstrap: str, topic: str, clock: _Clock) -> None:
    """Consume ``topic`` with a bare aiokafka consumer in a group of its own."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not clock.done.is_set():
            batch = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            for records in batch.values():
                # Decoded like the bridge does, so both pay for JSON: the difference is the bridge.
                for record in records:
                    json.loads(record.value)
                clock.tick(len(records))
    finally:
        await consumer.stop()


async def _bridge(bootstrap: str, topic: str, clock: _Clock) -> None:
    """Consume ``topic`` with the project's bridge (in its own group) until ``clock`` is done."""
    settings = KafkaSettings(
        bootstrap_servers=(bootstrap,),
        ingest_topics=(TopicBinding(dimension="bench", topic=topic),),
        consumer_group=f"bench-bridge-{uuid.uuid4().hex[:8]}",
        client_id="bench-bridge",
    )

    async def deliver(_: IngestEvent) -> None:
        clock.tick()

    bridge = KafkaIngestBridge(
        settings,
        (DimensionSettings(name="bench"),),
        CallbackBus(deliver),
        deployment="bench",
        connector=KafkaConnector(settings, timeout=10.0),
        max_records=MAX_RECORDS,
    )
    task = asyncio.get_running_loop().create_task(bridge.run(Heartbeat(time.monotonic)))
    try:
        await clock.done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _produce(bootstrap: str, topic: str, events: int) -> None:
    """Write ``events`` small JSON events spread over the partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    try:
        pending = []
        for seq in range(events):
            value = json.dumps({"seq": seq, "symbol": "EURUSD", "price": 1.0 + seq * 1e-6})
            pending.append(await producer.send(topic, value.encode(), partition=seq % PARTITIONS))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def measure_bridge(
    bootstrap: str, *, events: int, rounds: int, deadline: float
) -> BridgeThroughput:
    """Fill a topic of the bench's own, then read it whole with each consumer per round."""
    topic = f"bench.bridge.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    result = BridgeThroughput(events)
    consumers: dict[str, Callable[[str, str, _Clock], Awaitable[None]]] = {
        BARE: _bare,
        BRIDGE: _bridge,
    }
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        await _produce(bootstrap, topic, events)
        order = list(consumers)
        shuffle = random.Random(13)
        for _ in range(rounds):
            shuffle.shuffle(order)
            for name in order:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return result
                clock = _Clock(events)
                # Each run is bounded: a stalled consumer ends the round instead of the bench.
                async with asyncio.timeout(remaining):
                    await consumers[name](bootstrap, topic, clock)
                result.rates.setdefault(name, []).append(clock.rate)
    finally:
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    return result
