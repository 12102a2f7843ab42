"""The Redis cache against the real Redis of ``make services`` (and a private one for outages)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from exporter import cache as cache_module
from exporter.cache import RedisCache
from exporter.config import RedisCacheSettings, RedisSettings
from exporter.connectors.redis import RedisConnector
from exporter.probes.base import Reason
from exporter.supervisor import Heartbeat

from .redis_instance import RedisServers

CacheFactory = Callable[..., RedisCache]
# Counts a namespace's keys in one atomic step (a SCAN loop is not a snapshot).
_COUNT = "return #redis.call('KEYS', ARGV[1])"


def _client(url: str, **options: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)


@pytest.fixture
async def client(service_env: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    """Return a client of the shared Redis."""
    redis = _client(service_env["REDIS_URL"])
    yield redis
    await redis.aclose()


@pytest.fixture
async def namespace(client: aioredis.Redis, unique: str) -> AsyncIterator[str]:
    """Return a namespace unique to the test; delete its keys (SCAN + DEL) afterwards."""
    name = f"test:cache:{unique}"
    yield name
    async for key in client.scan_iter(match=f"{name}:*", count=1000):
        await client.delete(key)


@pytest.fixture
def make_cache(client: aioredis.Redis, namespace: str) -> CacheFactory:
    """Build caches on the test's namespace; ``redis=`` picks another client."""

    def build(redis: Any = None, **policy: Any) -> RedisCache:
        # The cache is opt-in: these tests are about one that is on unless they say otherwise.
        settings = RedisCacheSettings(
            namespace=namespace, **({"strategy": "institutional"} | policy)
        )
        return RedisCache(redis or client, settings, deployment="test", timeout=2.0)

    return build


async def _value_keys(client: aioredis.Redis, namespace: str) -> set[str]:
    found = [k async for k in client.scan_iter(match=f"{namespace}:v:*", count=1000)]
    return {k.decode()[len(namespace) + 3 :] for k in found}


async def test_values_get_a_server_ttl_and_really_expire(
    client: aioredis.Redis, namespace: str, make_cache: CacheFactory
) -> None:
    """Every value key carries the policy TTL on the server and is gone after it."""
    cache = make_cache(strategy="bootstrap", ttl_seconds=1)
    assert await cache.set("k", {"a": 1})
    assert await client.ttl(f"{namespace}:v:k") == 1
    assert await cache.get("k") == {"a": 1}
    # Not a wait: the server's one-second TTL has to run out (and be seen to).
    await asyncio.sleep(2.1)
    assert await cache.get("k") is None
    assert await client.exists(f"{namespace}:v:k") == 0
    stats = await cache.stats()  # prunes the dead index member
    assert (stats.keys, stats.hits, stats.misses) == (0, 1, 1)
    assert await client.zcard(f"{namespace}:_index") == 0


async def test_key_count_drops_to_the_live_keys_right_after_a_mass_expiry(
    client: aioredis.Redis,
    namespace: str,
    make_cache: CacheFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Expired keys beyond one refresh's prune limit are not reported as live keys."""
    monkeypatch.setattr(cache_module, "_PRUNE_PER_REFRESH", 10)
    cache = make_cache(strategy="bootstrap", ttl_seconds=1)
    for i in range(50):
        assert await cache.set(f"old{i}", i)
    # Not a wait: the server's one-second TTL has to run out; touching the keys would expire
    # them early and change what the index sees.
    await asyncio.sleep(2.1)
    assert await cache.set("fresh", 1)  # prunes at most 32 of the 50 dead members
    stats = await cache.stats()
    assert stats.keys == 1
    assert await client.zcard(f"{namespace}:_index") > 1, "dead members were left to prune"
    for _ in range(5):
        await cache.stats()
    assert await client.zcard(f"{namespace}:_index") == 1


async def test_max_keys_evicts_the_oldest_first(
    client: aioredis.Redis, namespace: str, make_cache: CacheFactory
) -> None:
    """1,000 writes under max_keys 100 leave exactly the newest 100 value keys."""
    cache = make_cache(strategy="institutional", max_keys=100)
    for i in range(1000):
        assert await cache.set(f"k{i}", i)
    assert await _value_keys(client, namespace) == {f"k{i}" for i in range(900, 1000)}
    assert await cache.get("k0") is None
    assert await cache.get("k999") == 999
    stats = await cache.stats()
    assert (stats.keys, stats.evictions, stats.sets) == (100, 900, 1000)
    assert await client.zcard(f"{namespace}:_index") == 100


async def test_index_score_is_server_time_and_member_is_the_key(
    client: aioredis.Redis, namespace: str, make_cache: CacheFactory
) -> None:
    """The index holds the namespace-relative key scored by the write's unix time."""
    cache = make_cache()
    before = time.time()
    assert await cache.set("a:b", [1])
    entries: list[tuple[bytes, float]] = await client.zrange(  # type: ignore[assignment]
        f"{namespace}:_index", 0, -1, withscores=True
    )  # redis-py types zrange for every option combination; withscores gives pairs
    [(member, score)] = entries
    assert member == b"a:b"
    assert before - 1 < score < time.time() + 1
    assert await client.hget(f"{namespace}:_stats", "sets") == b"1"


async def test_two_daemons_share_the_counters(
    service_env: dict[str, str], make_cache: CacheFactory
) -> None:
    """A write by one instance is a hit for the other; both read the same counters."""
    other = _client(service_env["REDIS_URL"])
    try:
        first, second = make_cache(), make_cache(redis=other)
        assert await first.set("shared", "v")
        assert await second.get("shared") == "v"
        assert await first.get("absent") is None
        a, b = await first.refresh(), await second.refresh()
        assert a == b
        assert (a.hits, a.misses, a.sets) == (1, 1, 1)
    finally:
        await other.aclose()


async def test_a_planted_non_json_value_is_a_counted_miss(
    client: aioredis.Redis, namespace: str, make_cache: CacheFactory
) -> None:
    """A value SET behind the cache's back is a miss, deleted, counted corrupt, never raised."""
    cache = make_cache()
    await client.set(f"{namespace}:v:planted", b"\xff not json secret-ish")
    await client.hset(f"{namespace}:v:wrongtype", "f", "v")
    with capture_logs() as logs:
        assert await cache.get("planted") is None
        assert await cache.get("wrongtype") is None
    assert [(e["event"], e["key"]) for e in logs] == [
        ("cache_value_corrupt", "planted"),
        ("cache_value_corrupt", "wrongtype"),
    ]
    assert "secret-ish" not in repr(logs)
    assert await client.exists(f"{namespace}:v:planted", f"{namespace}:v:wrongtype") == 0
    stats = await cache.stats()
    assert (stats.corrupt, stats.misses, stats.hits) == (2, 2, 0)


async def test_invalidate_removes_only_the_prefix(
    client: aioredis.Redis, namespace: str, make_cache: CacheFactory
) -> None:
    """invalidate(prefix) deletes that prefix's values and index members, glob chars literal."""
    cache = make_cache()
    for key in ("user:1", "user:2", "users", "order:1", "x*1", "xy"):
        assert await cache.set(key, key)
    assert await cache.invalidate("user:") == 2
    assert await cache.invalidate("x*") == 1
    remaining = {"users", "order:1", "xy"}
    assert await _value_keys(client, namespace) == remaining
    members: list[bytes] = await client.zrange(f"{namespace}:_index", 0, -1)  # type: ignore[assignment]
    assert {m.decode() for m in members} == remaining


async def test_disabled_policy_writes_nothing(
    client: aioredis.Redis, namespace: str, make_cache: CacheFactory
) -> None:
    """With the disabled strategy the namespace stays empty whatever the callers do."""
    cache = make_cache(strategy="disabled")
    for i in range(50):
        assert await cache.set(f"k{i}", i) is False
        assert await cache.get(f"k{i}") is None
    assert await client.eval(_COUNT, 0, f"{namespace}:*") == 0
    assert (await cache.refresh()).misses == 50


async def test_concurrent_writers_never_exceed_max_keys(
    service_env: dict[str, str], client: aioredis.Redis, namespace: str, make_cache: CacheFactory
) -> None:
    """500 concurrent sets from two clients never push the namespace past max_keys."""
    other = _client(service_env["REDIS_URL"])
    first, second = make_cache(max_keys=50), make_cache(redis=other, max_keys=50)
    seen: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            seen.append(int(await client.eval(_COUNT, 0, f"{namespace}:v:*")))

    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.gather(
            *(first.set(f"a{i}", i) for i in range(250)),
            *(second.set(f"b{i}", i) for i in range(250)),
        )
    finally:
        done.set()
        await sampler
        await other.aclose()
    assert all(results)
    assert len(seen) > 1
    assert max(seen) <= 50
    assert len(await _value_keys(client, namespace)) == 50
    stats = await first.stats()
    assert (stats.keys, stats.evictions, stats.sets) == (50, 450, 500)


async def test_cache_over_a_connector_respects_its_pool(
    settings_factory: Callable[..., Any], namespace: str
) -> None:
    """Hundreds of concurrent calls through a 4-connection connector all succeed."""
    settings = settings_factory().deployments[0].redis
    assert isinstance(settings, RedisSettings)
    async with RedisConnector(settings, timeout=2.0) as connector:
        cache = RedisCache(
            connector,
            RedisCacheSettings(strategy="institutional", namespace=namespace),
            deployment="t",
            timeout=2.0,
        )
        assert all(await asyncio.gather(*(cache.set(f"k{i}", i) for i in range(300))))
        assert await asyncio.gather(*(cache.get(f"k{i}") for i in range(300))) == list(range(300))


@pytest.mark.parametrize("target", ["blackhole", "closed"])
async def test_unreachable_redis_is_a_fast_miss(
    target: str, blackhole: int, namespace: str
) -> None:
    """A black-holed or refusing Redis yields misses/False within the timeout, logged once."""
    if target == "closed":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    else:
        port = blackhole
    redis = _client(f"redis://127.0.0.1:{port}/0")
    cache = RedisCache(
        redis,
        RedisCacheSettings(strategy="institutional", namespace=namespace),
        deployment="t",
        timeout=0.3,
    )
    try:
        with capture_logs() as logs:
            t0 = time.perf_counter()
            assert await cache.get("k") is None
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(100):
                assert await cache.set(f"k{i}", i) is False
                assert await cache.get(f"k{i}") is None
            rest = time.perf_counter() - t0
            assert await cache.invalidate_configured() == 0
    finally:
        await redis.aclose()
    assert first < 1.0
    assert rest < 0.5  # inside the retry window: no I/O at all
    expected = "timeout" if target == "blackhole" else "refused"
    assert [(e["event"], e["reason"]) for e in logs] == [("cache_unavailable", expected)]


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServers]:
    """Return private Redis servers (not the shared one); stop them after the test."""
    binary = os.environ.get("INGEST_REDIS_SERVER") or shutil.which("redis-server")
    assert binary, "INGEST_REDIS_SERVER is not set and redis-server is not on PATH"
    servers = RedisServers(binary, tmp_path)
    yield servers
    await servers.close()


async def test_outage_then_recovery_on_a_private_redis(private_redis: RedisServers) -> None:
    """Killing Redis turns calls into logged-once misses; a restart (scripts gone) heals it."""
    port = await private_redis.start()
    redis = _client(f"redis://127.0.0.1:{port}/0")
    cache = RedisCache(
        redis,
        RedisCacheSettings(strategy="institutional", namespace="private"),
        deployment="t",
        retry_after=0.0,
    )
    try:
        assert await cache.set("k", 1)
        await private_redis.stop(port)
        with capture_logs() as logs:
            for _ in range(50):
                assert await cache.get("k") is None
                assert await cache.set("k", 2) is False
            await private_redis.start(port=port)
            assert await cache.set("k", 3)  # EVALSHA -> NOSCRIPT -> reloaded by redis-py
        assert await cache.get("k") == 3
    finally:
        await redis.aclose()
    # The first call meets the pooled connection the server closed; later ones are refused.
    events = [(e["event"], e.get("operation"), e.get("reason")) for e in logs]
    assert events == [
        ("cache_unavailable", "get", events[0][2]),
        ("cache_unavailable", "set", "refused"),
        ("cache_recovered", None, None),
    ]
    assert events[0][2] in {r.value for r in Reason}
    assert logs[2]["failed_operations"] == 100


async def test_run_invalidates_configured_prefixes_and_publishes(
    client: aioredis.Redis, namespace: str
) -> None:
    """The supervised loop invalidates the configured prefixes, refreshes and marks ready."""
    settings = RedisCacheSettings(
        strategy="institutional", namespace=namespace, invalidate_prefixes=("stale:",)
    )
    writer = RedisCache(
        client, RedisCacheSettings(strategy="institutional", namespace=namespace), deployment="t"
    )
    for key in ("stale:1", "stale:2", "fresh"):
        assert await writer.set(key, key)
    touched: list[int] = []
    cache = RedisCache(
        client, settings, deployment="t", interval=0.05, on_change=lambda: touched.append(1)
    )
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    task = asyncio.create_task(cache.run(Heartbeat(loop.time, on_ready=lambda _: ready.set())))
    try:
        await asyncio.wait_for(ready.wait(), timeout=5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await _value_keys(client, namespace) == {"fresh"}
    assert touched
    values = {s.name: s.value for f in cache.metric_families() for s in f.samples}
    assert values["ingest_cache_keys"] == 1
    assert values["ingest_cache_max_keys"] == 50_000


async def test_one_set_costs_well_under_a_millisecond_on_loopback(
    make_cache: CacheFactory,
) -> None:
    """The median set() (one EVALSHA round trip) on loopback stays far below a scrape budget."""
    cache = make_cache(max_keys=500)
    timings = []
    for i in range(1000):
        t0 = time.perf_counter()
        assert await cache.set(f"k{i}", {"i": i, "payload": "x" * 100})
        timings.append(time.perf_counter() - t0)
    median = statistics.median(timings)
    assert median < 0.005, f"median set() took {median * 1e3:.3f} ms"
