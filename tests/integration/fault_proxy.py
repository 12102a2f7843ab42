"""A loopback TCP proxy in front of one service, with faults to inject: the fault matrix's knife.

Modes: ``pass`` forwards; ``refuse`` closes the listener (connects are refused) and resets
every open connection; ``blackhole`` accepts and holds connections but moves no byte either
way until the mode changes (a network partition: what was sent arrives afterwards); ``slow``
forwards every chunk ``delay`` seconds late. :attr:`FaultProxy.upstream` counts the open
connections to the service: the server-side connections of whatever talks through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Literal

from .net import free_port

__all__ = ["TASK_NAME", "FaultProxy", "Mode"]

#: The name of every task the proxy runs.
TASK_NAME = "fault-proxy"

Mode = Literal["pass", "refuse", "blackhole", "slow"]
_CHUNK = 65536


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:upstream_port`` unless told otherwise."""

    def __init__(self, upstream_port: int, *, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.mode: Mode = "pass"
        self.delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Open connections to the service.
        self.upstream = 0

    @property
    def sockets(self) -> int:
        """Return the file descriptors the proxy itself holds (listener and both sides)."""
        return len(self._writers) + (1 if self._server is not None else 0)

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True, backlog=512
            )

    async def set_mode(self, mode: Mode, *, delay: float = 0.0) -> None:
        """Switch to ``mode`` (``delay`` is for ``slow``)."""
        self.mode, self.delay = mode, delay
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "refuse":
            await self._close_listener()
            for writer in list(self._writers):
                _reset(writer)
        else:
            await self.start()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        await self._close_listener()
        for writer in list(self._writers):
            _reset(writer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name(TASK_NAME)  # so measurements can leave the proxy's own tasks out
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port
                )
            except OSError:
                _reset(writer)  # the service is gone: the client sees a reset, as from a dead host
                return
            self._writers.add(up_writer)
            self.upstream += 1
            try:
                await asyncio.gather(
                    asyncio.create_task(self._pump(reader, up_writer), name=TASK_NAME),
                    asyncio.create_task(self._pump(up_reader, writer), name=TASK_NAME),
                )
            finally:
                self.upstream -= 1
                self._writers.discard(up_writer)
                _reset(up_writer)
        finally:
            self._writers.discard(writer)
            _reset(writer)
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                await self._flowing.wait()
                if self.mode == "slow":
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # either side went away: the other is closed by the caller
        finally:
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s connection at once with a reset (SO_LINGER 0), as a crash would."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.fileno() >= 0:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.transport.abort()
