"""Helpers of the drill tests: settings, a dimension feed with its own ledger, a stopwatch.

The tests measure a failover independently of the drill: :class:`Feed` is the ingest (rows
into a dimension table through the write endpoint, with its own ledger of acknowledged rows
and of the outage's gap) and :class:`PrimaryStopwatch` probes the old primary on its own, at a
finer cadence than the drill's probe interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from exporter.config import IngestSettings

__all__ = [
    "FAILOVER_SCRIPT",
    "Feed",
    "PrimaryStopwatch",
    "create_dimension",
    "drill_settings",
]

FAILOVER_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "timescale-failover.sh"
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_CONNECT_ERRORS = (*_ERRORS, asyncpg.exceptions.InternalClientError)


def drill_settings(
    factory: Callable[..., IngestSettings],
    tmp_path: Path,
    *,
    dimension: str,
    table: str,
    drill: dict[str, Any],
    sla: float = 30.0,
    **env: str,
) -> IngestSettings:
    """Build settings with one dimension and drills on (``drill`` is the file's section)."""
    document = {
        "dimensions": [
            {"name": dimension, "table": table, "time_column": "time", "freshness_sla_seconds": sla}
        ],
        "failover_drill": {"enabled": True, **drill},
    }
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return factory(path, **env)


async def create_dimension(url: str, table: str, *, age_seconds: float = 0.0) -> None:
    """Create a hypertable ``table(time, seq)`` with one row ``age_seconds`` old."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f"CREATE TABLE {table} (time timestamptz NOT NULL, seq bigint)")
        await conn.execute(f"SELECT create_hypertable('{table}', 'time')")
        await conn.execute(
            f"INSERT INTO {table} VALUES (now() - make_interval(secs => $1::float8), 0)",  # noqa: S608 - test table
            age_seconds,
        )
    finally:
        await conn.close()


async def drop_table(url: str, table: str) -> None:
    """Drop ``table`` (a test's own) on the server behind ``url``."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()


@dataclass
class Feed:
    """Insert a row every ``interval`` through ``url``; keep a ledger and the outage's gap."""

    url: str
    table: str
    interval: float = 0.05
    timeout: float = 0.5
    acked: list[tuple[int, float]] = field(default_factory=list)
    first_failure: float | None = None
    resumed: float | None = None
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn: Any = None
        seq = 0
        try:
            while True:
                seq += 1
                try:
                    if conn is None:
                        conn = await asyncpg.connect(self.url, timeout=self.timeout)
                    await conn.execute(
                        f"INSERT INTO {self.table} VALUES (now(), $1)",  # noqa: S608 - test table
                        seq,
                        timeout=self.timeout,
                    )
                except _CONNECT_ERRORS:
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    if self.first_failure is None:
                        self.first_failure = time.time()
                else:
                    now = time.time()
                    self.acked.append((seq, now))
                    if self.first_failure is not None and self.resumed is None:
                        self.resumed = now
                # The feed's cadence (an ingest writing every interval), not a wait.
                await asyncio.sleep(self.interval)
        finally:
            if conn is not None:
                conn.terminate()

    def start(self) -> None:
        """Start feeding."""
        self._task = asyncio.create_task(self._run(), name=f"feed:{self.table}")

    async def stop(self) -> None:
        """Stop feeding."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class PrimaryStopwatch:
    """Probe one server every ``interval`` (its own connection); note its first failure."""

    url: str
    interval: float = 0.05
    failed_at: float | None = None
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            while True:
                try:
                    await conn.fetchval("SELECT 1", timeout=0.5)
                except _ERRORS:
                    self.failed_at = time.time()
                    return
                # The stopwatch's cadence (its resolution), not a wait.
                await asyncio.sleep(self.interval)
        finally:
            conn.terminate()

    def start(self) -> None:
        """Start watching."""
        self._task = asyncio.create_task(self._run(), name="stopwatch")

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
