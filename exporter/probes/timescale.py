"""Built-in TimescaleDB/PostgreSQL checks, run over the connector's shared pool."""

from __future__ import annotations

import time

from exporter.connectors.timescale import TimescaleConnector
from exporter.probes.base import Check, Measurement
from exporter.telemetry.spec import REFRESHED, MetricSpec, spec

__all__ = ["METRIC_SPECS", "TimescaleProbe"]


#: Gauges this probe publishes (through its measurements).
METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_timescale_server_version",
        "gauge",
        "deployment",
        f"PostgreSQL server_version_num. {REFRESHED}",
    ),
)


class TimescaleProbe:
    """Connect and ``SELECT 1``; report the server version and the TimescaleDB extension."""

    connector: str = "timescale"
    name: str = "connect"

    def __init__(self, timescale: TimescaleConnector, *, timeout: float | None = None) -> None:
        self._timescale = timescale
        self.timeout = timeout

    async def __call__(self) -> list[Check]:
        """Run the checks on one pooled connection."""
        t0 = time.perf_counter()
        async with self._timescale.acquire() as conn:
            await conn.fetchval("SELECT 1")
            latency = time.perf_counter() - t0
            version_num = int(await conn.fetchval("SHOW server_version_num"))
            extversion = await conn.fetchval(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            )
        checks = [
            Check(
                "connect",
                latency_seconds=latency,
                measurements=(Measurement("ingest_timescale_server_version", float(version_num)),),
            )
        ]
        if extversion is None:
            checks.append(Check("extension", detail="timescaledb extension not installed"))
        else:
            checks.append(Check("extension", detail=f"timescaledb {extversion}"))
        return checks
