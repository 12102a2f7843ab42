from __future__ import annotations

import asyncio
import errno
import math
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from exporter.config import DimensionSettings
from exporter.errors import ConnectionLost, ProbeError
from exporter.probes import _timescale_sql as sql
from exporter.probes import timescale as module
from exporter.probes.base import Check, Reason, Status
from exporter.probes.timescale import METRIC_SPECS, TimescaleProbe

from .fakes.connectors import FakeTimescaleConnector

Rows = list[dict[str, Any]]


def _facts(**changes: Any) -> dict[str, Any]:
    facts = {
        "version_num": 150020,
        "in_recovery": False,
        "connections": 10,
        "max_connections": 200,
        "ts_version": "2.19.3",
        "ts_license": "apache",
        "has_hypertables": True,
        "has_job_stats": True,
        "has_job_errors": True,
        "timeline": 1,
    }
    facts.update(changes)
    return facts


def _replica(name: str | None = "r1", **changes: Any) -> dict[str, Any]:
    row = {
        "pid": 100,
        "application_name": name,
        "client_addr": "127.0.0.1",
        "state": "streaming",
        "replay_lag": None,
        "replay_position": 1000.0,
        "lag_bytes": 0.0,
    }
    row.update(changes)
    return row


@dataclass
class FakeServer:
    """A scripted server: answers each probe statement from plain Python data."""

    facts: dict[str, Any] = field(default_factory=_facts)
    at: float = 1_000.0
    position: float | None = 1000.0
    replicas: Rows = field(default_factory=list)
    standby: dict[str, Any] = field(
        default_factory=lambda: {
            "pending_bytes": 0.0,
            "since_replay": 5.0,
            "paused": False,
            "receivers": 1,
        }
    )
    meta: Rows = field(default_factory=list)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: Rows = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    closed: bool = False
    timeouts: list[float] = field(default_factory=list)

    def _key(self, query: str) -> str:
        if query is sql.SELECT_ONE:
            return "select1"
        if query is sql.FACTS:
            return "facts"
        if query is sql.REPLICAS:
            return "replicas"
        if query is sql.STANDBY:
            return "standby"
        if "unnest(" in query:
            return "meta"
        if "job_stats" in query:
            return "jobs"
        return "data"

    def _answer(self, key: str, query: str) -> Rows:
        if key == "select1":
            return [{"?column?": 1}]
        if key == "facts":
            return [self.facts]
        if key == "replicas":
            head = {"at": self.at, "position": self.position}
            if not self.replicas:
                return [{**head, **dict.fromkeys(_replica(), None)}]
            return [{**head, **row} for row in self.replicas]
        if key == "standby":
            return [self.standby]
        if key == "meta":
            return self.meta
        if key == "jobs":
            return self.jobs
        table = next(t for t in self.data if f'"{t}"' in query)
        return [self.data[table]]

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> Rows:
        """Answer ``query`` as asyncpg's ``Connection.fetch`` would."""
        assert timeout is not None
        self.timeouts.append(timeout)
        key = self._key(query)
        if key in self.delays:
            # Not a wait: a statement this slow is the server behaviour under test.
            await asyncio.sleep(self.delays[key])
        if key in self.errors:
            raise self.errors[key]
        return self._answer(key, query)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        """Answer ``query`` as asyncpg's ``Connection.fetchrow`` would."""
        rows = await self.fetch(query, *args, timeout=timeout)
        return rows[0] if rows else None

    def is_closed(self) -> bool:
        """Tell whether the fake connection was lost."""
        return self.closed


def _probe(
    server: FakeServer,
    *dimensions: DimensionSettings,
    history: sql.WalHistory | None = None,
    **kwargs: Any,
) -> tuple[TimescaleProbe, FakeTimescaleConnector]:
    connector = FakeTimescaleConnector(
        server, statement_timeout=kwargs.pop("statement_timeout", 5.0)
    )
    probe = TimescaleProbe(
        connector,
        dimensions=dimensions,
        history=history if history is not None else sql.WalHistory(),
        **kwargs,
    )
    return probe, connector


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _values(check: Check, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {m.labels: m.value for m in check.measurements if m.name == name}


def _meta(found: bool = True, time_type: str | None = "timestamp with time zone", **kw: Any) -> Any:
    return {"ord": 1, "found": found, "time_type": time_type, "is_hypertable": True, **kw}


DIM = DimensionSettings(name="trades", freshness_sla_seconds=60, recent_window_seconds=300)


async def test_healthy_primary_reports_every_check_on_one_connection() -> None:
    """A healthy primary yields the stable check set, all ok, from a single acquire."""
    server = FakeServer(meta=[_meta()], data={"trades": {"age": 2.5, "recent": 42}})
    probe, connector = _probe(server, DIM)
    checks = await probe()
    assert [c.name for c in checks] == [
        "connect",
        "recovery",
        "replication",
        "connections",
        "extension",
        "dimension:trades",
        "jobs",
    ]
    assert all(c.status is Status.OK for c in checks), checks
    assert connector.acquired == 1
    named = _by_name(checks)
    assert _values(named["connect"], "ingest_timescale_server_version") == {(): 150020.0}
    assert named["connect"].latency_seconds is not None
    assert _values(named["recovery"], "ingest_timescale_timeline") == {(): 1.0}
    dimension = named["dimension:trades"]
    labels = (("dimension", "trades"),)
    assert _values(dimension, "ingest_dimension_freshness_seconds") == {labels: 2.5}
    assert _values(dimension, "ingest_dimension_rows_recent") == {labels: 42.0}
    assert _values(dimension, "ingest_dimension_is_hypertable") == {labels: 1.0}
    assert _values(dimension, "ingest_dimension_freshness_sla_seconds") == {labels: 60.0}


async def test_every_measurement_is_declared_with_its_labels() -> None:
    """Each measurement name is in METRIC_SPECS and carries exactly the declared extra labels."""
    server = FakeServer(
        facts=_facts(in_recovery=True),
        replicas=[_replica(lag_bytes=10.0, replay_lag=0.5)],
        meta=[_meta()],
        data={"trades": {"age": 1.0, "recent": 1}},
    )
    probe, _ = _probe(server, DIM)
    specs = {s.name: s for s in METRIC_SPECS}
    seen = set()
    for check in await probe():
        for m in check.measurements:
            assert m.name in specs, m.name
            assert m.name.startswith("ingest_")
            extra = tuple(label for label in specs[m.name].labels if label != "deployment")
            assert tuple(k for k, _ in m.labels) == extra, m
            seen.add(m.name)
    assert seen == set(specs)


async def test_connections_over_ninety_percent_degrade() -> None:
    """More than 90% of max_connections in use degrades connections only, as capacity."""
    probe, _ = _probe(FakeServer(facts=_facts(connections=181, max_connections=200)))
    named = _by_name(await probe())
    assert named["connections"].status is Status.DEGRADED
    assert named["connections"].reason is Reason.CAPACITY
    assert _values(named["connections"], "ingest_timescale_connections") == {(): 181.0}
    assert _values(named["connections"], "ingest_timescale_max_connections") == {(): 200.0}
    assert named["extension"].status is Status.OK


async def test_missing_extension_degrades_and_skips_jobs() -> None:
    """Without TimescaleDB the extension check is degraded/missing and jobs are skipped."""
    facts = _facts(ts_version=None, ts_license=None, has_hypertables=False, has_job_stats=False)
    server = FakeServer(facts=facts, meta=[_meta(is_hypertable=False)])
    server.data = {"trades": {"age": 1.0, "recent": 3}}
    probe, _ = _probe(server, DIM)
    named = _by_name(await probe())
    assert named["extension"].status is Status.DEGRADED
    assert named["extension"].reason is Reason.MISSING
    assert "jobs" not in named
    assert "plain table" in named["dimension:trades"].detail
    assert named["dimension:trades"].status is Status.OK
    labels = (("dimension", "trades"),)
    assert _values(named["dimension:trades"], "ingest_dimension_is_hypertable") == {labels: 0.0}


@pytest.mark.parametrize(
    ("license_", "version", "edition", "label"),
    [
        ("apache", "2.19.3", "apache", "2.19.3"),
        ("timescale", "2.20.0", "community", "2.20.0"),
        (None, "2.1 beta{x}", "unknown", "2.1_beta_x_"),
    ],
)
async def test_extension_info_labels_are_bounded(
    license_: str | None, version: str, edition: str, label: str
) -> None:
    """The edition maps to apache/community/unknown and the version label is sanitised."""
    probe, _ = _probe(FakeServer(facts=_facts(ts_license=license_, ts_version=version)))
    named = _by_name(await probe())
    info = _values(named["extension"], "ingest_timescale_extension_info")
    assert info == {(("version", label), ("edition", edition)): 1.0}


async def test_hidden_replication_rows_mean_permission() -> None:
    """Rows with NULL state (no pg_monitor) leave replication unknown/permission, count kept."""
    hidden = _replica(state=None, client_addr=None, replay_position=None, lag_bytes=None)
    probe, _ = _probe(FakeServer(replicas=[hidden]))
    named = _by_name(await probe())
    check = named["replication"]
    assert (check.status, check.reason) == (Status.UNKNOWN, Reason.PERMISSION)
    assert _values(check, "ingest_timescale_replicas") == {(): 1.0}
    assert not _values(check, "ingest_timescale_replication_lag_seconds")
    assert named["connections"].status is Status.OK


async def test_replication_error_leaves_that_check_unknown_only() -> None:
    """A permission error reading pg_stat_replication leaves only replication unknown."""
    server = FakeServer(errors={"replicas": asyncpg.InsufficientPrivilegeError("denied")})
    probe, _ = _probe(server)
    named = _by_name(await probe())
    assert (named["replication"].status, named["replication"].reason) == (
        Status.UNKNOWN,
        Reason.PERMISSION,
    )
    assert all(c.status is Status.OK for n, c in named.items() if n != "replication")


async def test_replication_lag_grows_while_replay_is_stuck() -> None:
    """With replay_lag NULL, the seconds lag grows from the WAL history while bytes pile up."""
    history = sql.WalHistory()
    server = FakeServer(position=5000.0, at=100.0)
    server.replicas = [_replica(replay_position=1000.0, lag_bytes=4000.0)]
    probe, _ = _probe(server, history=history)
    label = (("replica", "r1"),)
    first = _by_name(await probe())["replication"]
    assert _values(first, "ingest_timescale_replication_lag_bytes") == {label: 4000.0}
    assert _values(first, "ingest_timescale_replication_lag_seconds") == {label: 0.0}
    server.at, server.position = 107.0, 9000.0
    server.replicas = [_replica(replay_position=1000.0, lag_bytes=8000.0)]
    second = _by_name(await probe())["replication"]
    assert _values(second, "ingest_timescale_replication_lag_seconds") == {label: 7.0}
    server.at = 110.0
    server.replicas = [_replica(replay_position=9000.0, lag_bytes=0.0, replay_lag=3.0)]
    caught_up = _by_name(await probe())["replication"]
    assert _values(caught_up, "ingest_timescale_replication_lag_seconds") == {label: 0.0}
    assert len(history) == 1


async def test_replay_lag_is_used_when_larger() -> None:
    """The walsender's replay_lag wins over the sampled lower bound when it is larger."""
    server = FakeServer(replicas=[_replica(replay_position=900.0, lag_bytes=100.0, replay_lag=4.5)])
    probe, _ = _probe(server)
    check = _by_name(await probe())["replication"]
    values = _values(check, "ingest_timescale_replication_lag_seconds")
    assert values == {(("replica", "r1"),): 4.5}


async def test_replica_series_are_capped() -> None:
    """Only MAX_REPLICAS replicas get lag series; the count covers them all."""
    rows = [_replica(f"r{i}", pid=i) for i in range(module.MAX_REPLICAS + 4)]
    probe, _ = _probe(FakeServer(replicas=rows))
    check = _by_name(await probe())["replication"]
    assert _values(check, "ingest_timescale_replicas") == {(): module.MAX_REPLICAS + 4.0}
    assert len(_values(check, "ingest_timescale_replication_lag_bytes")) == module.MAX_REPLICAS


@pytest.mark.parametrize(
    ("standby", "delay", "status"),
    [
        ({"pending_bytes": 0.0, "since_replay": 99.0, "paused": False, "receivers": 1}, 0.0, "ok"),
        ({"pending_bytes": None, "since_replay": None, "paused": False, "receivers": 1}, 0.0, "ok"),
        ({"pending_bytes": 8.0, "since_replay": 12.5, "paused": True, "receivers": 1}, 12.5, "ok"),
        ({"pending_bytes": 8.0, "since_replay": None, "paused": True, "receivers": 1}, None, "ok"),
        (
            {"pending_bytes": 0.0, "since_replay": 1.0, "paused": False, "receivers": 0},
            0.0,
            "degraded",
        ),
    ],
)
async def test_standby_reports_replay_delay(
    standby: dict[str, Any], delay: float | None, status: str
) -> None:
    """A standby reports in_recovery=1 and a replay delay that is 0 once all is replayed."""
    server = FakeServer(facts=_facts(in_recovery=True), standby=standby)
    probe, _ = _probe(server)
    named = _by_name(await probe())
    assert _values(named["recovery"], "ingest_timescale_in_recovery") == {(): 1.0}
    check = named["replication"]
    values = _values(check, "ingest_timescale_replay_delay_seconds")
    assert values == ({} if delay is None else {(): delay})
    assert check.status.value == status
    if status == "degraded":
        assert check.reason is Reason.MISSING
    if standby["paused"]:
        assert "paused" in check.detail


async def test_dimension_missing_table_column_and_type() -> None:
    """A missing table or column is missing; a non-time column type is an error."""
    dims = [
        DimensionSettings(name="a"),
        DimensionSettings(name="b"),
        DimensionSettings(name="c"),
    ]
    meta = [_meta(found=False), _meta(time_type=None), _meta(time_type="bigint")]
    probe, _ = _probe(FakeServer(meta=meta), *dims)
    named = _by_name(await probe())
    assert (named["dimension:a"].status, named["dimension:a"].reason) == (
        Status.DEGRADED,
        Reason.MISSING,
    )
    assert named["dimension:b"].reason is Reason.MISSING
    assert named["dimension:c"].reason is Reason.ERROR
    sla = _values(named["dimension:a"], "ingest_dimension_freshness_sla_seconds")
    assert sla == {(("dimension", "a"),): 3600.0}


@pytest.mark.parametrize(
    ("row", "reason", "freshness"),
    [
        ({"age": 61.0, "recent": 0}, Reason.STALE, 61.0),
        ({"age": None, "recent": 0}, Reason.STALE, None),
        ({"age": 59.0, "recent": 3}, None, 59.0),
        ({"age": -3.0, "recent": 3}, None, 0.0),
    ],
)
async def test_dimension_freshness_against_sla(
    row: dict[str, Any], reason: Reason | None, freshness: float | None
) -> None:
    """Older than the SLA or empty is stale; an empty table publishes no freshness sample."""
    probe, _ = _probe(FakeServer(meta=[_meta()], data={"trades": row}), DIM)
    check = _by_name(await probe())["dimension:trades"]
    assert check.reason is reason
    assert check.status is (Status.OK if reason is None else Status.DEGRADED)
    values = _values(check, "ingest_dimension_freshness_seconds")
    assert values == ({} if freshness is None else {(("dimension", "trades"),): freshness})
    assert all(math.isfinite(m.value) for m in check.measurements)


async def test_dimension_query_timeout_keeps_other_checks() -> None:
    """A timed-out data query leaves that dimension unknown/timeout, keeping config gauges."""
    server = FakeServer(meta=[_meta()], errors={"data": asyncpg.QueryCanceledError("cancel")})
    probe, _ = _probe(server, DIM)
    named = _by_name(await probe())
    check = named["dimension:trades"]
    assert (check.status, check.reason) == (Status.UNKNOWN, Reason.TIMEOUT)
    assert _values(check, "ingest_dimension_is_hypertable")
    assert named["jobs"].status is Status.OK


@pytest.mark.parametrize(
    ("license_", "counted"),
    [("apache", 1), ("timescale", 2)],
)
async def test_jobs_count_failures_but_not_license_refusals(license_: str, counted: int) -> None:
    """Failed jobs are counted; a 0A000 refusal under the apache license is not."""
    jobs = [
        {"job_id": 3, "last_run_status": "Failed", "total_failures": 1.0, "last_error": "0A000"},
        {"job_id": 1000, "last_run_status": "Failed", "total_failures": 4.0, "last_error": "P0001"},
        {"job_id": 1001, "last_run_status": "Success", "total_failures": 0.0, "last_error": None},
    ]
    probe, _ = _probe(FakeServer(facts=_facts(ts_license=license_), jobs=jobs))
    check = _by_name(await probe())["jobs"]
    assert _values(check, "ingest_timescale_jobs_failed") == {(): float(counted)}
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.ERROR)


async def test_lost_connection_fails_the_whole_probe() -> None:
    """A statement that kills the connection fails the probe instead of degrading checks."""
    server = FakeServer(errors={"replicas": ConnectionResetError(errno.ECONNRESET, "reset")})
    server.closed = True
    probe, _ = _probe(server)
    with pytest.raises(ConnectionLost) as caught:
        await probe()
    assert caught.value.reason == "refused"


async def test_connection_lost_after_a_timeout_reports_the_timeout() -> None:
    """A connection dropped after a statement timed out is reported as a timeout."""

    class DroppingServer(FakeServer):
        async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> Rows:
            """Time out the replication query, then behave like a closed connection."""
            if self.closed:
                raise asyncpg.InterfaceError("cannot perform operation: connection is closed")
            if query is sql.REPLICAS:
                self.closed = True
                raise TimeoutError
            return await super().fetch(query, *args, timeout=timeout)

    probe, _ = _probe(DroppingServer(meta=[_meta()]), DIM)
    with pytest.raises(ConnectionLost) as caught:
        await probe()
    assert caught.value.reason == "timeout"


async def test_select_one_timeout_is_a_probe_timeout() -> None:
    """A timed-out SELECT 1 fails the probe as `timeout` with the statement named."""
    probe, _ = _probe(FakeServer(errors={"select1": TimeoutError()}))
    with pytest.raises(ProbeError) as caught:
        await probe()
    assert caught.value.reason == "timeout"
    assert "SELECT 1" in caught.value.detail


async def test_facts_failure_reports_every_check_as_not_run() -> None:
    """When the facts query fails, connect stays ok and every other check says why."""
    server = FakeServer(errors={"facts": asyncpg.QueryCanceledError("cancel")})
    probe, _ = _probe(server, DIM)
    checks = await probe()
    assert checks[0].name == "connect"
    assert checks[0].status is Status.OK
    rest = checks[1:]
    assert [c.name for c in rest] == [
        "recovery",
        "replication",
        "connections",
        "extension",
        "dimension:trades",
    ]
    assert all((c.status, c.reason) == (Status.UNKNOWN, Reason.TIMEOUT) for c in rest)


async def test_budget_bounds_each_statement() -> None:
    """Statements get the server timeout plus a backstop margin; a spent budget times out."""
    server = FakeServer(delays={"replicas": 0.3}, meta=[_meta()], data={"trades": {}})
    probe, _ = _probe(server, DIM, timeout=0.25, statement_timeout=0.1)
    named = _by_name(await probe())
    # The server's statement_timeout (0.1 s) should win; the client backstop is a bit later.
    assert max(server.timeouts) == pytest.approx(0.1 * 1.25 + 0.05)
    assert named["dimension:trades"].reason is Reason.TIMEOUT
    assert "budget" in named["dimension:trades"].detail


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("trades", '"trades"'), ("Trades_2", '"Trades_2"'), ("_x", '"_x"')],
)
def test_quote_ident_quotes_plain_identifiers(name: str, quoted: str) -> None:
    """Plain identifiers come back double-quoted with their case kept."""
    assert sql.quote_ident(name) == quoted


@pytest.mark.parametrize(
    "name", ["", "1abc", 'a"b', "a;drop table x", "a b", "a" * 64, "ä", "a.b", "x--"]
)
def test_quote_ident_rejects_everything_else(name: str) -> None:
    """Anything but a plain identifier of at most 63 characters is refused."""
    with pytest.raises(ValueError, match="identifier"):
        sql.quote_ident(name)


def test_quote_table_handles_schema_qualified_names() -> None:
    """schema.table is quoted part by part; more dots are refused."""
    assert sql.quote_table("metrics.trades") == '"metrics"."trades"'
    with pytest.raises(ValueError, match=r"schema\.table"):
        sql.quote_table("a.b.c")


def test_dimension_data_quotes_and_refuses_unknown_types() -> None:
    """The data query uses quoted names and only the whitelisted casts."""
    text = sql.dimension_data("s.t", "time", "timestamptz")
    assert '"s"."t"' in text
    assert 'ORDER BY "time" DESC LIMIT 1' in text
    with pytest.raises(ValueError, match="unsupported"):
        sql.dimension_data("t", "time", "bigint; drop")


def test_replica_labels_are_unique_and_bounded() -> None:
    """Default or empty names fall back to the address; repeats get a suffix; text is safe."""
    rows = [
        ("walreceiver", "10.0.0.1"),
        ("walreceiver", "10.0.0.1"),
        (None, None),
        ("bad name{x}", "10.0.0.2"),
        ("x" * 100, None),
    ]
    labels = sql.replica_labels(rows)
    assert labels[:4] == ["10.0.0.1", "10.0.0.1#2", "local", "bad_name_x_"]
    assert len(labels[4]) == 64
    assert sql.bounded_label("") == "unknown"


def test_wal_history_ages_and_prunes() -> None:
    """The history keeps the first time each position existed and forgets replayed WAL."""
    history = sql.WalHistory()
    history.record(100.0, 10.0)
    history.record(100.0, 20.0)
    history.record(200.0, 30.0)
    assert history.age(50.0, 40.0) == 30.0
    assert history.age(150.0, 40.0) == 10.0
    assert history.age(200.0, 40.0) == 0.0
    history.prune([150.0])
    assert history.age(50.0, 40.0) == 10.0
    history.record(10.0, 50.0)
    assert len(history) == 1
    history.prune([])
    assert len(history) == 1


def test_history_is_kept_per_connector() -> None:
    """The same connector always gets the same history; another gets its own."""
    first, second = FakeTimescaleConnector(FakeServer()), FakeTimescaleConnector(FakeServer())
    assert sql.history_for(first) is sql.history_for(first)
    assert sql.history_for(first) is not sql.history_for(second)


@pytest.mark.parametrize("mod", [module, sql])
def test_all_lists_real_exports(mod: Any) -> None:
    """Every name in __all__ exists in the module."""
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []


@pytest.mark.parametrize(("timeline", "expected"), [(3, {(): 3.0}), (None, {})])
async def test_timeline_is_a_gauge_of_the_servers_timeline(
    timeline: int | None, expected: dict[tuple[tuple[str, str], ...], float]
) -> None:
    """The recovery check publishes the timeline as it is (absent when the server hides it)."""
    server = FakeServer(facts=_facts(in_recovery=True, timeline=timeline))
    probe, _ = _probe(server)
    named = _by_name(await probe())
    assert _values(named["recovery"], "ingest_timescale_timeline") == expected
    shown = f"standby (in recovery), timeline {timeline}" if timeline else "standby (in recovery)"
    assert named["recovery"].detail == shown
