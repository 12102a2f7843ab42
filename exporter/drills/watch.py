"""Watch the primary and its replica once per probe interval: detection and promotion times.

Three small loops, each probe bounded by the plan's probe timeout:

* the **primary** the drill armed against (its own address, not the write endpoint): its
  first failed probe, or the first time it answers as a standby, is ``detected``;
* the **replica** (``timescale.replica_url``), until it leaves recovery: that is
  ``promoted``; its replay position is sampled meanwhile (the new timeline's branch point);
* the **write endpoint**, once the primary failed: the first answer on a newer timeline is
  also a promotion (the only one a drill without a replica URL can see).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from exporter.drills.writer import DB_ERRORS, Ack, close_quietly
from exporter.probes._timescale_sql import TIMELINE
from exporter.reasons import classify

__all__ = ["ServerState", "Watcher", "read_server"]

_STATE = f"""
SELECT pg_is_in_recovery() AS in_recovery, {TIMELINE} AS timeline,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::float8 AS position,
       host(inet_server_addr()) AS address, inet_server_port() AS port
"""


@dataclass(frozen=True, slots=True)
class ServerState:
    """What one probe of a server saw."""

    in_recovery: bool
    timeline: int
    #: WAL written (primary) or replayed (standby), as a byte offset.
    position: float | None
    address: str | None
    port: int | None


async def read_server(conn: Any, timeout: float) -> ServerState:
    """Return the role, timeline and WAL position of the server behind ``conn``."""
    row = await conn.fetchrow(_STATE, timeout=timeout)
    return ServerState(
        in_recovery=bool(row["in_recovery"]),
        timeline=int(row["timeline"]),
        position=row["position"],
        address=row["address"],
        port=row["port"],
    )


async def _connect(url: str, timeout: float) -> Any:
    return await asyncpg.connect(
        url,
        timeout=timeout,
        command_timeout=timeout,
        server_settings={"application_name": "ingest-exporter-drill-watch"},
    )


class Watcher:
    """Probe the primary, the replica and the write endpoint; set events as things change."""

    def __init__(
        self,
        *,
        primary_url: str,
        replica_url: str | None,
        write_url: str,
        baseline_timeline: int,
        interval: float,
        timeout: float,
    ) -> None:
        self._primary_url = primary_url
        self._replica_url = replica_url
        self._write_url = write_url
        self.baseline_timeline = baseline_timeline
        self._interval = interval
        self._timeout = timeout
        self.detected = asyncio.Event()
        self.promoted = asyncio.Event()
        self.primary_ok = asyncio.Event()
        self.last_ok_at: float | None = None
        self.detected_at: float | None = None
        self.detected_reason: str | None = None
        self.promoted_at: float | None = None
        self.promoted_by: str | None = None
        self.new_timeline: int | None = None
        self.primary_position: float | None = None
        self.replica_position: float | None = None
        self.probes = 0

    async def run(self) -> None:
        """Run the three loops until cancelled."""
        loops = [self._watch_primary(), self._watch_endpoint()]
        if self._replica_url is not None:
            loops.append(self._watch_replica(self._replica_url))
        await asyncio.gather(*loops)

    def note_ack(self, ack: Ack) -> None:
        """Count a write acknowledged on a newer timeline as a promotion seen (writer hook)."""
        if ack.timeline > self.baseline_timeline:
            self._promote(ack.acked_at, ack.timeline, "a write acknowledged on the new timeline")

    def _promote(self, at: float, timeline: int, how: str) -> None:
        if self.promoted_at is None or at < self.promoted_at:
            self.promoted_at, self.new_timeline, self.promoted_by = at, timeline, how
        self.promoted.set()

    async def _tick(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, started + self._interval - loop.time()))

    async def _watch_primary(self) -> None:
        loop = asyncio.get_running_loop()
        conn: Any = None
        try:
            while not self.detected.is_set():
                started = loop.time()
                self.probes += 1
                failure: str | None = None
                try:
                    if conn is None:
                        conn = await _connect(self._primary_url, self._timeout)
                    state = await read_server(conn, self._timeout)
                except DB_ERRORS as exc:
                    failure = classify(exc).value
                    await close_quietly(conn, self._timeout)
                    conn = None
                else:
                    if state.in_recovery:
                        failure = "demoted"
                    else:
                        self.last_ok_at, self.primary_position = time.time(), state.position
                        self.primary_ok.set()
                if failure is not None:
                    self.detected_at, self.detected_reason = time.time(), failure
                    self.detected.set()
                    return
                await self._tick(started)
        finally:
            await close_quietly(conn, self._timeout)

    async def _watch_replica(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        conn: Any = None
        try:
            while not self.promoted.is_set():
                started = loop.time()
                try:
                    if conn is None:
                        conn = await _connect(url, self._timeout)
                    state = await read_server(conn, self._timeout)
                except DB_ERRORS:
                    # The replica is not what is being judged here; try again next tick.
                    await close_quietly(conn, self._timeout)
                    conn = None
                else:
                    if state.in_recovery:
                        self.replica_position = state.position
                    else:
                        self._promote(time.time(), state.timeline, "the replica left recovery")
                        return
                await self._tick(started)
        finally:
            await close_quietly(conn, self._timeout)

    async def _watch_endpoint(self) -> None:
        await self.detected.wait()
        loop = asyncio.get_running_loop()
        while not self.promoted.is_set():
            started = loop.time()
            conn: Any = None
            try:
                conn = await _connect(self._write_url, self._timeout)
                state = await read_server(conn, self._timeout)
            except DB_ERRORS:
                state = None
            finally:
                await close_quietly(conn, self._timeout)
            if state is not None and state.timeline > self.baseline_timeline:
                how = "the write endpoint answered on the new timeline"
                self._promote(time.time(), state.timeline, how)
                return
            await self._tick(started)
