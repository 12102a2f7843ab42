"""Check that a Kafka broker answers a real Metadata request (used by scripts/services.sh).

Usage: python3 kafka_ready.py HOST PORT [TIMEOUT_SECONDS]

Sends one Metadata v4 request (the oldest version Kafka 4 still serves; the null topic list asks
for all topics) with only the standard library, and exits 0 when the answer names at least one
broker and an elected controller, 1 otherwise. A JVM admin tool would prove the same, but costs
seconds per attempt; this costs milliseconds, so the readiness loop can poll it.
"""

from __future__ import annotations

import socket
import struct
import sys

API_KEY_METADATA = 3
API_VERSION = 4
CORRELATION_ID = 7
CLIENT_ID = b"ingest-exporter-services"


def _request() -> bytes:
    header = struct.pack(">hhih", API_KEY_METADATA, API_VERSION, CORRELATION_ID, len(CLIENT_ID))
    body = struct.pack(">ib", -1, 0)  # topics = null (all), allow_auto_topic_creation = false
    payload = header + CLIENT_ID + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks += chunk
    return bytes(chunks)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        value = self.data[self.pos : self.pos + size].decode()
        self.pos += size
        return value


def main() -> int:
    """Probe the broker once and report the outcome on stdout."""
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_request())
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            reader = _Reader(_recv_exact(sock, size))
    except (OSError, ConnectionError) as exc:
        print(f"kafka not ready: {exc}")
        return 1
    if reader.take(">i") != CORRELATION_ID:
        print("kafka not ready: unexpected correlation id")
        return 1
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id = reader.take(">i")
        broker_host = reader.string()
        broker_port = reader.take(">i")
        reader.string()  # rack
        brokers.append(f"{node_id}@{broker_host}:{broker_port}")
    cluster_id = reader.string()
    controller_id = reader.take(">i")
    if not brokers or controller_id < 0:
        print(f"kafka not ready: brokers={brokers} controller={controller_id}")
        return 1
    listed = ",".join(brokers)
    print(f"kafka ready: cluster={cluster_id} brokers={listed} controller={controller_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
