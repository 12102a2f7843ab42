"""The drill's write generator and its ledger: the CloudNativePG way of measuring an outage.

During a game-day drill a stream of small rows ``(drill_id, seq, written_at, timeline)`` goes
into the drill's own table through the deployment's write endpoint (a multi-host URL with
``target_session_attrs=read-write`` follows the primary), one every ``write_interval``, each
with short timeouts. The ledger keeps every acknowledged ``seq`` with the server's
``clock_timestamp()``, its timeline and the WAL position just after its commit. The gap in
acknowledgements is the outage; acknowledged rows missing on the new primary are lost writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from exporter.probes._timescale_sql import TIMELINE, quote_table

__all__ = [
    "DB_ERRORS",
    "Ack",
    "Ledger",
    "WriteGenerator",
    "close_quietly",
    "iter_ranges",
    "seq_ranges",
]

#: What a lost, refused or timed-out server raises through asyncpg: a failed attempt.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # No host of a multi-host URL is (yet) a primary: the write endpoint is between primaries.
    asyncpg.exceptions.InternalClientError,
)

# The table belongs to the drill: created here and written only here. Rows are kept, keyed by
# drill id, so a record's ledger can be checked against the database afterwards; delete old
# ones at will. The primary key on (drill_id, seq) makes a retried insert impossible to double.
_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    drill_id text NOT NULL,
    seq bigint NOT NULL,
    written_at timestamptz NOT NULL,
    timeline integer NOT NULL,
    PRIMARY KEY (drill_id, seq)
)
"""
_INSERT = """
INSERT INTO {table} (drill_id, seq, written_at, timeline)
VALUES ($1, $2, clock_timestamp(), {timeline})
RETURNING extract(epoch FROM written_at)::float8 AS written_at, timeline
"""
_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8"
_SURVIVORS = "SELECT seq FROM {table} WHERE drill_id = $1"


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged write: what the server said when it committed it."""

    seq: int
    acked_at: float
    written_at: float
    timeline: int
    #: WAL position read just after the commit (an upper bound of the commit's end).
    position: float | None


@dataclass(slots=True)
class Ledger:
    """Every write attempt's fate, in order."""

    acks: list[Ack] = field(default_factory=list)
    failures: int = 0
    last_failure_at: float | None = None
    last_error: str | None = None

    def acked_seqs(self) -> set[int]:
        """Return the acknowledged sequence numbers."""
        return {ack.seq for ack in self.acks}

    def first_on_timeline_after(self, timeline: int) -> Ack | None:
        """Return the first write acknowledged on a timeline newer than ``timeline``."""
        return next((a for a in self.acks if a.timeline > timeline), None)

    def last_on_timeline(self, timeline: int) -> Ack | None:
        """Return the last write acknowledged on ``timeline`` (the old primary's)."""
        return next((a for a in reversed(self.acks) if a.timeline == timeline), None)


def seq_ranges(seqs: set[int]) -> list[tuple[int, int]]:
    """Return ``seqs`` as sorted inclusive ranges: ``{1, 2, 3, 7}`` -> ``[(1, 3), (7, 7)]``."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


class WriteGenerator:
    """Insert one row per interval through the write endpoint; keep the ledger."""

    def __init__(
        self,
        url: str,
        *,
        table: str,
        drill_id: str,
        interval: float,
        timeout: float,
        on_ack: Callable[[Ack], None] | None = None,
    ) -> None:
        self._url = url
        self._table = quote_table(table)
        self._drill_id = drill_id
        self._interval = interval
        self._timeout = timeout
        self._on_ack = on_ack
        self._conn: Any = None
        self._seq = 0
        self.ledger = Ledger()

    async def connect(self) -> Any:
        """Return a new connection to the write endpoint, with the generator's bounds."""
        ms = str(int(self._timeout * 1000))
        return await asyncpg.connect(
            self._url,
            timeout=self._timeout,
            command_timeout=self._timeout,
            server_settings={
                "application_name": "ingest-exporter-drill",
                "statement_timeout": ms,
                "lock_timeout": ms,
            },
        )

    async def ensure_table(self) -> None:
        """Create the drill's table when it does not exist (on the primary, before arming)."""
        conn = await self.connect()
        try:
            await conn.execute(_CREATE.format(table=self._table))
        finally:
            await close_quietly(conn, self._timeout)

    async def run(self) -> None:
        """Write until cancelled; a failed write is counted and the connection renewed."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while True:
                await self.write_once()
                next_at += self._interval
                # A slow write is not followed by a burst: the schedule restarts from now.
                next_at = max(next_at, loop.time())
                await asyncio.sleep(next_at - loop.time())
        finally:
            await self.close()

    async def write_once(self) -> Ack | None:
        """Make one write attempt and record its fate."""
        self._seq += 1
        seq = self._seq
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self.connect()
            sql = _INSERT.format(table=self._table, timeline=TIMELINE)
            row = await self._conn.fetchrow(sql, self._drill_id, seq, timeout=self._timeout)
        except DB_ERRORS as exc:
            self.ledger.failures += 1
            self.ledger.last_failure_at = time.time()
            self.ledger.last_error = type(exc).__name__
            await self.close()
            return None
        acked_at = time.time()
        position: float | None
        try:
            position = await self._conn.fetchval(_POSITION, timeout=self._timeout)
        except DB_ERRORS:
            # Acknowledged all the same; only the WAL bound of this one write is unknown.
            position = None
            await self.close()
        ack = Ack(seq, acked_at, float(row["written_at"]), int(row["timeline"]), position)
        self.ledger.acks.append(ack)
        if self._on_ack is not None:
            self._on_ack(ack)
        return ack

    async def close(self) -> None:
        """Close the connection, bounded: one to a dead server is dropped, not waited for."""
        conn, self._conn = self._conn, None
        await close_quietly(conn, self._timeout)

    async def survivors(self, conn: Any) -> set[int]:
        """Return the drill's sequence numbers present on the server behind ``conn``."""
        rows = await conn.fetch(_SURVIVORS.format(table=self._table), self._drill_id)
        return {int(row["seq"]) for row in rows}


def iter_ranges(ranges: list[tuple[int, int]]) -> Iterator[int]:
    """Yield every number of inclusive ``ranges`` (the inverse of :func:`seq_ranges`)."""
    for start, end in ranges:
        yield from range(start, end + 1)


async def close_quietly(conn: Any, timeout: float) -> None:
    """Close an asyncpg connection within ``timeout``; drop it when the server cannot answer."""
    if conn is None or conn.is_closed():
        return
    try:
        await conn.close(timeout=timeout)
    except DB_ERRORS:
        # The server is gone or slow: closing the socket is all that is left to do.
        conn.terminate()
