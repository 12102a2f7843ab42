"""The Timescale probe's SQL and helpers: quoting, statement bounds, labels, WAL history.

Every statement reads catalogs or statistics views only; values travel as asyncpg
parameters, and the only text spliced into SQL is a configured table or column name that
:func:`quote_table` / :func:`quote_ident` validated and quoted. Positions (LSNs) are returned
as ``float8`` byte offsets and times as epoch seconds, so asyncpg needs no type introspection
(a round trip, and one a tiny statement timeout would cancel).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from exporter.errors import ConnectionLost
from exporter.probes.base import Check, Status
from exporter.reasons import Reason, classify

__all__ = [
    "DIMENSIONS",
    "FACTS",
    "JOBS",
    "REPLICAS",
    "SELECT_ONE",
    "STANDBY",
    "TIMELINE",
    "TIME_TYPES",
    "Session",
    "WalHistory",
    "bounded_label",
    "brief",
    "dimension_data",
    "dimensions_sql",
    "history_for",
    "jobs_sql",
    "quote_ident",
    "quote_table",
    "replica_labels",
]

SELECT_ONE = "SELECT 1"

# The server's timeline: on a primary the one it writes (the first 8 hex digits of its WAL
# file name), on a standby the one it receives (the last restartpoint's while no WAL receiver
# runs or the view is hidden from the role). Every function used is executable by PUBLIC.
TIMELINE = """CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (pg_control_checkpoint()).timeline_id)
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END"""

# One round trip for the checks that need no table of their own. Without pg_read_all_stats
# other roles' sessions show a NULL backend_type; those attached to a database are counted
# as client backends (a slight over-count: a database's background workers look the same).
_FACTS = """
SELECT current_setting('server_version_num')::int AS version_num,
       pg_is_in_recovery() AS in_recovery,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend'
            OR (backend_type IS NULL AND datid IS NOT NULL))::int AS connections,
       current_setting('max_connections')::int AS max_connections,
       (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS ts_version,
       current_setting('timescaledb.license', true) AS ts_license,
       to_regclass('timescaledb_information.hypertables') IS NOT NULL AS has_hypertables,
       to_regclass('timescaledb_information.job_stats') IS NOT NULL AS has_job_stats,
       to_regclass('timescaledb_information.job_errors') IS NOT NULL AS has_job_errors,
       {timeline} AS timeline
"""

FACTS = _FACTS.format(timeline=TIMELINE)

# This server's WAL position (written on a primary, replayed on a standby: a standby can
# feed cascaded replicas) and the server clock, LEFT JOINed so one row comes back even with
# no replica. PostgreSQL 15 shows rows to roles without pg_read_all_stats with state and
# every position NULL: the caller reports that as `permission`.
REPLICAS = """
SELECT extract(epoch FROM clock_timestamp())::float8 AS at,
       (w.pos - '0/0'::pg_lsn)::float8 AS position,
       r.pid, r.application_name, host(r.client_addr) AS client_addr, r.state,
       extract(epoch FROM r.replay_lag)::float8 AS replay_lag,
       (r.replay_lsn - '0/0'::pg_lsn)::float8 AS replay_position,
       (w.pos - r.replay_lsn)::float8 AS lag_bytes
FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                  ELSE pg_current_wal_lsn() END AS pos) AS w
LEFT JOIN pg_stat_replication AS r ON true
ORDER BY r.pid
"""

# On a standby: WAL received but not yet replayed, and the age of the last replayed commit.
STANDBY = """
SELECT (pg_last_wal_receive_lsn() - pg_last_wal_replay_lsn())::float8 AS pending_bytes,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
           AS since_replay,
       pg_is_wal_replay_paused() AS paused,
       (SELECT count(*) FROM pg_stat_wal_receiver)::int AS receivers
"""

_DIMENSIONS = """
SELECT d.ord::int AS ord, c.oid IS NOT NULL AS found,
       (SELECT format_type(a.atttypid, NULL) FROM pg_attribute AS a
         WHERE a.attrelid = c.oid AND a.attname = d.col AND a.attnum > 0
           AND NOT a.attisdropped) AS time_type,
       {hypertable} AS is_hypertable
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS d(rel, col, ord)
LEFT JOIN pg_class AS c ON c.oid = to_regclass(d.rel)
LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace
ORDER BY d.ord
"""
_IS_HYPERTABLE = """EXISTS (SELECT 1 FROM timescaledb_information.hypertables AS h
                 WHERE h.hypertable_schema = n.nspname AND h.hypertable_name = c.relname)"""

#: Time column types whose age can be computed, by ``format_type`` name -> SQL cast.
TIME_TYPES = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "date": "date",
}

DIMENSIONS = _DIMENSIONS.format(hypertable=_IS_HYPERTABLE)

_JOBS = """
SELECT s.job_id, s.last_run_status, s.total_failures::float8 AS total_failures,
       {last_error} AS last_error
FROM timescaledb_information.job_stats AS s
"""
# Only failed jobs look their last error up (job_errors reads the job history table).
_LAST_ERROR = """CASE WHEN s.last_run_status = 'Failed' THEN
           (SELECT e.sqlerrcode FROM timescaledb_information.job_errors AS e
             WHERE e.job_id = s.job_id ORDER BY e.start_time DESC LIMIT 1) END"""
JOBS = _JOBS.format(last_error=_LAST_ERROR)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@-]")
#: The walreceiver's default application_name: it names no replica, so the address does.
_DEFAULT_APPLICATION_NAME = "walreceiver"


def dimensions_sql(*, hypertables: bool) -> str:
    """Return the catalog query for every dimension (hypertable test only with the views)."""
    return DIMENSIONS if hypertables else _DIMENSIONS.format(hypertable="false")


def jobs_sql(*, job_errors: bool) -> str:
    """Return the job query (the last error code only where ``job_errors`` exists)."""
    return JOBS if job_errors else _JOBS.format(last_error="NULL::text")


def quote_ident(name: str) -> str:
    """Return ``name`` as a quoted SQL identifier; reject anything but a plain identifier.

    The configuration admits only ``[A-Za-z_][A-Za-z0-9_]*`` names; refusing the rest here
    too means a future config change cannot turn this into an injection. The name is quoted
    (case kept): ``Metrics`` means the table ``"Metrics"``, exactly as configured.
    """
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL identifier: {name[:70]!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    """Return ``table`` or ``schema.table`` quoted part by part."""
    parts = table.split(".")
    if len(parts) > 2:
        raise ValueError(f"expected table or schema.table, got {table[:140]!r}")
    return ".".join(quote_ident(part) for part in parts)


def dimension_data(table: str, column: str, cast: str) -> str:
    """Return the query for a table's newest row age (seconds) and rows in the window ($1 s).

    ``ORDER BY col DESC LIMIT 1`` with ``IS NOT NULL`` walks a time index backwards; on a
    hypertable TimescaleDB's ordered ChunkAppend then opens only the newest chunk (checked
    with EXPLAIN ANALYZE: the other chunks are "never executed"). The window bound is cast
    to the column's type so it stays an index condition and chunks are excluded at startup.
    """
    if cast not in TIME_TYPES.values():
        raise ValueError(f"unsupported time type {cast!r}")
    rel, col = quote_table(table), quote_ident(column)
    return f"""
SELECT extract(epoch FROM now() - s.newest::timestamptz)::float8 AS age, s.recent
FROM (SELECT (SELECT {col} FROM {rel} WHERE {col} IS NOT NULL
               ORDER BY {col} DESC LIMIT 1) AS newest,
             (SELECT count(*) FROM {rel}
               WHERE {col} > (now() - make_interval(secs => $1::float8))::{cast})::float8
                 AS recent) AS s
"""  # noqa: S608 - identifiers validated and quoted by quote_table/quote_ident


def bounded_label(value: str | None, *, limit: int = 64) -> str:
    """Return ``value`` made safe for a label: a short, fixed alphabet (``unknown`` if empty)."""
    text = _LABEL_UNSAFE.sub("_", value or "")[:limit]
    return text or "unknown"


def replica_labels(rows: Iterable[tuple[str | None, str | None]]) -> list[str]:
    """Name replicas from ``(application_name, client_addr)``: unique, bounded labels.

    The application name wins unless it is empty or the walreceiver default; then the
    client address (``local`` for a Unix socket). Repeats get ``#2``, ``#3`` in the order
    given (the probe passes rows ordered by walsender pid).
    """
    labels: list[str] = []
    seen: dict[str, int] = {}
    for application_name, client_addr in rows:
        if application_name and application_name != _DEFAULT_APPLICATION_NAME:
            base = bounded_label(application_name)
        else:
            base = bounded_label(client_addr or "local")
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return labels


class WalHistory:
    """Samples of one server's WAL position over time, to age a replica's replay position.

    ``replay_lag`` of ``pg_stat_replication`` is measured by the walsender when replay
    crosses a position it sampled; it stays NULL for a replica that was idle and caught up
    when replay stopped, and it is frozen or interpolated while replay is paused. Recording
    the position each probe run gives an honest lower bound that grows while replay is
    stuck: WAL past a replica's replay position existed at least since the first sample
    beyond it. Resolution is the probe interval; positions are compared as byte offsets.
    """

    def __init__(self, maxlen: int = 1024) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, position: float, at: float) -> None:
        """Remember that the server had written up to ``position`` at server time ``at``."""
        if self._samples and position < self._samples[-1][0]:
            # The position went back: another server (failover) or a restored cluster.
            self._samples.clear()
        # Unchanged positions keep the earliest sample: that is when the WAL first existed.
        if not self._samples or position > self._samples[-1][0]:
            self._samples.append((position, at))

    def age(self, replay_position: float, at: float) -> float:
        """Return how long WAL beyond ``replay_position`` has existed, as of ``at`` (>= 0)."""
        for position, sampled in self._samples:
            if position > replay_position:
                return max(0.0, at - sampled)
        return 0.0

    def prune(self, replay_positions: Sequence[float]) -> None:
        """Forget samples every replica has replayed past (keep the newest one)."""
        if not replay_positions:
            while len(self._samples) > 1:
                self._samples.popleft()
            return
        floor = min(replay_positions)
        while len(self._samples) > 1 and self._samples[0][0] <= floor:
            self._samples.popleft()


# Kept per connector, not per probe: the history describes the server the connector reaches,
# so every TimescaleProbe over that connector (the bundle builds one; tests and operator code
# may build more) reads the same samples. Weak keys: it dies with the connector.
_HISTORIES: weakref.WeakKeyDictionary[object, WalHistory] = weakref.WeakKeyDictionary()


def history_for(owner: object) -> WalHistory:
    """Return the WAL history kept for ``owner`` (a connector), created on first use."""
    history = _HISTORIES.get(owner)
    if history is None:
        history = _HISTORIES[owner] = WalHistory()
    return history


def brief(exc: BaseException) -> str:
    """Return a one-line ``Type: message`` summary of ``exc`` (a check's detail)."""
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Session:
    """One borrowed connection plus the time left: every statement gets the smaller bound.

    The server enforces the pool's ``statement_timeout`` (and ``lock_timeout``); the
    client-side timeout is a backstop a little longer than that, so the server's own cancel
    normally wins: a client-side timeout makes asyncpg send a cancel request over a new
    connection, and asyncpg drops the connection when that cancel does not finish within
    its command timeout. Either bound is cut to what is left of the probe's budget, so a
    slow check costs its own result and not the whole probe (the runner would cancel the
    probe at its timeout and keep nothing).
    """

    def __init__(self, conn: Any, *, deadline: float, statement_timeout: float) -> None:
        self.conn = conn
        self._deadline = deadline
        self._backstop = statement_timeout * 1.25 + 0.05
        self._timed_out = False

    def _timeout(self) -> float:
        left = self._deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError("probe time budget spent")
        return min(left, self._backstop)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Run ``query`` and return its rows; raise :class:`ConnectionLost` if it died."""
        try:
            return list(await self.conn.fetch(query, *args, timeout=self._timeout()))
        except Exception as exc:
            raise self._failure(exc) from exc

    async def fetchrow(self, query: str, *args: Any) -> Any:
        """Run ``query`` and return its first row (None when there is none)."""
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    def _lost(self) -> bool:
        try:
            return bool(self.conn.is_closed())
        except Exception:  # noqa: BLE001 - asyncpg's pool proxy raises once the pool took it back
            return True

    def _failure(self, exc: Exception) -> Exception:
        reason = classify(exc)
        if not self._lost():
            self._timed_out = self._timed_out or reason is Reason.TIMEOUT
            return exc
        # A connection dropped after a timed-out statement died of that timeout (asyncpg's
        # cancel did not finish in time): report the cause, not the closed-socket symptom.
        if self._timed_out and reason is not Reason.TIMEOUT:
            reason = Reason.TIMEOUT
        return ConnectionLost(reason, f"connection lost: {brief(exc)}")

    async def guarded(
        self, names: Sequence[str], step: Callable[[], Awaitable[list[Check]]]
    ) -> list[Check]:
        """Run ``step``; a failed statement leaves ``names`` unknown; a lost connection raises."""
        try:
            return await step()
        except ConnectionLost:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed statement is this check's data
            return [Check(name, Status.UNKNOWN, classify(exc), brief(exc)) for name in names]
