"""Fixtures shared by the unit and the integration tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


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
