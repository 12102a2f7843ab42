"""Suite-wide fixtures: strict metrics collectors, and ports that refuse connections."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from exporter.telemetry.metrics import IngestCollector


@pytest.fixture(autouse=True)
def strict_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a measurement that no metric spec declares fail the test instead of a log line."""
    monkeypatch.setattr(IngestCollector, "strict", True)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """Return a loopback port that refuses connections for the whole test.

    The socket stays bound but never listens, so the kernel answers every connection with a
    reset and no other process can take the port meanwhile (unlike a port bound, closed and
    hoped to stay free).
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])
