"""Ingest events and the bus that carries them from the Kafka bridge to in-process consumers.

The bridge counts an event as *delivered* once :meth:`EventBus.publish` returns, and commits
its Kafka offset after that. A bus therefore decides the delivery guarantee: `CallbackBus`
returns only after its callback finished with the event, while `AsyncQueueBus` returns once the
event is queued in memory (an event still queued when the process dies is not redelivered).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "AsyncQueueBus",
    "CallbackBus",
    "EventBus",
    "IngestEvent",
    "decode_payload",
]


@dataclass(frozen=True, slots=True)
class IngestEvent:
    """One decoded Kafka record of an ingest topic.

    ``timestamp`` is the broker's record timestamp in Unix seconds; ``payload`` is the
    record's value decoded as a JSON object.
    """

    dimension: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp: float
    payload: Mapping[str, Any] = field(hash=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_payload(value: bytes | None) -> dict[str, Any] | None:
    """Return a record value as a JSON object, or ``None`` when it is not UTF-8 JSON object text.

    NaN and Infinity are rejected (they are not JSON), and so is nesting too deep to parse.
    """
    if value is None:
        return None
    try:
        payload = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return payload if isinstance(payload, dict) else None


class EventBus(Protocol):
    """Accept ingest events, in order; may block to push back on the producer."""

    async def publish(self, event: IngestEvent) -> None:
        """Take ``event``; return once it counts as delivered, raise if it cannot be."""
        ...


class AsyncQueueBus:
    """Hand events to in-process consumers through one bounded `asyncio.Queue`.

    ``publish`` waits while the queue is full, which stops the bridge from polling Kafka:
    backpressure instead of unbounded memory. Events come out in the order they went in.
    """

    def __init__(self, maxsize: int = 1_000) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be > 0: an unbounded queue has no backpressure")
        self._queue: asyncio.Queue[IngestEvent] = asyncio.Queue(maxsize)

    @property
    def maxsize(self) -> int:
        """Return how many events the queue holds before ``publish`` waits."""
        return self._queue.maxsize

    def qsize(self) -> int:
        """Return how many events are waiting for a consumer."""
        return self._queue.qsize()

    async def publish(self, event: IngestEvent) -> None:
        """Queue ``event``, waiting for room when the queue is full."""
        await self._queue.put(event)

    async def get(self) -> IngestEvent:
        """Return the next event, waiting until one arrives."""
        return await self._queue.get()

    def get_nowait(self) -> IngestEvent | None:
        """Return the next event, or ``None`` when none is waiting."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def subscribe(self) -> AsyncIterator[IngestEvent]:
        """Yield events as they arrive, forever (cancel the consuming task to stop)."""
        while True:
            yield await self._queue.get()


class CallbackBus:
    """Deliver each event by awaiting an async callback; its exception fails the delivery."""

    def __init__(self, callback: Callable[[IngestEvent], Awaitable[None]]) -> None:
        self._callback = callback

    async def publish(self, event: IngestEvent) -> None:
        """Await the callback with ``event``."""
        await self._callback(event)
