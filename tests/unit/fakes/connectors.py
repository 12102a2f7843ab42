"""Connectors whose client is a fake: the real lifecycle, a scripted service behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from exporter.config import RedisCacheSettings, RedisSettings, TimescaleSettings
from exporter.connectors.redis import RedisConnector
from exporter.connectors.timescale import TimescaleConnector

from .kafka import FakeKafkaConnector

__all__ = ["FakeKafkaConnector", "FakeRedisConnector", "FakeTimescaleConnector"]


class FakeTimescaleConnector(TimescaleConnector):
    """A Timescale connector lending one fake connection as its pool, counting acquisitions."""

    def __init__(self, connection: Any, *, statement_timeout: float = 5.0) -> None:
        settings = TimescaleSettings(statement_timeout_seconds=statement_timeout)
        super().__init__(settings, connect_timeout=5.0)
        self.connection = connection
        self.acquired = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """Lend the connection."""
        self.acquired += 1
        yield self.connection


class FakeRedisConnector(RedisConnector):
    """A Redis connector holding a fake client."""

    def __init__(self, client: Any, cache: RedisCacheSettings | None = None) -> None:
        super().__init__(RedisSettings(cache=cache or RedisCacheSettings()), timeout=1.0)
        self.fake_client = client

    @property
    def client(self) -> Any:
        """Return the fake client (started or not)."""
        return self.fake_client
