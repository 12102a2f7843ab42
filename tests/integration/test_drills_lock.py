"""The drill lock and records in the real Redis: one holder, fencing tokens, the last 50."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from exporter.drills.lock import DrillLock
from exporter.drills.record import DrillResult, Timestamps
from exporter.drills.store import KEEP, DrillStore
from exporter.errors import DrillBusy
from tests.unit.drill_samples import T0, kill_snapshot


@pytest.fixture
async def client(service_env: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    """A Redis client of the shared Redis."""
    redis = aioredis.Redis.from_url(service_env["REDIS_URL"])
    yield redis
    await redis.aclose()


async def test_one_holder_per_label_with_growing_fencing_tokens(
    client: aioredis.Redis, unique: str
) -> None:
    """The second taker is busy; after release the next holder gets a larger token."""
    first = DrillLock(client, label=f"lock-{unique}", ttl=5)
    token = await first.acquire()
    with pytest.raises(DrillBusy):
        await DrillLock(client, label=f"lock-{unique}", ttl=5).acquire()
    assert await first.renew()
    await first.release()
    second = DrillLock(client, label=f"lock-{unique}", ttl=5)
    assert await second.acquire() == token + 1
    await first.release()  # not the holder any more: changes nothing
    with pytest.raises(DrillBusy):
        await DrillLock(client, label=f"lock-{unique}", ttl=5).acquire()
    await second.release()


async def test_a_stalled_holder_finds_its_lock_lost(client: aioredis.Redis, unique: str) -> None:
    """Past the TTL another holder takes the label; the stale one's renewal says lost."""
    stale = DrillLock(client, label=f"lock-{unique}", ttl=1)
    await stale.acquire()
    await asyncio.sleep(1.2)  # the TTL itself is what is under test: it must pass for real
    fresh = DrillLock(client, label=f"lock-{unique}", ttl=5)
    assert await fresh.acquire() == (stale.token or 0) + 1
    assert not await stale.renew()
    assert stale.lost.is_set()
    await asyncio.wait_for(stale.keep(), timeout=2)  # returns at once: the lock is lost
    await fresh.release()


async def test_records_keep_the_newest_fifty(client: aioredis.Redis, unique: str) -> None:
    """Records are newest first, trimmed to 50; get, latest and running markers work."""
    await client.delete("ingest:drills:records")
    store = DrillStore(client)
    label = f"lbl-{unique}"
    for n in range(KEEP + 3):
        snapshot = kill_snapshot(
            drill_id=f"20261204T153000Z-{n:08x}",
            label=label,
            timestamps=Timestamps(started=T0 + n),
            result=DrillResult.OK if n % 2 else DrillResult.FAIL,
        )
        await store.mark_running({"drill_id": snapshot.drill_id, "phase": "arm"}, ttl=5)
        await store.add(snapshot)
    records = await store.records()
    assert len(records) == KEEP
    assert records[0].drill_id == f"20261204T153000Z-{KEEP + 2:08x}"
    assert await store.get("20261204T153000Z-00000000") is None  # trimmed away
    latest = await store.latest(deployment="eu-primary", label=label, scenario="kill")
    assert latest == records[0]
    assert await store.running() == []  # each add cleared its drill's marker
    await store.mark_running({"drill_id": "20261204T160000Z-aaaaaaaa", "phase": "await"}, ttl=5)
    assert await store.running_one("20261204T160000Z-aaaaaaaa") == {
        "drill_id": "20261204T160000Z-aaaaaaaa",
        "phase": "await",
    }
    await client.delete("ingest:drills:running:20261204T160000Z-aaaaaaaa")
