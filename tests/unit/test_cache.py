"""Unit tests of the Redis cache: policy, disabled mode, outage handling, metrics (no Redis)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from prometheus_client.core import Metric
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from exporter import _cache_scripts as _cache
from exporter import cache as cache_module
from exporter.cache import METRIC_SPECS, CacheStats, RedisCache
from exporter.config import CACHE_PRESETS, RedisCacheSettings, RedisSettings
from exporter.connectors.redis import RedisConnector
from exporter.errors import ConnectorError
from exporter.supervisor import Heartbeat

_NAMES = {
    _cache.GET_SCRIPT: "get",
    _cache.SET_SCRIPT: "set",
    _cache.REPAIR_SCRIPT: "repair",
    _cache.STATS_SCRIPT: "stats",
}


class FakeRedis:
    """Stand in for redis.asyncio.Redis: scripts answer from ``replies`` or raise ``fail``."""

    def __init__(self, pool_size: int = 4) -> None:
        self.connection_pool = SimpleNamespace(max_connections=pool_size)
        self.calls: list[tuple[str, list[Any], list[Any]]] = []
        self.replies: dict[str, Any] = {"get": None, "set": 0, "repair": 1, "stats": [0, []]}
        self.fail: BaseException | None = None

    def register_script(self, source: str) -> Any:
        """Return a callable standing in for the registered script."""
        name = _NAMES[source]

        async def call(keys: list[Any], args: list[Any], client: Any) -> Any:
            assert client is self
            self.calls.append((name, keys, args))
            if self.fail is not None:
                raise self.fail
            return self.replies[name]

        return call

    async def scan(self, cursor: int, **options: Any) -> tuple[int, list[bytes]]:
        """Find nothing (or fail with ``fail``)."""
        self.calls.append(("scan", [], [cursor]))
        if self.fail is not None:
            raise self.fail
        return 0, []


class Untouchable:
    """A client that fails the test if the cache touches it at all."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"disabled cache touched Redis ({name})")


def _make(client: Any, *, retry_after: float = 0.0, **policy: Any) -> tuple[RedisCache, list[int]]:
    touched: list[int] = []
    # The cache is opt-in; these tests are about a cache that is on unless they say otherwise.
    settings = RedisCacheSettings(namespace="ns", **({"strategy": "institutional"} | policy))
    cache = RedisCache(
        cast("aioredis.Redis", client),
        settings,
        deployment="eu",
        on_change=lambda: touched.append(1),
        retry_after=retry_after,
    )
    return cache, touched


def _samples(families: Iterable[Metric]) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in families:
        for s in family.samples:
            assert s.labels == {"deployment": "eu", "namespace": "ns"}
            out[s.name] = s.value
    return out


@pytest.mark.parametrize("strategy", sorted(CACHE_PRESETS))
def test_presets_resolve_to_their_ttl_and_key_cap(strategy: str) -> None:
    """Each preset gives its table TTL and cap; disabled resolves to zero, never unbounded."""
    policy = RedisCacheSettings(strategy=strategy)
    assert (policy.effective_ttl_seconds, policy.effective_max_keys) == CACHE_PRESETS[strategy]
    assert policy.enabled is (strategy != "disabled")


def test_overrides_win_over_the_preset_except_when_disabled() -> None:
    """Explicit ttl/max_keys override a preset; the disabled strategy ignores overrides."""
    policy = RedisCacheSettings(strategy="bootstrap", ttl_seconds=7, max_keys=9)
    assert (policy.effective_ttl_seconds, policy.effective_max_keys) == (7, 9)
    off = RedisCacheSettings(strategy="disabled", ttl_seconds=7, max_keys=9)
    assert (off.effective_ttl_seconds, off.effective_max_keys) == (0, 0)


async def test_disabled_cache_never_touches_redis_and_counts_misses_locally() -> None:
    """Disabled: get misses, set returns False, invalidate is a no-op, stats come from memory."""
    cache, touched = _make(Untouchable(), strategy="disabled", invalidate_prefixes=("a",))
    assert await cache.get("k") is None
    assert await cache.get("k") is None
    assert await cache.set("k", {"v": 1}) is False
    assert await cache.invalidate("k") == 0
    assert await cache.invalidate_configured() == 0
    stats = await cache.refresh()
    assert stats == CacheStats(0, 2, 0, 0, 0, 0, 0, 0, "disabled")
    assert touched == [1]
    values = _samples(cache.metric_families())
    assert values["ingest_cache_misses_total"] == 2
    assert values["ingest_cache_max_keys"] == 0


async def test_set_sends_policy_and_key_layout_to_the_script() -> None:
    """set() passes the value key, index, stats hash, TTL, cap and compact JSON to one script."""
    fake = FakeRedis()
    cache, _ = _make(fake, strategy="bootstrap", max_keys=10)
    assert await cache.set("a:1", {"x": [1, "é"]}) is True
    name, keys, args = fake.calls[-1]
    assert name == "set"
    assert keys == ["ns:v:a:1", "ns:_index", "ns:_stats"]
    assert args[:5] == ['{"x":[1,"é"]}'.encode(), 60, 10, "a:1", "ns:v:"]


async def test_set_refuses_values_json_cannot_carry() -> None:
    """A caller bug (NaN, an object) raises at once and sends nothing to Redis."""
    fake = FakeRedis()
    cache, _ = _make(fake)
    with pytest.raises(ValueError, match="JSON"):
        await cache.set("k", math.nan)
    with pytest.raises(TypeError):
        await cache.set("k", object())
    assert fake.calls == []


async def test_get_decodes_hits_and_misses() -> None:
    """A JSON reply decodes to the value; a nil reply is a miss."""
    fake = FakeRedis()
    cache, _ = _make(fake)
    fake.replies["get"] = b'{"a":[1,2]}'
    assert await cache.get("k") == {"a": [1, 2]}
    fake.replies["get"] = None
    assert await cache.get("k") is None


@pytest.mark.parametrize("reply", [1, b"0x10", b"NaN"])
async def test_corrupt_values_are_a_logged_miss_without_the_value(reply: Any) -> None:
    """A corrupt value is a miss, logged by key only; values the server accepted get repaired."""
    fake = FakeRedis()
    cache, _ = _make(fake)
    fake.replies["get"] = reply
    with capture_logs() as logs:
        assert await cache.get("user:7") is None
    assert [e["event"] for e in logs] == ["cache_value_corrupt"]
    assert logs[0]["key"] == "user:7"
    assert all(str(reply) not in str(v) for v in logs[0].values())
    repaired = [c for c in fake.calls if c[0] == "repair"]
    assert repaired == (
        [] if reply == 1 else [("repair", cache._keys("user:7"), ["user:7", reply])]
    )


async def test_outage_is_logged_once_per_operation_and_recovery_once() -> None:
    """Many failing calls log one line per operation; the first success logs one recovery."""
    fake = FakeRedis()
    cache, _ = _make(fake)
    fake.fail = RedisConnectionError("Error 111 connecting. Connection refused.")
    with capture_logs() as logs:
        for _ in range(20):
            assert await cache.get("k") is None
            assert await cache.set("k", 1) is False
        fake.fail = None
        assert await cache.set("k", 1) is True
        assert await cache.set("k", 1) is True
        fake.fail = TimeoutError()
        assert await cache.get("k") is None
    events = [(e["event"], e.get("operation"), e.get("reason")) for e in logs]
    assert events == [
        ("cache_unavailable", "get", "refused"),
        ("cache_unavailable", "set", "refused"),
        ("cache_recovered", None, None),
        ("cache_unavailable", "get", "timeout"),
    ]
    assert logs[2]["failed_operations"] == 40


async def test_calls_skip_redis_during_the_retry_window() -> None:
    """After a failure, calls fail fast without I/O until retry_after passes or a refresh works."""
    fake = FakeRedis()
    cache, _ = _make(fake, retry_after=60.0)
    fake.fail = OSError("unreachable")
    assert await cache.get("k") is None
    fake.fail = None
    assert await cache.get("k") is None
    assert await cache.set("k", 1) is False
    assert len(fake.calls) == 1
    await cache.refresh()  # the refresh always tries, and its success ends the window
    assert await cache.set("k", 1) is True


async def test_unstarted_connector_is_an_outage_not_a_crash() -> None:
    """A cache over a connector that is not started misses instead of raising."""
    connector = RedisConnector(RedisSettings(), timeout=1.0)
    cache = RedisCache(
        connector, RedisCacheSettings(strategy="bootstrap"), deployment="eu", retry_after=0.0
    )
    with capture_logs() as logs:
        assert await cache.get("k") is None
        assert await cache.set("k", 1) is False
    assert [e["reason"] for e in logs] == ["error", "error"]
    with pytest.raises(ConnectorError):
        await cache.stats()


async def test_refresh_publishes_last_stats_and_touches_only_on_change() -> None:
    """Metrics show the last read numbers; on_change fires only when they moved."""
    fake = FakeRedis()
    cache, touched = _make(fake, strategy="bootstrap")
    assert _samples(cache.metric_families()) == {"ingest_cache_max_keys": 1000}
    fake.replies["stats"] = [3, [b"hits", b"5", b"misses", b"2", b"evictions", b"1"]]
    await cache.refresh()
    await cache.refresh()
    fake.replies["stats"] = [4, [b"hits", b"6", b"misses", b"2", b"corrupt", b"1"]]
    await cache.refresh()
    assert touched == [1, 1]
    assert _samples(cache.metric_families()) == {
        "ingest_cache_hits_total": 6,
        "ingest_cache_misses_total": 2,
        "ingest_cache_evictions_total": 0,
        "ingest_cache_corrupt_values_total": 1,
        "ingest_cache_keys": 4,
        "ingest_cache_max_keys": 1000,
    }
    meta = cache.live_metadata()
    assert meta["counters"] == {
        "hits": 6, "misses": 2, "sets": 0, "evictions": 0, "corrupt": 1, "keys": 4,
    }  # fmt: skip
    assert isinstance(meta["refreshed_at"], float)


async def test_run_keeps_going_and_logs_refresh_failures_once() -> None:
    """The refresh loop reports failing, never ready, each round while Redis fails; logs once."""
    fake = FakeRedis()
    fake.fail = RedisConnectionError("Connection refused")
    settings = RedisCacheSettings(
        strategy="institutional", namespace="ns", invalidate_prefixes=("p:",)
    )
    cache = RedisCache(cast("aioredis.Redis", fake), settings, deployment="eu", interval=0.01)
    loop = asyncio.get_running_loop()
    failings: list[float] = []
    five = asyncio.Event()

    def failing(beat: Heartbeat) -> None:
        failings.append(beat.last_beat)
        if len(failings) == 5:
            five.set()

    marked_ready: list[float] = []
    heartbeat = Heartbeat(
        loop.time, on_ready=lambda b: marked_ready.append(b.last_beat), on_failing=failing
    )
    with capture_logs() as logs:
        task = asyncio.create_task(cache.run(heartbeat))
        await asyncio.wait_for(five.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert marked_ready == []
    failed = [e for e in logs if e["event"] == "cache_refresh_failed"]
    assert len(failed) == 1
    assert failed[0]["reason"] == "refused"
    assert [e["operation"] for e in logs] == ["invalidate", "refresh"]


async def test_invalidation_beats_the_heartbeat_every_scan_round() -> None:
    """A sweep needing many SCAN rounds reports each one, so the supervisor sees no hang."""

    class ManyRounds(FakeRedis):
        async def scan(self, cursor: int, **options: Any) -> tuple[int, list[bytes]]:
            self.calls.append(("scan", [], [cursor]))
            return (cursor + 1) % 5, []  # five round trips: cursors 1, 2, 3, 4, then 0

    cache, _ = _make(ManyRounds(), invalidate_prefixes=("p:",))
    rounds: list[int] = []
    assert await cache.invalidate("p:", progress=lambda: rounds.append(1)) == 0
    assert len(rounds) == 5

    ticks: list[int] = []

    def clock() -> float:
        ticks.append(1)
        return float(len(ticks))

    ready = asyncio.Event()
    heartbeat = Heartbeat(clock, on_ready=lambda _: ready.set())
    task = asyncio.create_task(cache.run(heartbeat))
    await asyncio.wait_for(ready.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(ticks) == 1 + 5 + 1, "created, one beat per SCAN round, then ready"


def test_metric_specs_follow_the_naming_rules() -> None:
    """The six families use the ingest_ prefix, _total counters and the two bounded labels."""
    exposed = {s.exposed_name: s.type for s in METRIC_SPECS}
    assert exposed == {
        "ingest_cache_hits_total": "counter",
        "ingest_cache_misses_total": "counter",
        "ingest_cache_evictions_total": "counter",
        "ingest_cache_corrupt_values_total": "counter",
        "ingest_cache_keys": "gauge",
        "ingest_cache_max_keys": "gauge",
    }
    assert all(s.labels == ("deployment", "namespace") for s in METRIC_SPECS)


def test_glob_escape_makes_scan_patterns_literal() -> None:
    """SCAN metacharacters in a namespace or prefix match only themselves."""
    assert _cache.glob_escape(r"a*b?[c]\d") == r"a\*b\?\[c\]\\d"


def test_json_codec_is_strict_and_compact() -> None:
    """The codec writes compact UTF-8 and refuses NaN both ways, like the JSON spec."""
    assert _cache.encode({"k": ["é", 1.5]}) == '{"k":["é",1.5]}'.encode()
    assert _cache.decode(b'{"k":null}') == {"k": None}
    with pytest.raises(ValueError, match="JSON"):
        _cache.decode(b"[NaN]")


def test_public_names() -> None:
    """__all__ names the cache, its stats record and its metric specs."""
    assert sorted(cache_module.__all__) == ["CacheStats", "METRIC_SPECS", "RedisCache"]
