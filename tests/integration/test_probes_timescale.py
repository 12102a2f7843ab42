from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
from pydantic import SecretStr

from exporter.config import DimensionSettings, TimescaleSettings
from exporter.connectors.timescale import TimescaleConnector
from exporter.probes import _timescale_sql as sql
from exporter.probes.base import Check, ProbeResult, Reason, Status
from exporter.probes.runner import ProbeRunner
from exporter.probes.timescale import TimescaleProbe
from tests.integration.pg_instance import PgReplica
from tests.waiting import wait_for

TableFactory = Callable[..., Awaitable[str]]


def _url(base: str, *, user: str | None = None, password: str | None = None, port: int = 0) -> str:
    """Return ``base`` with another user, password or port."""
    parts = urlsplit(base)
    login = quote(user or parts.username or "", safe="")
    secret = quote(password if password is not None else parts.password or "", safe="")
    netloc = f"{login}:{secret}@{parts.hostname}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def _connector(
    url: str, *, app: str, statement_timeout: float = 5.0, connect_timeout: float = 5.0
) -> AsyncIterator[TimescaleConnector]:
    settings = TimescaleSettings(
        url=SecretStr(url), application_name=app, statement_timeout_seconds=statement_timeout
    )
    connector = TimescaleConnector(settings, connect_timeout=connect_timeout)
    await connector.start()
    try:
        yield connector
    finally:
        await connector.stop()


def _named(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _value(check: Check, name: str, **labels: str) -> float | None:
    for m in check.measurements:
        if m.name == name and all(dict(m.labels).get(k) == v for k, v in labels.items()):
            return m.value
    return None


@pytest.fixture
async def admin(service_env: dict[str, str]) -> AsyncIterator[Any]:
    """Return a superuser connection to the shared database."""
    conn = await asyncpg.connect(service_env["TIMESCALE_ADMIN_URL"])
    yield conn
    await conn.close()


@pytest.fixture
async def tables(service_env: dict[str, str], unique: str) -> AsyncIterator[TableFactory]:
    """Create unique tables as the ingest role (optionally hypertables with rows); drop them."""
    conn = await asyncpg.connect(service_env["TIMESCALEDB_URL"])
    created: list[str] = []

    async def make(suffix: str, *, ages: tuple[float, ...] = (), hypertable: bool = False) -> str:
        name = f"probe_{suffix}_{unique}"
        created.append(name)
        await conn.execute(f'CREATE TABLE "{name}" (time timestamptz NOT NULL, v int)')
        if hypertable:
            await conn.execute("SELECT create_hypertable($1::regclass, 'time')", f'"{name}"')
        await conn.executemany(
            f'INSERT INTO "{name}" VALUES (now() - make_interval(secs => $1::float8), 1)',  # noqa: S608 - test table name
            [(age,) for age in ages],
        )
        return name

    yield make
    for name in created:
        await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    await conn.close()


async def _run(connector: TimescaleConnector, *dims: DimensionSettings) -> dict[str, Check]:
    return _named(await TimescaleProbe(connector, dimensions=dims)())


async def test_healthy_database_reports_every_check(
    service_env: dict[str, str], unique: str, tables: TableFactory
) -> None:
    """On the shared primary every server check is ok with real numbers."""
    table = await tables("ok", ages=(5.0,))
    dim = DimensionSettings(name="ok", table=table)
    async with _connector(service_env["TIMESCALEDB_URL"], app=f"probe-{unique}") as connector:
        named = await _run(connector, dim)
    for name in ("connect", "recovery", "replication", "connections", "extension", "dimension:ok"):
        assert named[name].status is Status.OK, named[name]
    assert (_value(named["connect"], "ingest_timescale_server_version") or 0) >= 150000
    assert _value(named["recovery"], "ingest_timescale_in_recovery") == 0.0
    assert (_value(named["connections"], "ingest_timescale_connections") or 0) >= 1
    assert _value(named["connections"], "ingest_timescale_max_connections") == 200.0
    info = _value(named["extension"], "ingest_timescale_extension_info", edition="apache")
    assert info == 1.0
    assert "2.19" in named["extension"].detail
    # 2.19's own job history retention job is refused by the apache license: not a failure.
    assert named["jobs"].status is Status.OK
    assert _value(named["jobs"], "ingest_timescale_jobs_failed") == 0.0


async def test_dimension_missing_stale_fresh_and_empty(
    service_env: dict[str, str], unique: str, tables: TableFactory
) -> None:
    """Missing -> missing; older than the SLA -> stale; empty -> stale; fresh -> ok."""
    stale = await tables("stale", ages=(7200.0, 7300.0))
    fresh = await tables("fresh", ages=(3.0, 30.0, 4000.0))
    empty = await tables("empty")
    dims = (
        DimensionSettings(name="gone", table=f"public.probe_gone_{unique}"),
        DimensionSettings(name="stale", table=f"public.{stale}", freshness_sla_seconds=3600),
        DimensionSettings(name="fresh", table=fresh, freshness_sla_seconds=60),
        DimensionSettings(name="empty", table=empty),
    )
    async with _connector(service_env["TIMESCALEDB_URL"], app=f"probe-{unique}") as connector:
        named = await _run(connector, *dims)
    gone = named["dimension:gone"]
    assert (gone.status, gone.reason) == (Status.DEGRADED, Reason.MISSING)
    check = named["dimension:stale"]
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.STALE)
    age = _value(check, "ingest_dimension_freshness_seconds", dimension="stale")
    assert age is not None
    assert 7190 < age < 7300
    check = named["dimension:fresh"]
    assert check.status is Status.OK, check
    age = _value(check, "ingest_dimension_freshness_seconds", dimension="fresh")
    assert age is not None
    assert 2.0 < age < 30
    assert _value(check, "ingest_dimension_rows_recent", dimension="fresh") == 2.0
    assert _value(check, "ingest_dimension_is_hypertable", dimension="fresh") == 0.0
    assert "plain table" in check.detail
    check = named["dimension:empty"]
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.STALE)
    assert _value(check, "ingest_dimension_freshness_seconds") is None
    assert _value(check, "ingest_dimension_rows_recent", dimension="empty") == 0.0


async def test_hypertable_is_detected_with_quoted_names(
    service_env: dict[str, str], unique: str, admin: Any
) -> None:
    """A mixed-case, schema-qualified hypertable is found, detected and aged via its index."""
    schema, table = f"Probe_S_{unique}", f"Ticks_{unique}"
    rel = f'"{schema}"."{table}"'
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        await admin.execute(f"CREATE TABLE {rel} (time timestamptz NOT NULL, v int)")
        await admin.execute("SELECT create_hypertable($1::regclass, 'time')", rel)
        await admin.execute(
            f"INSERT INTO {rel} SELECT g, 1 FROM generate_series("  # noqa: S608 - test table
            "now() - interval '1 second', now() - interval '30 days', interval '-1 minute') g"
        )
        dim = DimensionSettings(name="ticks", table=f"{schema}.{table}", freshness_sla_seconds=600)
        # The probe's own statement opens only the newest chunk of the hypertable.
        query = sql.dimension_data(dim.table, dim.time_column, "timestamptz")
        plan = await admin.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {query}", 3600.0)
        text = "\n".join(r[0] for r in plan)
        assert "ChunkAppend" in text
        assert text.count("never executed") >= 3, text
        async with _connector(service_env["TIMESCALE_ADMIN_URL"], app=f"probe-{unique}") as c:
            named = await _run(c, dim)
        check = named["dimension:ticks"]
        assert check.status is Status.OK, check
        assert _value(check, "ingest_dimension_is_hypertable") == 1.0
        assert _value(check, "ingest_dimension_rows_recent") == 60.0
        assert check.detail.startswith("hypertable;")
        age = _value(check, "ingest_dimension_freshness_seconds")
        assert age is not None
        assert 0.5 < age < 60
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_database_without_timescaledb(
    service_env: dict[str, str], unique: str, admin: Any
) -> None:
    """Without the extension: extension degraded/missing, jobs skipped, nothing is down."""
    database = f"probe_plain_{unique}"
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        url = urlunsplit(urlsplit(service_env["TIMESCALE_ADMIN_URL"])._replace(path=database))
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE t (time timestamptz, v int)")
        await conn.execute("INSERT INTO t VALUES (now(), 1)")
        await conn.close()
        async with _connector(url, app=f"probe-{unique}") as connector:
            named = await _run(connector, DimensionSettings(name="t"))
        assert (named["extension"].status, named["extension"].reason) == (
            Status.DEGRADED,
            Reason.MISSING,
        )
        assert "jobs" not in named
        assert named["dimension:t"].status is Status.OK
        assert _value(named["dimension:t"], "ingest_dimension_is_hypertable") == 0.0
        assert all(c.status is not Status.DOWN for c in named.values())
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def _write(url: str, table: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f'INSERT INTO "{table}" SELECT now(), g FROM generate_series(1, $1::int) g',  # noqa: S608
            rows,
        )
    finally:
        await conn.close()


async def _lag(connector: TimescaleConnector, replica: str) -> tuple[float, float]:
    check = (await _run(connector))["replication"]
    assert check.status is Status.OK, check
    seconds = _value(check, "ingest_timescale_replication_lag_seconds", replica=replica)
    size = _value(check, "ingest_timescale_replication_lag_bytes", replica=replica)
    assert seconds is not None
    assert size is not None, check
    return seconds, size


async def test_replication_lag_grows_while_replay_is_paused(
    service_env: dict[str, str], unique: str, tables: TableFactory
) -> None:
    """A paused streaming replica shows growing lag (bytes and seconds); resumed, it drains."""
    table = await tables("repl")
    primary = service_env["TIMESCALEDB_URL"]
    async with (
        PgReplica(service_env["TIMESCALE_ADMIN_URL"]) as replica,
        _connector(primary, app=f"probe-{unique}") as connector,
    ):
        standby = await asyncpg.connect(replica.url)
        try:
            await standby.execute("SELECT pg_wal_replay_pause()")
            await _write(primary, table, 2000)
            first = await _lag(connector, replica.name)
            # Not a wait: the lag in seconds grows with time itself.
            await asyncio.sleep(1.2)
            await _write(primary, table, 2000)
            second = await _lag(connector, replica.name)
            assert first[1] > 0
            assert second[1] > first[1]
            assert second[0] > first[0]
            assert second[0] >= 1.0
        finally:
            await standby.execute("SELECT pg_wal_replay_resume()")
            await standby.close()

        async def drained() -> bool:
            # Other tests write to the shared primary too, so "drained" allows a few pages.
            return await _lag(connector, replica.name) <= (0.5, 65536.0)

        await wait_for(drained, timeout=15, interval=0.2)


async def _wal_position(primary_admin_url: str) -> str:
    """Return the primary's current WAL position."""
    conn = await asyncpg.connect(primary_admin_url)
    try:
        return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await conn.close()


async def _replayed(standby: Any, position: str) -> bool:
    """Tell whether the standby has replayed the WAL up to ``position``."""
    return bool(
        await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", position)
    )


async def _replay_paused(standby: Any) -> bool:
    """Tell whether the standby's pause is in force: no further record will be replayed.

    Recovery checks the request before it applies each record, so "pause requested" (no
    record arrived since) already holds the next one back.
    """
    state = await standby.fetchval("SELECT pg_get_wal_replay_pause_state()")
    return state in ("pause requested", "paused")


async def _received_unreplayed(standby: Any) -> bool:
    """Tell whether the standby has received WAL it has not replayed yet."""
    return bool(
        await standby.fetchval("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")
    )


async def test_standby_reports_recovery_and_replay_delay(
    service_env: dict[str, str], unique: str, tables: TableFactory
) -> None:
    """Probing a standby: in_recovery=1, delay 0 when replayed, growing while paused."""
    table = await tables("standby")
    primary = service_env["TIMESCALEDB_URL"]
    async with PgReplica(service_env["TIMESCALE_ADMIN_URL"]) as replica:
        standby_url = _url(primary, port=replica.port)  # the ingest role, not a superuser
        admin = await asyncpg.connect(replica.url)
        async with _connector(standby_url, app=f"probe-{unique}") as connector:

            async def delay() -> tuple[float | None, Check]:
                named = await _run(connector)
                assert _value(named["recovery"], "ingest_timescale_in_recovery") == 1.0
                check = named["replication"]
                return _value(check, "ingest_timescale_replay_delay_seconds"), check

            try:
                await _write(primary, table, 10)
                await replica.wait_streaming()
                written = await _wal_position(service_env["TIMESCALE_ADMIN_URL"])
                await wait_for(lambda: _replayed(admin, written), timeout=15)
                value, check = await delay()
                assert value == 0.0
                assert check.status is Status.OK, check
                await admin.execute("SELECT pg_wal_replay_pause()")
                await wait_for(lambda: _replay_paused(admin), timeout=15)
                await _write(primary, table, 10)
                await wait_for(lambda: _received_unreplayed(admin), timeout=15)
                first, check = await delay()
                assert "paused" in check.detail
                # Not a wait: the replay delay grows with time itself.
                await asyncio.sleep(1.0)
                second, _ = await delay()
                assert first is not None
                assert second is not None
                assert first > 0
                assert second >= first + 0.9
            finally:
                await admin.execute("SELECT pg_wal_replay_resume()")

            async def caught_up() -> bool:
                return (await delay())[0] == 0.0

            await wait_for(caught_up, timeout=15, interval=0.2)
        await admin.close()


async def test_replication_without_pg_monitor_is_permission(
    service_env: dict[str, str], unique: str, admin: Any
) -> None:
    """A role without pg_monitor sees replicas with NULL state: replication is `permission`."""
    role, password = f"probe_nomon_{unique}", f"pw_{unique}"
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    url = _url(service_env["TIMESCALEDB_URL"], user=role, password=password)
    try:
        async with PgReplica(service_env["TIMESCALE_ADMIN_URL"]) as replica:
            conn = await asyncpg.connect(url)
            try:
                assert not await conn.fetchval(
                    "SELECT pg_has_role($1, 'pg_monitor', 'USAGE')", role
                )
                rows = await conn.fetch(
                    "SELECT state, replay_lsn FROM pg_stat_replication WHERE application_name = $1",
                    replica.name,
                )
                # PostgreSQL 15 lists the replica to anyone, but hides its state and positions.
                assert [tuple(r) for r in rows] == [(None, None)]
            finally:
                await conn.close()
            async with _connector(url, app=f"probe-{unique}") as connector:
                named = await _run(connector)
            check = named["replication"]
            assert (check.status, check.reason) == (Status.UNKNOWN, Reason.PERMISSION)
            assert (_value(check, "ingest_timescale_replicas") or 0) >= 1
            others = [c for n, c in named.items() if n != "replication"]
            assert all(c.status is Status.OK for c in others), others
            # The ingest role holds pg_monitor (scripts/services.sh): it sees the lag.
            async with _connector(service_env["TIMESCALEDB_URL"], app=f"probe-{unique}") as c:
                check = (await _run(c))["replication"]
            assert check.status is Status.OK
            assert _value(
                check, "ingest_timescale_replication_lag_bytes", replica=replica.name
            ) == (pytest.approx(0.0, abs=1 << 20))
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f"DROP ROLE IF EXISTS {role}")


async def _failure(url: str, timeout: float = 2.0) -> tuple[ProbeResult, float]:
    runner = ProbeRunner(default_timeout=timeout)
    try:
        async with _connector(url, app="probe-failure", connect_timeout=timeout) as connector:
            t0 = time.perf_counter()
            probe = TimescaleProbe(connector, timeout=timeout)
            results = await runner.run_one(probe)
            elapsed = time.perf_counter() - t0
    finally:
        runner.close()
    # connect is down; every other check is still reported, unknown with the same reason.
    assert [r.check for r in results] == list(probe.checks)
    assert results[0].status is Status.DOWN
    assert results[0].check == "connect"
    assert {(r.status, r.reason) for r in results[1:]} == {(Status.UNKNOWN, results[0].reason)}
    return results[0], elapsed


async def test_wrong_password_is_auth(service_env: dict[str, str]) -> None:
    """A wrong password fails the probe as `auth` without leaking the password."""
    result, _ = await _failure(_url(service_env["TIMESCALEDB_URL"], password="Wr0ngPw_x9"))
    assert result.reason is Reason.AUTH
    assert "Wr0ngPw_x9" not in result.detail


async def test_unused_port_is_refused(service_env: dict[str, str]) -> None:
    """Nothing listening on the port (a stopped server) is `refused`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result, _ = await _failure(_url(service_env["TIMESCALEDB_URL"], port=port))
    assert result.reason is Reason.REFUSED


async def test_blackhole_is_timeout_within_budget(
    service_env: dict[str, str], blackhole: int
) -> None:
    """A server that never answers is `timeout` within the timeout plus 10%."""
    result, elapsed = await _failure(_url(service_env["TIMESCALEDB_URL"], port=blackhole), 1.0)
    assert result.reason is Reason.TIMEOUT
    assert elapsed <= 1.1


async def _backends(admin: Any, app: str) -> int:
    return int(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
        )
    )


async def _settle(admin: Any, app: str, expected: int) -> None:
    """Wait (5 s at most) until ``app`` has ``expected`` backends: exits are asynchronous."""

    async def settled() -> bool:
        return await _backends(admin, app) == expected

    await wait_for(settled, timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("faults", [False, True], ids=["healthy", "faults"])
async def test_connection_budget_after_1000_cycles(
    service_env: dict[str, str], unique: str, faults: bool
) -> None:
    """1,000 probe runs, healthy or failing, end with the connections of the first run."""
    app = f"probe-budget-{unique}"
    table = f"probe_locked_{unique}"
    dims = [DimensionSettings(name="locked", table=table)]
    if faults:
        dims.append(DimensionSettings(name="gone", table=f"probe_gone_{unique}"))
    # A private primary: this test locks a table for a while, and an outage of the shared
    # cluster (other tests stop it) must not count against the probe's connections.
    async with PgReplica(service_env["TIMESCALE_ADMIN_URL"]) as server:
        await server.promote()
        url = _url(service_env["TIMESCALEDB_URL"], port=server.port)
        admin = await asyncpg.connect(server.url)
        await admin.execute(f'CREATE TABLE "{table}" (time timestamptz NOT NULL, v int)')
        await admin.execute(f'GRANT SELECT ON "{table}" TO ingest')
        await admin.execute(f'INSERT INTO "{table}" VALUES (now(), 1)')  # noqa: S608
        holder = await asyncpg.connect(server.url)
        transaction = holder.transaction()
        await transaction.start()
        if faults:
            # Every read of the table waits for this lock until the 10 ms statement timeout.
            await holder.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        runner = ProbeRunner(default_timeout=5.0)
        reasons: dict[str, int] = {}
        try:
            async with _connector(
                url, app=app, statement_timeout=0.01 if faults else 5.0
            ) as connector:
                probe = TimescaleProbe(connector, dimensions=dims)
                await runner.run_one(probe)
                first = await _backends(admin, app)
                assert 1 <= first <= connector.settings.pool_max_size
                for cycle in range(1000):
                    for result in await runner.run_one(probe):
                        if result.reason is not None:
                            key = f"{result.check}:{result.reason.value}"
                            reasons[key] = reasons.get(key, 0) + 1
                    if cycle % 100 == 0:
                        assert await _backends(admin, app) <= connector.settings.pool_max_size
                await _settle(admin, app, first)
        finally:
            runner.close()
            await transaction.rollback()
            await holder.close()
        await _settle(admin, app, 0)
        await admin.close()
    if faults:
        # A 10 ms statement timeout now and then cancels a catalog query too: most runs
        # still see the table lock and the missing table themselves.
        assert reasons.get("dimension:gone:missing", 0) >= 900, reasons
        assert reasons.get("dimension:locked:timeout", 0) >= 900, reasons
    else:
        assert reasons == {}


async def test_probe_latency_on_loopback(
    service_env: dict[str, str], unique: str, tables: TableFactory
) -> None:
    """The median probe run on loopback stays in single-digit milliseconds."""
    table = await tables("latency", ages=(1.0, 2.0), hypertable=True)
    dims = (DimensionSettings(name="latency", table=table),)
    async with _connector(service_env["TIMESCALEDB_URL"], app=f"probe-{unique}") as connector:
        medians = {}
        for label, probe in (
            ("no dimensions", TimescaleProbe(connector)),
            ("one hypertable dimension", TimescaleProbe(connector, dimensions=dims)),
        ):
            await probe()
            runs = []
            for _ in range(100):
                t0 = time.perf_counter()
                await probe()
                runs.append(time.perf_counter() - t0)
            medians[label] = statistics.median(runs)
    print(f"timescale probe median of 100 runs on loopback: {medians}")
    assert all(m < 0.05 for m in medians.values()), medians
