"""Redis connector: one redis.asyncio client with a bounded connection pool."""

from __future__ import annotations

from typing import ClassVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from exporter.config import RedisSettings
from exporter.connectors.base import Connector
from exporter.errors import ConnectorError
from exporter.reasons import Reason

__all__ = ["RedisConnector"]


class RedisConnector(Connector):
    """Own the Redis client; connections are opened on first command and pooled."""

    kind: ClassVar[str] = "redis"

    def __init__(self, settings: RedisSettings, *, timeout: float, name: str = "redis") -> None:
        super().__init__(name)
        self.settings = settings
        self.timeout = timeout
        self._client: aioredis.Redis | None = None

    async def _open(self) -> None:
        # No client-side retries: the probe loop is the retry, and a retried command would
        # hide a failing server behind a slow success and stretch every probe's deadline.
        self._client = aioredis.Redis.from_url(
            self.settings.url.get_secret_value(),
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            max_connections=self.settings.max_connections,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
            client_name="ingest-exporter",
        )

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> aioredis.Redis:
        """Return the started client."""
        if self._client is None:
            raise ConnectorError(self.name, Reason.ERROR, "connector not started")
        return self._client
