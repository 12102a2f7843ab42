"""A JSON cache in Redis whose policy (TTL, key cap, counters) is enforced by the server.

Key layout, shared by every daemon on the namespace (the Redis probe reads it; keep it):

* ``<namespace>:v:<key>`` holds the JSON value, always written with ``SET ... EX <ttl>``;
* ``<namespace>:_index`` is a sorted set, member ``<key>`` (namespace-relative), score the
  Redis server time (unix seconds) of the member's last write; eviction pops the lowest scores;
* ``<namespace>:_stats`` is a hash of counters ``hits misses sets evictions corrupt``.

A write, its index update, the pruning of index members whose value already expired and the
eviction of the oldest keys run in ONE Lua script, so concurrent writers in several daemons
cannot push the namespace past ``max_keys``; scores come from Redis's clock, not the daemons'.
A lookup validates the JSON on the server too, so a corrupt value is counted as a miss and
dropped in the same atomic step and the shared counters never go backwards. The scripts touch
keys derived from the namespace, so on Redis Cluster the namespace needs a hash tag
(``{ingest:cache}``) to keep every key in one slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
import structlog
from prometheus_client.core import Metric
from redis.exceptions import RedisError

from exporter._cache_scripts import (
    GET_SCRIPT,
    REPAIR_SCRIPT,
    SET_SCRIPT,
    STATS_SCRIPT,
    decode,
    encode,
    glob_escape,
)
from exporter._cache_stats import COUNTERS, METRIC_SPECS, CacheStats, OutageLog, cache_families
from exporter.config import RedisCacheSettings
from exporter.connectors.redis import RedisConnector
from exporter.errors import ConnectorError
from exporter.reasons import Reason, classify

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from exporter.supervisor import Heartbeat

__all__ = ["METRIC_SPECS", "CacheStats", "RedisCache"]

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")
_Scripts = dict[str, "AsyncScript"]

#: Failures meaning "Redis is unusable right now" (the builtin TimeoutError is an OSError).
_UNAVAILABLE = (RedisError, OSError, ConnectorError)
#: Old index members a write checks for an expired value; more would slow every write.
_PRUNE_PER_SET = 32
#: Old index members a refresh checks and drops when dead, so an idle index shrinks too.
_PRUNE_PER_REFRESH = 1000
_SCAN_COUNT = 500


class RedisCache:
    """Cache JSON values in Redis under a policy every daemon on the namespace shares.

    ``get``/``set`` never raise for Redis trouble: an outage is a miss (``None``) or an
    unstored value (``False``), logged once per operation per outage. After a failure the
    calls skip Redis for ``retry_after`` seconds, so a black-holed server costs one
    ``timeout`` now and then, not one per call; :meth:`refresh` always tries, and a success
    ends the window. Calls that failed or were skipped are not in the shared counters.
    With the ``disabled`` strategy nothing touches Redis: ``get`` misses (counted in-process
    only, published as ``misses``), ``set`` stores nothing and returns False.

    Args:
        redis: A redis.asyncio client, or the deployment's connector (its client is looked
            up per call, so the cache may be built before the connector starts).
        settings: The cache policy.
        deployment: The deployment name (a metric label).
        on_change: Called when a refresh changed the published numbers (``state.touch``).
        interval: Seconds between refreshes in :meth:`run`.
        timeout: Bound on each Redis round trip, in seconds.
        retry_after: Seconds to skip Redis after a failure.
        max_in_flight: Concurrent cache commands. The default leaves one pooled connection
            free (for the probe): redis-py refuses commands beyond ``max_connections``.
    """

    def __init__(
        self,
        redis: aioredis.Redis | RedisConnector,
        settings: RedisCacheSettings,
        *,
        deployment: str,
        on_change: Callable[[], None] | None = None,
        interval: float = 15.0,
        timeout: float = 0.5,
        retry_after: float = 1.0,
        max_in_flight: int | None = None,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self.deployment = deployment
        self.namespace = settings.namespace
        self._on_change = on_change
        self.interval = interval
        self._timeout = timeout
        self._retry_after = retry_after
        self._max_in_flight = max_in_flight
        self._ttl = settings.effective_ttl_seconds
        self._max_keys = settings.effective_max_keys
        self._prefix = f"{self.namespace}:v:"
        self._index = f"{self.namespace}:_index"
        self._stats_key = f"{self.namespace}:_stats"
        self._outage = OutageLog(self.namespace)
        self._retry_at = 0.0
        self._bound: aioredis.Redis | None = None
        self._scripts: _Scripts = {}
        self._slots = asyncio.Semaphore(max_in_flight or 1)
        self._local_misses = 0
        self._pending_invalidation = bool(settings.invalidate_prefixes)
        self._last: CacheStats | None = None
        self._refreshed_at: float | None = None

    @property
    def enabled(self) -> bool:
        """Tell whether the policy caches anything at all."""
        return self._settings.enabled

    @property
    def last_stats(self) -> CacheStats | None:
        """Return the numbers of the last successful refresh (None before the first)."""
        return self._last

    async def get(self, key: str) -> Any | None:
        """Return the cached value of ``key``; None on a miss, a corrupt value or an outage."""
        if not self.enabled:
            self._local_misses += 1
            return None
        keys = self._keys(key)
        ok, raw = await self._attempt("get", lambda c, s: s["get"](keys=keys, args=[key], client=c))
        if not ok or raw is None:
            return None
        if isinstance(raw, int):  # the script found no JSON; it deleted and counted the value
            _log.warning("cache_value_corrupt", key=key, namespace=self.namespace)
            return None
        try:
            return decode(raw)
        except (ValueError, RecursionError):
            # Redis's cjson accepts a little more than JSON (hex numbers, nan): repair here.
            _log.warning("cache_value_corrupt", key=key, namespace=self.namespace)
            await self._attempt(
                "get", lambda c, s: s["repair"](keys=keys, args=[key, raw], client=c)
            )
            return None

    async def set(self, key: str, value: Any) -> bool:
        """Store ``value`` as JSON with the policy's TTL; return whether Redis took it.

        Raises:
            TypeError: ``value`` cannot be encoded as JSON (a caller bug, not an outage).
            ValueError: ``value`` holds NaN or an infinity, which JSON cannot carry.
        """
        if not self.enabled:
            return False
        keys = self._keys(key)
        args: list[bytes | str | int] = [encode(value), self._ttl, self._max_keys, key]
        args += [self._prefix, _PRUNE_PER_SET]
        ok, _ = await self._attempt("set", lambda c, s: s["set"](keys=keys, args=args, client=c))
        return ok

    async def invalidate(self, prefix: str, *, progress: Callable[[], None] | None = None) -> int:
        """Delete every cached key starting with ``prefix`` (SCAN, not KEYS); return the count.

        ``progress`` is called after each SCAN round trip: SCAN walks the whole database, so a
        large one takes many rounds (a supervised caller passes its heartbeat's ``beat``).

        Raises:
            ConnectorError: Redis failed part-way (retriable; logged once per outage).
        """
        if not self.enabled:
            return 0
        pattern = glob_escape(self._prefix + prefix) + "*"
        skip = len(self._prefix.encode())
        deleted, cursor = 0, 0
        try:
            client = self._client()
            self._scripts_for(client)  # sizes the in-flight limit to the client's pool
            while True:
                async with self._slots, asyncio.timeout(self._timeout):
                    cursor, found = await client.scan(cursor, match=pattern, count=_SCAN_COUNT)
                if progress is not None:
                    progress()
                if found:
                    members = [
                        k[skip:] if isinstance(k, bytes) else k[len(self._prefix) :] for k in found
                    ]
                    async with self._slots, asyncio.timeout(self._timeout):
                        pipe = client.pipeline(transaction=True)
                        pipe.delete(*found)
                        pipe.zrem(self._index, *members)
                        dropped, _ = await pipe.execute()
                    deleted += int(dropped)
                if cursor == 0:
                    break
        except _UNAVAILABLE as exc:
            reason = self._failed("invalidate", exc)
            raise ConnectorError("redis-cache", reason, f"{deleted} key(s) deleted") from exc
        self._succeeded()
        _log.info("cache_invalidated", namespace=self.namespace, prefix=prefix, keys=deleted)
        return deleted

    async def invalidate_configured(self, *, progress: Callable[[], None] | None = None) -> int:
        """Invalidate the configured prefixes; :meth:`run` does it until it succeeds once.

        Never raises: a failure is logged once per outage and retried by :meth:`run`.
        ``progress`` is passed on to :meth:`invalidate`.
        """
        total = 0
        for prefix in self._settings.invalidate_prefixes:
            try:
                total += await self.invalidate(prefix, progress=progress)
            except ConnectorError:
                return total
        self._pending_invalidation = False
        return total

    async def stats(self) -> CacheStats:
        """Read the shared counters and the live key count (pruning expired index members).

        Raises:
            ConnectorError: Redis is unavailable (retriable).
        """
        if not self.enabled:
            return CacheStats(0, self._local_misses, 0, 0, 0, 0, 0, 0, self._settings.strategy)
        try:
            client = self._client()
            scripts = self._scripts_for(client)
            async with self._slots, asyncio.timeout(self._timeout):
                keys, flat = await scripts["stats"](
                    keys=[self._index, self._stats_key],
                    args=[self._prefix, self._ttl, _PRUNE_PER_REFRESH],
                    client=client,
                )
        except _UNAVAILABLE as exc:
            self._retry_at = asyncio.get_running_loop().time() + self._retry_after
            raise ConnectorError("redis-cache", classify(exc)) from exc
        self._succeeded()
        fields = {
            (k.decode() if isinstance(k, bytes) else k): int(v)
            for k, v in zip(flat[::2], flat[1::2], strict=True)
        }
        counters = {name: fields.get(name, 0) for name in COUNTERS}
        return CacheStats(
            **counters,
            keys=int(keys),
            max_keys=self._max_keys,
            ttl_seconds=self._ttl,
            strategy=self._settings.strategy,
        )

    async def refresh(self) -> CacheStats:
        """Read :meth:`stats`, keep it for the metrics and call ``on_change`` if it moved.

        Raises:
            ConnectorError: Redis is unavailable: the numbers read from it are withdrawn
                (absent until the next successful read, never stale).
        """
        try:
            stats = await self.stats()
        except ConnectorError:
            if self._last is not None:
                self._last = None
                if self._on_change is not None:
                    self._on_change()
            raise
        changed = stats != self._last
        self._last = stats
        self._refreshed_at = time.time()
        if changed and self._on_change is not None:
            self._on_change()
        return stats

    async def run(self, heartbeat: Heartbeat) -> None:
        """Refresh every ``interval`` seconds forever (a supervised task; ready each round).

        Configured invalidations are retried each round until one pass succeeds, so a Redis
        that was down at start is still cleaned when it comes back.
        """
        while True:
            if self._pending_invalidation:
                # Beat per SCAN round: a long sweep is progress, not a hang to be restarted.
                await self.invalidate_configured(progress=heartbeat.beat)
            try:
                await self.refresh()
            except ConnectorError as exc:
                self._outage.failed("refresh", exc.reason, event="cache_refresh_failed")
                # Neither up nor restarted: the loop itself is fine, Redis is not.
                heartbeat.failing()
            else:
                heartbeat.ready()
            await asyncio.sleep(self.interval)

    def metric_families(self) -> Iterable[Metric]:
        """Yield the cache families from the last refresh (no I/O)."""
        return cache_families(
            self._last,
            deployment=self.deployment,
            namespace=self.namespace,
            max_keys=self._max_keys,
        )

    def live_metadata(self) -> dict[str, Any]:
        """Return the last read counters (None before a read), for the manifest.

        The policy itself is in the manifest already (from the settings); this is what only
        Redis knows.
        """
        counters = None
        if self._last is not None:
            counters = {k: getattr(self._last, k) for k in (*COUNTERS, "keys")}
        return {"counters": counters, "refreshed_at": self._refreshed_at}

    def _keys(self, key: str) -> list[str]:
        return [self._prefix + key, self._index, self._stats_key]

    def _client(self) -> aioredis.Redis:
        redis = self._redis
        return redis.client if isinstance(redis, RedisConnector) else redis

    def _scripts_for(self, client: aioredis.Redis) -> _Scripts:
        if client is not self._bound:  # first use, or a restarted connector's new client
            self._bound = client
            sources = {"get": GET_SCRIPT, "set": SET_SCRIPT, "repair": REPAIR_SCRIPT}
            sources["stats"] = STATS_SCRIPT
            self._scripts = {name: client.register_script(src) for name, src in sources.items()}
            pool = int(getattr(client.connection_pool, "max_connections", 2**31))
            self._slots = asyncio.Semaphore(self._max_in_flight or max(1, min(pool - 1, 64)))
        return self._scripts

    async def _attempt(
        self, operation: str, call: Callable[[aioredis.Redis, _Scripts], Awaitable[_T]]
    ) -> tuple[bool, _T | None]:
        """Run one script call; return (False, None) instead of raising when Redis fails."""
        if asyncio.get_running_loop().time() < self._retry_at:
            return False, None  # inside the retry window: this outage is already logged
        try:
            client = self._client()
            scripts = self._scripts_for(client)
            # Waiting for a slot is local queueing, not Redis being slow: it is not timed.
            async with self._slots:
                async with asyncio.timeout(self._timeout):
                    result = await call(client, scripts)
        except _UNAVAILABLE as exc:
            self._failed(operation, exc)
            return False, None
        self._succeeded()
        return True, result

    def _failed(self, operation: str, exc: BaseException) -> Reason:
        reason = classify(exc)
        self._retry_at = asyncio.get_running_loop().time() + self._retry_after
        self._outage.failed(operation, reason)
        return reason

    def _succeeded(self) -> None:
        self._retry_at = 0.0
        self._outage.recovered()
