"""TimescaleDB/PostgreSQL connector: a small asyncpg pool shared by every probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg

from exporter.config import TimescaleSettings
from exporter.connectors.base import Connector
from exporter.errors import ConnectorError
from exporter.reasons import Reason

__all__ = ["TimescaleConnector"]


class TimescaleConnector(Connector):
    """Own the asyncpg pool; its size is the connector's whole connection budget."""

    kind: ClassVar[str] = "timescale"

    def __init__(
        self, settings: TimescaleSettings, *, connect_timeout: float, name: str = "timescale"
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.connect_timeout = connect_timeout
        self._pool: Any = None

    async def _open(self) -> None:
        statement_ms = int(self.settings.statement_timeout_seconds * 1000)
        # min_size=0: creating the pool opens no connection, so start() works while the
        # database is down; connections are made on first acquire and reused afterwards.
        self._pool = await asyncpg.create_pool(
            dsn=self.settings.url.get_secret_value(),
            min_size=0,
            max_size=self.settings.pool_max_size,
            max_inactive_connection_lifetime=300.0,
            timeout=self.connect_timeout,
            command_timeout=self.settings.statement_timeout_seconds,
            server_settings={
                "application_name": self.settings.application_name,
                "statement_timeout": str(statement_ms),
                "lock_timeout": str(statement_ms),
                "idle_in_transaction_session_timeout": str(statement_ms * 4),
            },
        )

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """Lend a pooled connection (asyncpg ``Connection``) bounded by the connect timeout."""
        pool = self._pool
        if pool is None:
            raise ConnectorError(self.name, Reason.ERROR, "connector not started")
        connection = await pool.acquire(timeout=self.connect_timeout)
        try:
            yield connection
        finally:
            # asyncpg shields the release (it resets a connection whose query was just
            # cancelled), but when the probe's timeout cancels this task meanwhile, a failed
            # release (that reset timing out on a slow server) is an exception nobody
            # retrieves. Run it as a task of our own whose outcome is always read.
            release = asyncio.ensure_future(pool.release(connection))
            release.add_done_callback(_consume_outcome)
            await asyncio.shield(release)


def _consume_outcome(task: asyncio.Future[None]) -> None:
    """Mark a release's failure as seen; asyncpg has already terminated that connection."""
    if not task.cancelled():
        task.exception()
