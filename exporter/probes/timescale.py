"""Built-in TimescaleDB/PostgreSQL checks, run over the connector's shared pool.

One probe run takes one pooled connection and runs every check on it, one statement after
the other, each bounded by the pool's statement timeout and by what is left of the probe's
own time budget. Failing to get the connection (or losing it) fails the whole probe, which
the runner reports as one ``connect`` check that is down. A statement that fails on a
working connection (timeout, permission) leaves only its own check ``unknown``.

Replication lag, honestly: ``replay_lag`` of ``pg_stat_replication`` is NULL for a replica
that was caught up and idle, and it freezes (or is interpolated) while replay is paused,
so on its own it can read "no lag" for a replica that replays nothing. The byte lag
(``pg_wal_lsn_diff`` of the server's WAL position and ``replay_lsn``) always grows with
unreplayed WAL. The published seconds are 0 when no byte is left to replay, else the larger
of ``replay_lag`` and a lower bound the probe measures itself: the server time since the
first probe run that saw WAL past the replica's replay position (a per-connector
:class:`~exporter.probes._timescale_sql.WalHistory`; its resolution is the probe interval
and it starts at 0 after an exporter restart). On a standby, the replay delay is
``now() - pg_last_xact_replay_timestamp()`` while received WAL waits to be replayed, else 0;
it overstates the delay when the primary was idle before the pending WAL, and a standby
cut off from its primary reads 0 (it cannot know what it never received: watch the
primary's ``ingest_timescale_replicas`` and the ``replication`` check's WAL receiver test).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from exporter.config import DimensionSettings
from exporter.connectors.timescale import TimescaleConnector
from exporter.errors import ConnectionLost, ProbeError
from exporter.metricspec import REFRESHED, MetricSpec, spec
from exporter.probes import _timescale_sql as sql
from exporter.probes.base import Check, Measurement, Status
from exporter.reasons import Reason, classify

__all__ = ["MAX_REPLICAS", "METRIC_SPECS", "TimescaleProbe"]

#: Replicas published with their own lag series (the count covers all of them).
MAX_REPLICAS = 16
#: Share of the probe timeout the checks may use; the rest returns the connection in time.
BUDGET_SHARE = 0.9
#: Connections in use over this share of max_connections degrade the ``connections`` check.
CONNECTIONS_DEGRADED = 0.9

_EDITIONS = {"apache": "apache", "timescale": "community"}
_FEATURE_NOT_SUPPORTED = "0A000"

#: Gauges this probe publishes (through its measurements).
METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_timescale_server_version",
        "gauge",
        "deployment",
        f"PostgreSQL server_version_num. {REFRESHED}",
    ),
    spec(
        "ingest_timescale_in_recovery",
        "gauge",
        "deployment",
        f"1 when the server is a standby (pg_is_in_recovery()), else 0. {REFRESHED}",
    ),
    spec(
        "ingest_timescale_timeline",
        "gauge",
        "deployment",
        "PostgreSQL timeline the server writes (primary) or receives (standby); it goes up "
        "by one at each promotion. A gauge, so a failover is a change, not a counter reset. "
        f"{REFRESHED}",
    ),
    spec(
        "ingest_timescale_replicas",
        "gauge",
        "deployment",
        f"Replicas connected to the server (rows of pg_stat_replication). {REFRESHED}",
    ),
    spec(
        "ingest_timescale_replication_lag_bytes",
        "gauge",
        "deployment replica",
        "WAL bytes the replica has not replayed: pg_wal_lsn_diff of the server's WAL position "
        f"and the replica's replay_lsn. {REFRESHED}",
    ),
    spec(
        "ingest_timescale_replication_lag_seconds",
        "gauge",
        "deployment replica",
        "Replay lag: 0 when nothing is left to replay, else the larger of replay_lag and how "
        "long WAL past the replay position has existed (sampled each probe run, so it grows "
        f"while replay is stuck). {REFRESHED}",
    ),
    spec(
        "ingest_timescale_replay_delay_seconds",
        "gauge",
        "deployment",
        "On a standby: 0 when all received WAL is replayed, else now() minus "
        f"pg_last_xact_replay_timestamp(). {REFRESHED}",
    ),
    spec(
        "ingest_timescale_connections",
        "gauge",
        "deployment",
        f"Client backends in pg_stat_activity. {REFRESHED}",
    ),
    spec(
        "ingest_timescale_max_connections",
        "gauge",
        "deployment",
        f"The server's max_connections. {REFRESHED}",
    ),
    spec(
        "ingest_timescale_extension_info",
        "gauge",
        "deployment version edition",
        f"TimescaleDB extension version and edition (apache or community; constant 1). {REFRESHED}",
    ),
    spec(
        "ingest_timescale_jobs_failed",
        "gauge",
        "deployment",
        "TimescaleDB background jobs whose last run failed (jobs the apache license refuses "
        f"are not counted). {REFRESHED}",
    ),
    spec(
        "ingest_dimension_freshness_seconds",
        "gauge",
        "deployment dimension",
        "Age of the dimension table's newest row (max of its time column); absent while "
        f"the table is empty or unreadable. {REFRESHED}",
    ),
    spec(
        "ingest_dimension_freshness_sla_seconds",
        "gauge",
        "deployment dimension",
        "The dimension's configured freshness SLA (freshness_sla_seconds).",
    ),
    spec(
        "ingest_dimension_rows_recent",
        "gauge",
        "deployment dimension",
        f"Rows of the dimension table within its recent_window_seconds. {REFRESHED}",
    ),
    spec(
        "ingest_dimension_is_hypertable",
        "gauge",
        "deployment dimension",
        f"1 when the dimension table is a TimescaleDB hypertable, else 0. {REFRESHED}",
    ),
)


class TimescaleProbe:
    """Check a TimescaleDB/PostgreSQL server and the dimension tables the ingest fills."""

    connector: str = "timescale"
    name: str = "connect"

    def __init__(
        self,
        timescale: TimescaleConnector,
        *,
        timeout: float | None = None,
        dimensions: Sequence[DimensionSettings] = (),
        history: sql.WalHistory | None = None,
    ) -> None:
        self._timescale = timescale
        self.timeout = timeout
        self.dimensions = tuple(dimensions)
        self._history = history if history is not None else sql.history_for(timescale)

    @property
    def checks(self) -> tuple[str, ...]:
        """Return the checks every run reports (``jobs`` too once the server has shown it)."""
        names = ["connect", "recovery", "replication", "connections", "extension"]
        return (*names, *(self._dimension_check(d) for d in self.dimensions))

    async def __call__(self) -> list[Check]:
        """Run every check on one pooled connection."""
        loop = asyncio.get_running_loop()
        budget = self.timeout or self._timescale.connect_timeout
        deadline = loop.time() + budget * BUDGET_SHARE
        t0 = time.perf_counter()
        acquired = False
        try:
            async with self._timescale.acquire() as conn:
                acquired = True
                session = sql.Session(
                    conn,
                    deadline=deadline,
                    statement_timeout=self._timescale.settings.statement_timeout_seconds,
                )
                try:
                    await session.fetchrow(sql.SELECT_ONE)
                except ConnectionLost:
                    raise
                except Exception as exc:
                    raise ProbeError(classify(exc), f"SELECT 1: {sql.brief(exc)}") from exc
                latency = time.perf_counter() - t0
                return await self._checks(session, latency)
        except TimeoutError as exc:
            if acquired:
                raise
            wait = self._timescale.connect_timeout
            raise ProbeError(Reason.TIMEOUT, f"no connection within {wait:g}s") from exc

    def _dimension_check(self, dimension: DimensionSettings) -> str:
        return f"dimension:{dimension.name}"

    async def _checks(self, session: sql.Session, latency: float) -> list[Check]:
        try:
            facts = await session.fetchrow(sql.FACTS)
        except ConnectionLost:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed statement is data
            # Every check needs these facts: report each as not run, so the set is stable.
            names = self.checks[1:]
            detail = f"not run: server facts unavailable ({sql.brief(exc)})"
            return [
                Check("connect", latency_seconds=latency),
                *(Check(n, Status.UNKNOWN, classify(exc), detail) for n in names),
            ]
        version = Measurement("ingest_timescale_server_version", float(facts["version_num"]))
        checks = [
            Check("connect", latency_seconds=latency, measurements=(version,)),
            self._recovery(facts),
        ]
        checks += await session.guarded(["replication"], lambda: self._replication(session, facts))
        checks.append(self._connections(facts))
        checks.append(self._extension(facts))
        if self.dimensions:
            checks += await session.guarded(
                [self._dimension_check(d) for d in self.dimensions],
                lambda: self._dimensions(session, facts),
            )
        if facts["has_job_stats"]:
            checks += await session.guarded(["jobs"], lambda: self._jobs(session, facts))
        return checks

    def _recovery(self, facts: Any) -> Check:
        standby = bool(facts["in_recovery"])
        measured = [Measurement("ingest_timescale_in_recovery", float(standby))]
        detail = "standby (in recovery)" if standby else "primary"
        if facts["timeline"] is not None:
            measured.append(Measurement("ingest_timescale_timeline", float(facts["timeline"])))
            detail += f", timeline {facts['timeline']}"
        return Check("recovery", detail=detail, measurements=tuple(measured))

    async def _replication(self, session: sql.Session, facts: Any) -> list[Check]:
        rows = await session.fetch(sql.REPLICAS)
        at, position = rows[0]["at"], rows[0]["position"]
        if position is not None:
            self._history.record(position, at)
        replicas = [r for r in rows if r["pid"] is not None]
        measured: list[Measurement] = [
            Measurement("ingest_timescale_replicas", float(len(replicas)))
        ]
        labels = sql.replica_labels((r["application_name"], r["client_addr"]) for r in replicas)
        hidden = sum(1 for r in replicas if r["state"] is None)
        replayed: list[float] = []
        worst = (0.0, 0.0)
        for label, row in list(zip(labels, replicas, strict=True))[:MAX_REPLICAS]:
            if row["replay_position"] is None or row["lag_bytes"] is None:
                continue  # hidden from this role, or no feedback from the replica yet
            replayed.append(row["replay_position"])
            lag_bytes = max(0.0, row["lag_bytes"])
            seconds = 0.0
            if lag_bytes > 0:
                seconds = max(
                    row["replay_lag"] or 0.0, self._history.age(row["replay_position"], at)
                )
            worst = max(worst, (seconds, lag_bytes))
            replica = (("replica", label),)
            measured.append(
                Measurement("ingest_timescale_replication_lag_bytes", lag_bytes, replica)
            )
            measured.append(
                Measurement("ingest_timescale_replication_lag_seconds", seconds, replica)
            )
        self._history.prune(replayed)
        status, reason = Status.OK, None
        if replicas:
            detail = f"{len(replicas)} replica(s); worst lag {worst[0]:.1f}s, {worst[1]:.0f} bytes"
        else:
            detail = "no replicas connected"
        if hidden:
            # The count is known, the lag is not: unknown, like a refused INFO on Redis.
            status, reason = Status.UNKNOWN, Reason.PERMISSION
            detail = f"{hidden} replica(s) hidden: grant pg_monitor to see replication state"
        if facts["in_recovery"]:
            delay, standby_detail, receiving = await self._standby(session)
            measured += delay
            detail = f"{standby_detail}; {detail}"
            if not receiving and status is Status.OK:
                status, reason = Status.DEGRADED, Reason.MISSING
        return [Check("replication", status, reason, detail, tuple(measured))]

    async def _standby(self, session: sql.Session) -> tuple[list[Measurement], str, bool]:
        row = await session.fetchrow(sql.STANDBY)
        pending = row["pending_bytes"]
        paused = " (replay paused)" if row["paused"] else ""
        receiving = row["receivers"] > 0
        stream = "" if receiving else ", no WAL receiver running"
        if pending is None or pending <= 0:
            delay: float | None = 0.0
        else:
            # The last replayed commit's age: it grows while replay is stuck. It overstates
            # the delay when the primary was idle before the pending WAL (documented).
            delay = None if row["since_replay"] is None else max(0.0, row["since_replay"])
        if delay is None:
            text = f"standby{paused}: {pending:.0f} bytes to replay, delay unknown{stream}"
            return [], text, receiving
        text = f"standby{paused}: replay {delay:.1f}s behind{stream}"
        return [Measurement("ingest_timescale_replay_delay_seconds", delay)], text, receiving

    def _connections(self, facts: Any) -> Check:
        used, limit = int(facts["connections"]), int(facts["max_connections"])
        share = used / limit if limit else 0.0
        full = share > CONNECTIONS_DEGRADED
        return Check(
            "connections",
            Status.DEGRADED if full else Status.OK,
            Reason.CAPACITY if full else None,
            detail=f"{used} of {limit} connections in use ({share:.0%})",
            measurements=(
                Measurement("ingest_timescale_connections", float(used)),
                Measurement("ingest_timescale_max_connections", float(limit)),
            ),
        )

    def _extension(self, facts: Any) -> Check:
        version = facts["ts_version"]
        if version is None:
            detail = "timescaledb extension not installed in this database"
            return Check("extension", Status.DEGRADED, Reason.MISSING, detail)
        edition = _EDITIONS.get(str(facts["ts_license"]), "unknown")
        labels = (("version", sql.bounded_label(version, limit=32)), ("edition", edition))
        return Check(
            "extension",
            detail=f"timescaledb {version} ({edition} edition)",
            measurements=(Measurement("ingest_timescale_extension_info", 1.0, labels),),
        )

    async def _dimensions(self, session: sql.Session, facts: Any) -> list[Check]:
        query = sql.dimensions_sql(hypertables=bool(facts["has_hypertables"]))
        tables = [sql.quote_table(d.table) for d in self.dimensions]
        columns = [d.time_column for d in self.dimensions]
        rows = await session.fetch(query, tables, columns)
        checks = []
        for dimension, row in zip(self.dimensions, rows, strict=True):
            checks.append(await self._dimension(session, dimension, row))
        return checks

    async def _dimension(self, session: sql.Session, dim: DimensionSettings, meta: Any) -> Check:
        name = self._dimension_check(dim)
        labels = (("dimension", dim.name),)
        sla = Measurement(
            "ingest_dimension_freshness_sla_seconds", dim.freshness_sla_seconds, labels
        )
        if not meta["found"]:
            return Check(
                name, Status.DEGRADED, Reason.MISSING, f"table {dim.table} not found", (sla,)
            )
        hyper = bool(meta["is_hypertable"])
        measured = [sla, Measurement("ingest_dimension_is_hypertable", float(hyper), labels)]
        kind = "hypertable" if hyper else "plain table (not a hypertable)"
        time_type = meta["time_type"]
        if time_type is None:
            detail = f"{kind} has no column {dim.time_column}"
            return Check(name, Status.DEGRADED, Reason.MISSING, detail, tuple(measured))
        cast = sql.TIME_TYPES.get(time_type)
        if cast is None:
            detail = f"{kind}: time column type {time_type[:40]} unsupported, age unknown"
            return Check(name, Status.DEGRADED, Reason.ERROR, detail, tuple(measured))
        try:
            query = sql.dimension_data(dim.table, dim.time_column, cast)
            row = await session.fetchrow(query, dim.recent_window_seconds)
        except ConnectionLost:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed statement is this check's data
            return Check(
                name, Status.UNKNOWN, classify(exc), f"{kind}: {sql.brief(exc)}", tuple(measured)
            )
        recent = float(row["recent"])
        measured.append(Measurement("ingest_dimension_rows_recent", recent, labels))
        window = f"{recent:.0f} rows in the last {dim.recent_window_seconds:g}s"
        sla_text = f"SLA {dim.freshness_sla_seconds:g}s"
        if row["age"] is None:
            detail = f"{kind} is empty ({sla_text})"
            return Check(name, Status.DEGRADED, Reason.STALE, detail, tuple(measured))
        age = max(0.0, row["age"])
        measured.append(Measurement("ingest_dimension_freshness_seconds", age, labels))
        detail = f"{kind}; newest row {age:.1f}s old ({sla_text}); {window}"
        if age > dim.freshness_sla_seconds:
            return Check(name, Status.DEGRADED, Reason.STALE, detail, tuple(measured))
        return Check(name, detail=detail, measurements=tuple(measured))

    async def _jobs(self, session: sql.Session, facts: Any) -> list[Check]:
        rows = await session.fetch(sql.jobs_sql(job_errors=bool(facts["has_job_errors"])))
        apache = facts["ts_license"] == "apache"
        failed = [r for r in rows if r["last_run_status"] == "Failed"]
        # The apache license refuses some of TimescaleDB's own jobs (the job history retention
        # policy of 2.19 fails with 0A000 on every run): the edition, not a failure to page on.
        refused = [r for r in failed if apache and r["last_error"] == _FEATURE_NOT_SUPPORTED]
        counted = len(failed) - len(refused)
        skip = {r["job_id"] for r in refused}
        total = sum(r["total_failures"] or 0.0 for r in rows if r["job_id"] not in skip)
        detail = f"{counted} of {len(rows)} job(s) failed their last run ({total:.0f} failures)"
        if refused:
            detail += f"; {len(refused)} refused by the apache license (not counted)"
        status, reason = (Status.DEGRADED, Reason.ERROR) if counted else (Status.OK, None)
        gauge = Measurement("ingest_timescale_jobs_failed", float(counted))
        return [Check("jobs", status, reason, detail, (gauge,))]
