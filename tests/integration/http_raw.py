"""Raw HTTP/1.1 over a socket, for requests no well-behaved client library would send."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass

__all__ = ["RawResponse", "raw_request"]

_STATUS_RE = re.compile(rb"^HTTP/1\.[01] (\d{3})")


@dataclass(frozen=True)
class RawResponse:
    """What the server sent back: status (0 when none), body text, bytes and seconds taken.

    ``closed`` tells whether the server closed the connection (rather than the read timing out).
    """

    status: int
    head: str
    body: str
    raw: bytes
    seconds: float
    closed: bool


async def raw_request(
    port: int, data: bytes, *, timeout: float = 10.0, host: str = "127.0.0.1"
) -> RawResponse:
    """Send ``data`` as is, read until the server closes (or ``timeout``), parse the status.

    ``Connection: close`` is the caller's business: without it the server keeps the
    connection open and this returns after ``timeout`` with what arrived.
    """
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    chunks: list[bytes] = []
    closed = False
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        closed = True
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass  # what arrived so far is the answer; the caller judges it
    finally:
        writer.close()
        # The server closed first: nothing is left to flush.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()
    raw = b"".join(chunks)
    match = _STATUS_RE.match(raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    return RawResponse(
        status=int(match.group(1)) if match else 0,
        head=head.decode("latin-1"),
        body=body.decode("utf-8", "replace"),
        raw=raw,
        seconds=time.monotonic() - t0,
        closed=closed,
    )
