"""What the cache reports about itself: its shared counters, their metric families, outages.

The counters live in Redis and are shared by every daemon on the namespace; a refresh reads
them into a :class:`CacheStats`, which the metric families and the manifest publish. A Redis
outage makes every cache call fail: :class:`OutageLog` says so once per operation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from prometheus_client.core import Metric

from exporter.metricspec import MetricSpec, family, spec
from exporter.reasons import Reason

__all__ = ["COUNTERS", "METRIC_SPECS", "CacheStats", "OutageLog", "cache_families"]

_log = structlog.get_logger("exporter.cache")

#: The shared counters, as fields of the stats hash in Redis.
COUNTERS = ("hits", "misses", "sets", "evictions", "corrupt")
_SHARED = "Shared by every daemon on the namespace; read from Redis on each cache refresh."
_LABELS = "deployment namespace"

_HITS = "Cache lookups answered."
_MISSES = "Cache lookups without a usable value (disabled strategy: counted in-process)."
_EVICTIONS = "Oldest keys deleted to stay within max keys (expiry is not counted)."
_CORRUPT = "Stored values that were not valid JSON; each was deleted."
_MAX_KEYS = "Most keys the namespace may hold under the configured policy (0: disabled)."

#: Families of :func:`cache_families`, with the CacheStats field each publishes.
_PUBLISHED: tuple[tuple[str, MetricSpec], ...] = (
    ("hits", spec("ingest_cache_hits", "counter", _LABELS, f"{_HITS} {_SHARED}")),
    ("misses", spec("ingest_cache_misses", "counter", _LABELS, f"{_MISSES} {_SHARED}")),
    ("evictions", spec("ingest_cache_evictions", "counter", _LABELS, f"{_EVICTIONS} {_SHARED}")),
    ("corrupt", spec("ingest_cache_corrupt_values", "counter", _LABELS, f"{_CORRUPT} {_SHARED}")),
    ("keys", spec("ingest_cache_keys", "gauge", _LABELS, f"Live cached keys. {_SHARED}")),
    ("max_keys", spec("ingest_cache_max_keys", "gauge", _LABELS, _MAX_KEYS)),
)
METRIC_SPECS: tuple[MetricSpec, ...] = tuple(item for _, item in _PUBLISHED)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters and size of one cache namespace, as last read from Redis."""

    hits: int
    misses: int
    sets: int
    evictions: int
    corrupt: int
    keys: int
    max_keys: int
    ttl_seconds: int
    strategy: str


def cache_families(
    stats: CacheStats | None, *, deployment: str, namespace: str, max_keys: int
) -> Iterator[Metric]:
    """Yield the cache families from the last read ``stats`` (no sample before the first).

    The key limit is known from the policy, so it is published before any read.
    """
    labels = [deployment, namespace]
    for field, item in _PUBLISHED:
        published = family(item)
        if stats is not None:
            published.add_metric(labels, getattr(stats, field))
        elif field == "max_keys":
            published.add_metric(labels, max_keys)
        yield published


class OutageLog:
    """Log the first failure of each operation in an outage, and the recovery, once each.

    A dead Redis makes every cache call fail; one line per call would bury every other log.
    """

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._logged: set[str] = set()
        self._failures = 0
        self._since = 0.0

    def failed(self, operation: str, reason: Reason, event: str = "cache_unavailable") -> None:
        """Count a failure; log it if it is the operation's first in this outage."""
        self._failures += 1
        if operation in self._logged:
            return
        if not self._logged:
            self._since = time.monotonic()
        self._logged.add(operation)
        _log.warning(event, operation=operation, reason=reason.value, namespace=self._namespace)

    def recovered(self) -> None:
        """End the outage (if any) with one ``cache_recovered`` line."""
        if not self._logged:
            return
        _log.info(
            "cache_recovered",
            namespace=self._namespace,
            failed_operations=self._failures,
            outage_seconds=round(time.monotonic() - self._since, 3),
        )
        self._logged.clear()
        self._failures = 0
