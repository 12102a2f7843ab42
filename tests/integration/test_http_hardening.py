"""The live daemon's HTTP listener against hostile clients: long headers, slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.config import IngestSettings
from tests.logcapture import debug_log_fixture

from .conftest import running_daemon
from .http_raw import raw_request

__all__ = ["debug_log_fixture"]  # imported for pytest: the debug_log fixture

Settings = Callable[..., IngestSettings]
# Far past aiohttp's 8190-byte line limit.
_PAD = b"x" * 9000


def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _get(path: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_over_long_header_is_logged_without_its_value(
    settings_factory: Settings, debug_log: io.StringIO
) -> None:
    """A header or request line over 8 KiB answers 400; no log line at DEBUG quotes it."""
    requests = {
        "bearer": _get(b"/metrics", b"Authorization: Bearer Canary-bearer-91f3" + _PAD),
        "api-key": _get(b"/metrics", b"X-Api-Key: Canary-apikey-22c8" + _PAD),
        "cookie": _get(b"/api/v1/manifest", b"Cookie: a=1; session=Canary-cookie-7d0e" + _PAD),
        "folded": _get(b"/", b"X-Note: Canary-folded-4b1a" + _PAD[:5000], b" " + _PAD[:5000]),
        "request-line": _get(b"/probe?target=Canary-line-0c5b" + _PAD),
    }
    async with running_daemon(settings_factory()) as (daemon, _):
        assert daemon.port is not None
        for name, data in requests.items():
            response = await raw_request(daemon.port, data)
            assert response.status == 400, name
    text = debug_log.getvalue()
    assert "Canary-" not in text
    rejected = [e for e in _events(debug_log) if e["event"] == "http_request_rejected"]
    assert len(rejected) == len(requests)
    for event in rejected:
        assert event["level"] == "warning"
        assert event["status"] == 400
        assert event["error_type"] in {"LineTooLong", "BadHttpMessage", "BadStatusLine"}
        assert "exception" not in event


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text; version=99.0.0",
        "text/plain; version=1.x",
        "application/openmetrics-text; version=abc, text/plain; version=abc",
    ],
)
async def test_malformed_accept_is_served_as_text_on_metrics_and_probe(
    accept: str, settings_factory: Settings
) -> None:
    """A malformed Accept header on /metrics and /probe gets the text format, never a 500."""
    async with running_daemon(settings_factory()) as (daemon, _):
        assert daemon.port is not None
        for path in (b"/metrics", b"/probe?target=local"):
            response = await raw_request(daemon.port, _get(path, b"Accept: " + accept.encode()))
            assert response.status == 200, (path, response.body[:300])
            assert "content-type: text/plain; version=0.0.4" in response.head.lower()
            assert "ingest_connector_up" in response.body


async def _drip(port: int, head: bytes, *, seconds: float) -> float:
    """Send ``head`` then one byte a second; return when the server closed (or ``seconds``)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        while loop.time() - t0 < seconds:
            # The server's close shows as EOF (or a reset) on the reading side.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    if not await reader.read(65536):
                        return loop.time() - t0
            writer.write(b"X")
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        return loop.time() - t0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()
    return math.inf


async def test_slow_clients_are_closed_after_the_read_timeout(
    settings_factory: Settings, tmp_path: Path
) -> None:
    """Clients dripping headers or a body a byte a second are closed within the 2 s bound.

    Meanwhile /metrics answers in well under 100 ms (p99 over the whole attack).
    """
    config = tmp_path / "web.yaml"
    config.write_text("web: {read_header_timeout_seconds: 2}\n", encoding="utf-8")
    async with (
        running_daemon(settings_factory(config)) as (daemon, url),
        aiohttp.ClientSession() as session,
    ):
        port = daemon.port
        assert port is not None
        heads = [b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "] * 20 + [
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        ] * 5
        attack = asyncio.gather(*(_drip(port, head, seconds=15) for head in heads))
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        while not attack.done():
            t0 = loop.time()
            async with session.get(url + "/metrics") as response:
                assert response.status == 200
                await response.read()
            latencies.append(loop.time() - t0)
            await asyncio.sleep(0.05)
        closed_after = await attack
    assert max(closed_after) < 4.0, closed_after
    assert min(closed_after) > 1.5, closed_after
    latencies.sort()
    assert len(latencies) >= 20
    assert latencies[int(len(latencies) * 0.99)] < 0.1, latencies[-5:]
