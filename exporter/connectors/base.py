"""The connector lifecycle, written once: idempotent start/stop and ``async with``."""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from types import TracebackType
from typing import ClassVar, Self

import structlog

from exporter._cleanup import shielded

__all__ = ["Connector", "ConnectorState"]

_log = structlog.get_logger(__name__)


class ConnectorState(enum.StrEnum):
    """Lifecycle state of a connector."""

    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class Connector(ABC):
    """A managed client of one service; subclasses implement ``_open`` and ``_close``.

    ``start()`` never needs the service to be up: clients are created lazily or with pools
    that connect on first use, so the daemon starts and serves while dependencies are down.
    """

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ConnectorState.NEW
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the client; calling it again is a no-op."""
        async with self._lock:
            if self.state is ConnectorState.STARTED:
                return
            await self._open()
            self.state = ConnectorState.STARTED
            _log.debug("connector_started", connector=self.name, kind=self.kind)

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the client within ``timeout``; calling it again is a no-op."""
        async with self._lock:
            if self.state is not ConnectorState.STARTED:
                self.state = ConnectorState.STOPPED
                return
            self.state = ConnectorState.STOPPED
            # Finished even if our caller is cancelled; connector_stop_timed_out and
            # connector_stop_failed are logged there.
            closed = await shielded(
                self._close(), timeout=timeout, event="connector_stop", connector=self.name
            )
            if closed:
                _log.debug("connector_stopped", connector=self.name, kind=self.kind)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @abstractmethod
    async def _open(self) -> None:
        """Create the client without requiring the service to answer."""

    @abstractmethod
    async def _close(self) -> None:
        """Close the client and release its connections."""
