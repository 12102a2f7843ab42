"""Built-in Redis checks: PING, replication role, memory and the cache namespace's size.

One PING (timed on its own, so its latency is the round trip and nothing else), then one
pipelined round trip for ``INFO replication``, ``INFO memory``, ``INFO stats`` and the
cache index's ``ZCARD``. Each pipelined reply is judged on its own: a server that refuses
one command (an ACL without ``+info``) leaves that check ``unknown`` with reason
``permission`` while the others still report. A connection failure anywhere raises, and
the runner turns it into one ``down`` result with a classified reason (``refused``,
``timeout``, ``auth`` for WRONGPASS/NOAUTH, ``permission`` for NOPERM).

Reasons chosen for the judged states, from the bounded set:

- a replica whose link to its primary is down answers reads with data that no longer
  changes: ``degraded`` / ``stale`` (not ``down``: the cache still serves);
- used memory above 90% of a configured ``maxmemory``, or more keys in the cache
  namespace than the policy allows: ``degraded`` / ``capacity``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from exporter.config import RedisCacheSettings
from exporter.connectors.redis import RedisConnector
from exporter.metricspec import REFRESHED, MetricSpec, spec
from exporter.probes.base import Check, Measurement, Status
from exporter.reasons import Reason, classify

__all__ = [
    "MEMORY_DEGRADED_RATIO",
    "METRIC_SPECS",
    "RedisProbe",
    "cache_check",
    "cache_index_key",
    "memory_check",
    "role_check",
]

#: Used memory above this share of ``maxmemory`` makes the ``memory`` check degraded.
MEMORY_DEGRADED_RATIO = 0.9

#: Gauges (and one mirrored server counter) this probe publishes through its measurements.
METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_redis_connected_replicas",
        "gauge",
        "deployment",
        f"Replicas connected to the Redis primary (INFO connected_slaves). {REFRESHED}",
    ),
    spec(
        "ingest_redis_master_link_up",
        "gauge",
        "deployment",
        f"1 when the Redis replica's link to its primary is up (INFO master_link_status); "
        f"absent on a primary. {REFRESHED}",
    ),
    spec(
        "ingest_redis_master_link_down_seconds",
        "gauge",
        "deployment",
        f"Seconds the Redis replica's link to its primary has been down, 0 while up "
        f"(INFO master_link_down_since_seconds); absent when never synced. {REFRESHED}",
    ),
    spec(
        "ingest_redis_memory_used_bytes",
        "gauge",
        "deployment",
        f"Memory allocated by Redis (INFO used_memory). {REFRESHED}",
    ),
    spec(
        "ingest_redis_memory_max_bytes",
        "gauge",
        "deployment",
        f"Redis maxmemory limit, 0 when unlimited (INFO maxmemory). {REFRESHED}",
    ),
    spec(
        "ingest_redis_evicted_keys",
        "counter",
        "deployment",
        f"Keys evicted by Redis since the server started (INFO evicted_keys, mirrored; "
        f"resets when Redis restarts). {REFRESHED}",
    ),
)

# The cache (exporter/cache.py) indexes its keys in one sorted set, so the key count is one
# O(1) ZCARD; KEYS/SCAN over the namespace would block or crawl a large server.
_INDEX_SUFFIX = ":_index"


def cache_index_key(namespace: str) -> str:
    """Return the sorted set in which the cache indexes the keys of ``namespace``."""
    return namespace + _INDEX_SUFFIX


def _number(info: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = info.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def role_check(info: Mapping[str, Any]) -> Check:
    """Judge ``INFO replication``: a primary counts replicas, a replica reports its link."""
    role = str(info.get("role", "unknown"))
    if role == "master":
        replicas = _number(info, "connected_slaves")
        return Check(
            "role",
            detail=f"primary with {replicas:g} connected replica(s)",
            measurements=(Measurement("ingest_redis_connected_replicas", replicas),),
        )
    if role != "slave":
        return Check("role", Status.UNKNOWN, Reason.PROTOCOL, f"unexpected role {role!r}")
    link_up = info.get("master_link_status") == "up"
    measurements = [Measurement("ingest_redis_master_link_up", 1.0 if link_up else 0.0)]
    if link_up:
        measurements.append(Measurement("ingest_redis_master_link_down_seconds", 0.0))
        last_io = _number(info, "master_last_io_seconds_ago", -1.0)
        return Check(
            "role",
            detail=f"replica, link to primary up (last I/O {last_io:g}s ago)",
            measurements=tuple(measurements),
        )
    # -1 means the replica never completed a sync, so the outage has no known start.
    down_for = _number(info, "master_link_down_since_seconds", -1.0)
    if down_for >= 0:
        measurements.append(Measurement("ingest_redis_master_link_down_seconds", down_for))
        since = f"for {down_for:g}s"
    else:
        since = "since start (never synced)"
    return Check(
        "role",
        Status.DEGRADED,
        Reason.STALE,
        f"replica, link to primary down {since}: serving stale data",
        measurements=tuple(measurements),
    )


def memory_check(memory: Mapping[str, Any], stats: Mapping[str, Any] | None) -> Check:
    """Judge ``INFO memory`` (and mirror ``evicted_keys`` from ``INFO stats`` when given)."""
    used = _number(memory, "used_memory")
    limit = _number(memory, "maxmemory")
    measurements = [
        Measurement("ingest_redis_memory_used_bytes", used),
        Measurement("ingest_redis_memory_max_bytes", limit),
    ]
    if stats is not None:
        evicted = _number(stats, "evicted_keys")
        measurements.append(Measurement("ingest_redis_evicted_keys", evicted))
    policy = memory.get("maxmemory_policy", "?")
    if limit <= 0:
        return Check(
            "memory",
            detail=f"{used:.0f} bytes used, no maxmemory",
            measurements=tuple(measurements),
        )
    share = used / limit
    detail = f"{share:.0%} of maxmemory used (policy {policy})"
    if share > MEMORY_DEGRADED_RATIO:
        return Check(
            "memory", Status.DEGRADED, Reason.CAPACITY, detail, measurements=tuple(measurements)
        )
    return Check("memory", detail=detail, measurements=tuple(measurements))


def cache_check(keys: int, max_keys: int) -> Check:
    """Judge the cache namespace's key count against the policy's maximum.

    The numbers themselves are published by the cache (``ingest_cache_keys``); this check
    only turns them into a status.
    """
    detail = f"{keys} of at most {max_keys} keys"
    if keys > max_keys:
        return Check("cache_keys", Status.DEGRADED, Reason.CAPACITY, detail)
    return Check("cache_keys", detail=detail)


def _unanswered(name: str, exc: BaseException) -> Check:
    # The server answered with an error: Redis is up, but this aspect is not known.
    return Check(name, Status.UNKNOWN, classify(exc), f"{type(exc).__name__}: {exc}")


class RedisProbe:
    """PING the server, then judge replication, memory and the cache in one round trip."""

    connector: str = "redis"
    name: str = "ping"

    def __init__(
        self,
        redis: RedisConnector,
        *,
        timeout: float | None = None,
        cache: RedisCacheSettings | None = None,
    ) -> None:
        self._redis = redis
        self.timeout = timeout
        self._cache = redis.settings.cache if cache is None else cache

    @property
    def checks(self) -> tuple[str, ...]:
        """Return the checks every run reports (the runner fills in those it cannot run)."""
        return ("ping", "role", "memory", *(("cache_keys",) if self._cache.enabled else ()))

    async def __call__(self) -> list[Check]:
        """Run the checks; a connection failure raises (the runner classifies it)."""
        client = self._redis.client
        t0 = time.perf_counter()
        await client.ping()
        checks = [Check("ping", latency_seconds=time.perf_counter() - t0)]
        cached = self._cache.enabled
        t1 = time.perf_counter()
        async with client.pipeline(transaction=False) as pipe:
            pipe.info("replication")
            pipe.info("memory")
            pipe.info("stats")
            if cached:
                pipe.zcard(cache_index_key(self._cache.namespace))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        latency = time.perf_counter() - t1
        replication, memory, stats = replies[:3]
        if isinstance(replication, BaseException):
            checks.append(_unanswered("role", replication))
        else:
            checks.append(role_check(replication))
        if isinstance(memory, BaseException):
            checks.append(_unanswered("memory", memory))
        else:
            # Evictions are a detail of the memory check; a refused INFO stats only hides them.
            counters = None if isinstance(stats, BaseException) else stats
            checks.append(memory_check(memory, counters))
        if cached:
            keys = replies[3]
            if isinstance(keys, BaseException):
                checks.append(_unanswered("cache_keys", keys))
            else:
                checks.append(cache_check(int(keys), self._cache.effective_max_keys))
        # Each pipelined check took the one shared round trip.
        return [checks[0], *(dataclasses.replace(c, latency_seconds=latency) for c in checks[1:])]
