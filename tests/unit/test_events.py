from __future__ import annotations

import asyncio
import dataclasses

import pytest

from exporter import events as events_module
from exporter.errors import DeliveryError
from exporter.events import (
    AsyncQueueBus,
    CallbackBus,
    EventBus,
    IngestEvent,
    decode_payload,
)


def event(offset: int, payload: dict[str, object] | None = None) -> IngestEvent:
    """Return an event of partition 0 at ``offset``."""
    return IngestEvent(
        dimension="trades",
        topic="t.trades",
        partition=0,
        offset=offset,
        key=None,
        timestamp=1_700_000_000.0 + offset,
        payload=payload if payload is not None else {"seq": offset},
    )


def test_ingest_event_is_frozen_and_hashable_despite_its_payload() -> None:
    """Events are immutable and hash by their coordinates (the payload is a dict)."""
    first = event(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.offset = 2  # type: ignore[misc]
    assert hash(first) == hash(event(1, {"other": True}))
    assert first == event(1)
    assert first != event(1, {"other": True})


async def test_queue_bus_keeps_order_and_pushes_back_when_full() -> None:
    """``publish`` waits while the queue is full and events come out in publish order."""
    bus = AsyncQueueBus(maxsize=2)
    await bus.publish(event(0))
    await bus.publish(event(1))
    blocked = asyncio.get_running_loop().create_task(bus.publish(event(2)))
    # Not a wait: nothing signals "still blocked"; give a wrong publish room to complete.
    await asyncio.sleep(0.01)
    assert not blocked.done(), "a full queue must make the publisher wait"
    assert bus.qsize() == bus.maxsize == 2
    assert (await bus.get()).offset == 0
    await asyncio.wait_for(blocked, 1)
    received = []
    async for item in bus.subscribe():
        received.append(item.offset)
        if len(received) == 2:
            break
    assert received == [1, 2]
    assert bus.get_nowait() is None


def test_queue_bus_refuses_an_unbounded_queue() -> None:
    """An unbounded queue would have no backpressure, so it is rejected."""
    with pytest.raises(ValueError, match="backpressure"):
        AsyncQueueBus(maxsize=0)


async def test_callback_bus_awaits_the_callback_and_propagates_its_error() -> None:
    """The callback sees each event; its exception is the delivery failure."""
    seen: list[int] = []

    async def callback(item: IngestEvent) -> None:
        if item.offset == 1:
            raise RuntimeError("boom")
        seen.append(item.offset)

    bus: EventBus = CallbackBus(callback)
    await bus.publish(event(0))
    with pytest.raises(RuntimeError, match="boom"):
        await bus.publish(event(1))
    assert seen == [0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 1, "b": [1, 2]}', {"a": 1, "b": [1, 2]}),
        ('{"name": "Zoë"}'.encode(), {"name": "Zoë"}),
        (b"\xff\xfe{}", None),  # not UTF-8
        ('{"a": 1}'.encode("utf-16"), None),  # JSON, but not UTF-8
        (b"{not json", None),
        (b"[1, 2]", None),  # JSON, but not an object
        (b'"text"', None),
        (b'{"a": NaN}', None),  # Python's json accepts NaN; JSON does not
        (b"[" * 100_000 + b"]" * 100_000, None),  # too deep to parse
        (b"", None),
        (None, None),  # a tombstone
    ],
)
def test_decode_payload_accepts_only_utf8_json_objects(
    raw: bytes | None, expected: dict[str, object] | None
) -> None:
    """Only UTF-8 text holding a JSON object decodes; everything else is ``None``."""
    assert decode_payload(raw) == expected


def test_delivery_error_names_the_record_but_not_the_payload() -> None:
    """The error message names topic, partition, offset and cause type, never the payload."""
    error = DeliveryError(event(7, {"card": "secret-4111"}), RuntimeError("secret-4111"))
    assert str(error) == "event bus failed on t.trades[0]@7 (RuntimeError)"
    assert (error.topic, error.partition, error.offset) == ("t.trades", 0, 7)
    assert error.retriable


def test_public_names_are_exported() -> None:
    """``__all__`` lists exactly the public names the module defines."""
    here = events_module.__name__
    defined = {
        name
        for name, obj in vars(events_module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == here
    }
    assert set(events_module.__all__) == defined
