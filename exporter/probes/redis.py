"""Built-in Redis checks."""

from __future__ import annotations

import time

from exporter.connectors.redis import RedisConnector
from exporter.probes.base import Check
from exporter.telemetry.spec import MetricSpec

__all__ = ["METRIC_SPECS", "RedisProbe"]


#: Gauges this probe publishes (through its measurements).
METRIC_SPECS: tuple[MetricSpec, ...] = ()


class RedisProbe:
    """PING the server and time it."""

    connector: str = "redis"
    name: str = "ping"

    def __init__(self, redis: RedisConnector, *, timeout: float | None = None) -> None:
        self._redis = redis
        self.timeout = timeout

    async def __call__(self) -> list[Check]:
        """Run the checks."""
        t0 = time.perf_counter()
        await self._redis.client.ping()
        return [Check("ping", latency_seconds=time.perf_counter() - t0)]
