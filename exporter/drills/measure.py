"""The drill's readings: the fallback path, dimensions on a server, jobs, and RPO from the ledger.

Every reading opens its own short connection bounded by the plan's probe timeout and reads
catalogs, statistics or the configured dimension tables (quoted by the probe's validated
identifier helpers); nothing here writes.

RPO is measured, not inferred from a lag gauge: time-based lag (``now() -
pg_last_xact_replay_timestamp()``) reads 0 when replication is cut and grows while the
primary is idle. The fallback scenario compares what each dimension's newest row is on the
primary and on the replica (seconds) and the WAL positions (bytes); a fault scenario counts
acknowledged writes missing on the new primary, the WAL between the last acknowledged write
and the new timeline's branch point, and the time between the last surviving and the last
acknowledged write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import asyncpg

from exporter.config import DimensionSettings
from exporter.drills.record import DimensionReading, FallbackReading, JobsReading, RpoReading
from exporter.drills.writer import DB_ERRORS, Ledger, close_quietly
from exporter.probes._timescale_sql import brief, quote_ident, quote_table
from exporter.reasons import classify

__all__ = [
    "branch_position",
    "connect",
    "durations",
    "measure_fallback",
    "read_dimensions",
    "read_jobs",
    "replica_state",
    "rpo_reading",
]

_NEWEST = """
SELECT extract(epoch FROM s.newest)::float8 AS newest,
       extract(epoch FROM now() - s.newest)::float8 AS age
FROM (SELECT (SELECT {col}::timestamptz FROM {rel} WHERE {col} IS NOT NULL
               ORDER BY {col} DESC LIMIT 1) AS newest) AS s
"""  # identifiers: validated and quoted by quote_table/quote_ident
_PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8"
_REPLICA = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT count(*) FROM pg_stat_wal_receiver)::int AS receivers,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused,
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::float8 AS position
"""
_JOBS = """
SELECT count(*)::int AS scheduled,
       count(*) FILTER (WHERE next_start = '-infinity'::timestamptz)::int AS stuck
FROM timescaledb_information.jobs WHERE scheduled
"""
_HAS_JOBS = "SELECT to_regclass('timescaledb_information.jobs') IS NOT NULL"
#: On a promoted server: the last WAL replayed while it was a standby (static afterwards).
_BRANCH = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::float8"

Server = Literal["primary", "replica", "new_primary"]


async def connect(url: str, timeout: float) -> Any:
    """Return a connection for readings, bounded by ``timeout`` (connect and statements)."""
    ms = str(int(timeout * 1000))
    return await asyncpg.connect(
        url,
        timeout=timeout,
        command_timeout=timeout,
        server_settings={
            "application_name": "ingest-exporter-drill",
            "statement_timeout": ms,
        },
    )


async def read_dimensions(
    conn: Any, dimensions: Sequence[DimensionSettings], *, server: Server, timeout: float
) -> list[DimensionReading]:
    """Return each dimension's newest row and its age on the server behind ``conn``."""
    readings = []
    for dim in dimensions:
        query = _NEWEST.format(col=quote_ident(dim.time_column), rel=quote_table(dim.table))
        try:
            row = await conn.fetchrow(query, timeout=timeout)
        except DB_ERRORS as exc:
            if conn.is_closed():
                raise
            reading = DimensionReading(
                dimension=dim.name,
                server=server,
                present=False,
                sla_seconds=dim.freshness_sla_seconds,
                error=f"{classify(exc).value}: {brief(exc)}",
            )
        else:
            reading = DimensionReading(
                dimension=dim.name,
                server=server,
                present=row["newest"] is not None,
                newest=row["newest"],
                age_seconds=None if row["age"] is None else max(0.0, row["age"]),
                sla_seconds=dim.freshness_sla_seconds,
            )
        readings.append(reading)
    return readings


async def replica_state(url: str, timeout: float) -> dict[str, Any]:
    """Return the replica's recovery state, WAL receivers, pause flag and replay position."""
    conn = await connect(url, timeout)
    try:
        row = await conn.fetchrow(_REPLICA, timeout=timeout)
        return dict(row)
    finally:
        await close_quietly(conn, timeout)


async def measure_fallback(
    *,
    primary_url: str,
    replica_url: str,
    replica_endpoint: str,
    dimensions: Sequence[DimensionSettings],
    timeout: float,
) -> FallbackReading:
    """Read every dimension on the replica and the primary at once; compare them.

    Both servers are read concurrently, so the comparison is of one moment: the bytes and
    seconds the replica is behind are what a failover now would lose.
    """

    async def side(url: str, server: Server, position_sql: str) -> tuple[Any, Any]:
        conn = await connect(url, timeout)
        try:
            position = await conn.fetchrow(position_sql, timeout=timeout)
            readings = await read_dimensions(conn, dimensions, server=server, timeout=timeout)
            return position, readings
        finally:
            await close_quietly(conn, timeout)

    outcomes = await asyncio.gather(
        side(primary_url, "primary", _PRIMARY_POSITION),
        side(replica_url, "replica", _REPLICA),
        return_exceptions=True,
    )
    for outcome, where in zip(outcomes, ("primary", "replica"), strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, DB_ERRORS):
                raise outcome
            error = f"{where}: {classify(outcome).value}: {brief(outcome)}"
            return FallbackReading(replica_endpoint=replica_endpoint, error=error)
    (primary_row, primary_dims), (replica_row, replica_dims) = outcomes  # type: ignore[misc]
    lag = None
    if primary_row[0] is not None and replica_row["position"] is not None:
        lag = max(0.0, primary_row[0] - replica_row["position"])
    compared = []
    for on_primary, on_replica in zip(primary_dims, replica_dims, strict=True):
        behind = None
        if on_primary.newest is not None and on_replica.newest is not None:
            behind = max(0.0, on_primary.newest - on_replica.newest)
        elif on_primary.newest is not None:
            behind = on_replica.age_seconds  # nothing on the replica: all of it is exposed
        compared.append(on_replica.model_copy(update={"behind_seconds": behind}))
    return FallbackReading(
        replica_endpoint=replica_endpoint,
        streaming=bool(replica_row["in_recovery"]) and replica_row["receivers"] > 0,
        replay_paused=replica_row["paused"],
        lag_bytes=lag,
        dimensions=compared,
    )


async def read_jobs(conn: Any, timeout: float) -> JobsReading:
    """Return the scheduled TimescaleDB jobs and those stuck at ``next_start = -infinity``."""
    if not await conn.fetchval(_HAS_JOBS, timeout=timeout):
        return JobsReading(checked=False, detail="no timescaledb_information.jobs view: skipped")
    row = await conn.fetchrow(_JOBS, timeout=timeout)
    scheduled, stuck = int(row["scheduled"]), int(row["stuck"])
    if stuck:
        detail = f"{stuck} of {scheduled} scheduled job(s) with next_start = -infinity"
    else:
        detail = f"{scheduled} scheduled job(s), none with next_start = -infinity"
    return JobsReading(checked=True, scheduled=scheduled, stuck=stuck, detail=detail)


async def branch_position(conn: Any, timeout: float) -> float | None:
    """Return where the new primary's timeline branched off (``None``: it never replayed)."""
    value = await conn.fetchval(_BRANCH, timeout=timeout)
    return None if value is None else float(value)


def rpo_reading(
    ledger: Ledger,
    survivors: set[int],
    *,
    baseline_timeline: int,
    branch: float | None,
) -> RpoReading:
    """Compare the ledger with what survived on the new primary.

    Args:
        ledger: The write generator's ledger.
        survivors: The drill's sequence numbers present on the new primary.
        baseline_timeline: The old primary's timeline.
        branch: The new timeline's branch point (byte offset), when known.
    """
    acked = ledger.acked_seqs()
    lost = sorted(acked - survivors)
    old = [a for a in ledger.acks if a.timeline == baseline_timeline]
    last_acked = old[-1] if old else None
    kept = [a for a in old if a.seq in survivors]
    last_kept = kept[-1] if kept else None
    seconds = 0.0
    if lost and last_acked is not None:
        newest_kept = last_kept.written_at if last_kept is not None else old[0].written_at
        seconds = max(0.0, last_acked.written_at - newest_kept)
    size: float | None = 0.0 if not lost else None
    if branch is not None and last_acked is not None and last_acked.position is not None:
        size = max(0.0, last_acked.position - branch)
    return RpoReading(lost_writes=len(lost), lost_seqs=lost[:100], bytes=size, seconds=seconds)


def durations(stamps: Mapping[str, float | None]) -> dict[str, float]:
    """Return detection, promotion and RTO seconds from the drill's timestamps.

    Detection and RTO count from the fault (observe: the last success before the outage);
    promotion counts from detection. A number whose ends were not both seen is left out.
    """
    zero = stamps.get("fault_injected") or stamps.get("outage_began")
    detected, promoted = stamps.get("detected"), stamps.get("promoted")
    acked = stamps.get("first_write_acked")
    spans = {
        "detection_seconds": (zero, detected),
        "promotion_seconds": (detected, promoted),
        "rto_seconds": (zero, acked),
    }
    return {
        name: round(max(0.0, end - start), 3)
        for name, (start, end) in spans.items()
        if start is not None and end is not None
    }
