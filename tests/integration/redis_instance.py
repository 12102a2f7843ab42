"""Private redis-server processes for tests that stop, restart or reconfigure a server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.waiting import wait_for

from .net import free_port

__all__ = ["RedisServers"]


async def _answers(port: int) -> bool:
    """Tell whether a server on ``port`` answers PING (any reply, even -NOAUTH, means up)."""
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\n")
        reply = await asyncio.wait_for(reader.readline(), 2)
        writer.close()
        await writer.wait_closed()
        return bool(reply)
    return False


class RedisServers:
    """Private redis-server processes on free ports, stopped after the test."""

    def __init__(self, binary: str, folder: Path) -> None:
        self._binary = binary
        self._folder = folder
        self._processes: dict[int, asyncio.subprocess.Process] = {}

    async def start(self, *args: str, port: int | None = None) -> int:
        """Start a server with extra ``args`` (on ``port``, to restart one); return its port."""
        port = port or free_port()
        folder = self._folder / str(port)
        folder.mkdir(exist_ok=True)
        self._processes[port] = await asyncio.create_subprocess_exec(
            self._binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(folder), *args),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_for(lambda: _answers(port), timeout=10)
        return port

    async def stop(self, port: int) -> None:
        """Stop one server and wait for it to exit."""
        process = self._processes.pop(port)
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)

    async def close(self) -> None:
        """Stop every server still running."""
        for port in list(self._processes):
            await self.stop(port)
