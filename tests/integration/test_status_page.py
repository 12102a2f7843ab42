"""The status pages against the real stack: no secret on any page, no I/O on any render."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from exporter.config import IngestSettings

from .conftest import running_daemon, wait_for
from .daemon_process import DaemonProcess
from .drill_support import create_dimension, drill_settings, drop_table
from .redis_instance import RedisServers

CANARY = "Canary-pw-2903-status"
PAGES = ("/", "/?refresh=0", "/probes", "/drills", "/api/v1/status", "/api/v1/probes")
OTHERS = ("/metrics", "/-/ready", "/api/v1/manifest", "/api/v1/connectivity", "/api/v1/failover")


def _with_password(url: str, password: str) -> str:
    """Return ``url`` with ``password`` (multi-host URLs too: only the user part changes)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or 'default'}:{quote(password, safe='')}@{hosts}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _get(session: aiohttp.ClientSession, url: str, **headers: str) -> str:
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, url
        return await response.text()


async def test_canary_password_never_appears_on_any_page(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """With a canary password in every URL, no page, JSON view or cycle detail shows it."""
    daemon = DaemonProcess(
        {
            "TIMESCALEDB_URL": _with_password(service_env["TIMESCALEDB_URL"], CANARY),
            "TIMESCALE_REPLICA_URL": _with_password(service_env["TIMESCALE_REPLICA_URL"], CANARY),
            "TIMESCALE_WRITE_URL": _with_password(service_env["TIMESCALE_WRITE_URL"], CANARY),
            "REDIS_URL": _with_password(service_env["REDIS_URL"], CANARY),
            # A typo'd name: / warns about it by name, never by value.
            "REDIS_URLS": _with_password(service_env["REDIS_URL"], CANARY),
            "KAFKA_BOOTSTRAP_SERVERS": service_env["KAFKA_BOOTSTRAP_SERVERS"],
            "INGEST_PROBE_INTERVAL_SECONDS": "1",
            "INGEST_PROBE_TIMEOUT_SECONDS": "0.5",
            "KAFKA_MANIFEST_PUBLISH": "false",
            "INGEST_LOG_LEVEL": "debug",  # the most a cycle can capture and a log can say
        },
        tmp_path / "daemon.log",
    )
    base = await asyncio.to_thread(daemon.start)
    bodies: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as session:

            async def two_cycles() -> list[dict[str, Any]]:
                listing = await (await session.get(base + "/api/v1/probes")).json()
                cycles: list[dict[str, Any]] = listing["deployments"][0]["cycles"]
                return cycles if len(cycles) >= 2 else []

            cycles = await wait_for(two_cycles, timeout=10, interval=0.1)
            paths = [*PAGES, *OTHERS]
            paths += [f"/probes/{c['id']}" for c in cycles]
            paths += [f"/api/v1/probes/{c['id']}" for c in cycles]
            for path in paths:
                bodies[path] = await _get(session, base + path)
            for path in ("/", "/probes", "/drills", f"/probes/{cycles[0]['id']}"):
                bodies[f"{path} (json)"] = await _get(
                    session, base + path, Accept="application/json"
                )
    finally:
        await asyncio.to_thread(daemon.stop)
    leaks = [path for path, body in bodies.items() if CANARY in body]
    assert not leaks, leaks
    # Not vacuous: the pages did show the failures the canary caused, with their log lines.
    index = bodies["/"]
    assert 'data-connector="timescale" data-status="down"' in index
    assert '<td class="reason" data-label="reason">auth</td>' in index
    assert "<code>REDIS_URLS</code>: unknown variable" in index
    detail = bodies[f"/probes/{cycles[-1]['id']}"]
    assert detail.count('<tr class="log-line"') >= 3
    assert CANARY not in daemon.log.read_text()


@pytest.fixture
async def private_redis(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[int]:
    """Start a private redis-server whose command counters only this test moves."""
    servers = RedisServers(service_env["INGEST_REDIS_SERVER"], tmp_path)
    yield await servers.start()
    await servers.close()


async def _backends(url: str, application: str) -> list[tuple[Any, ...]]:
    """Return each of ``application``'s PostgreSQL backends with when it last ran a query."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT pid, backend_start, query_start, state_change FROM pg_stat_activity"
            " WHERE application_name = $1 ORDER BY pid",
            application,
        )
    finally:
        await conn.close()
    return [tuple(row) for row in rows]


async def test_rendering_the_pages_sends_nothing_to_a_service(
    settings_factory: Callable[..., IngestSettings],
    service_env: dict[str, str],
    private_redis: int,
    unique: str,
) -> None:
    """Two hundred page renders leave Redis's command counter and PostgreSQL's backends idle."""
    application = f"status-noio-{unique}"  # names this daemon's backends on the shared server
    settings = settings_factory(
        REDIS_URL=f"redis://127.0.0.1:{private_redis}/0", TIMESCALE_APPLICATION_NAME=application
    )
    client = aioredis.Redis(host="127.0.0.1", port=private_redis)
    admin = service_env["TIMESCALEDB_URL"]
    async with running_daemon(settings) as (daemon, base), aiohttp.ClientSession() as session:
        await wait_for(lambda: daemon.state.ready, timeout=15)
        # Only page renders may run from here on: no probe cycle, no cache refresh.
        await daemon.supervisor.cancel_all(timeout=5)
        (cycle,) = daemon.state.history.cycles("local")[:1]
        backends = await _backends(admin, application)
        before = await client.info("stats")
        for _ in range(40):
            for path in ("/", "/probes", f"/probes/{cycle.id}", "/drills", "/api/v1/status"):
                await _get(session, base + path)
            await _get(session, base + "/", Accept="application/json")
        after = await client.info("stats")
        # Same backends (none opened), and none started a query or changed state since.
        assert await _backends(admin, application) == backends
    await client.aclose()
    # Not vacuous: the daemon's probe pool was connected, and its queries are visible to us.
    assert backends
    assert all(query_start is not None for _, _, query_start, _ in backends), backends
    # The second INFO counts the first one, and nothing else happened on the server.
    assert after["total_commands_processed"] - before["total_commands_processed"] == 1
    assert after["total_connections_received"] == before["total_connections_received"]


async def test_a_real_fallback_drill_shows_on_the_pages(
    settings_factory: Callable[..., IngestSettings],
    service_env: dict[str, str],
    tmp_path: Path,
    unique: str,
) -> None:
    """A drill run on the local standby is listed on / and /drills; its report is HTML."""
    replica = service_env["TIMESCALE_REPLICA_URL"]
    password = urlsplit(replica).password
    assert password
    table = f"status_drill_{unique}"
    token = f"t-{unique}"
    (tmp_path / "token").write_text(token)
    await create_dimension(service_env["TIMESCALEDB_URL"], table)
    try:
        settings = drill_settings(
            settings_factory,
            tmp_path,
            dimension="trades",
            table=table,
            drill={"label": f"status-{unique}", "token_file": str(tmp_path / "token")},
            TIMESCALE_REPLICA_URL=replica,
        )
        async with running_daemon(settings) as (daemon, base), aiohttp.ClientSession() as session:
            headers = {"X-Drill-Token": token}
            async with session.post(f"{base}/api/v1/drills", headers=headers) as response:
                assert response.status == 202, await response.text()
                drill_id = (await response.json())["drill_id"]
            await wait_for(lambda: daemon.drills.recent.get(drill_id), timeout=30)
            index = await _get(session, base + "/")
            listing = await _get(session, base + "/drills")
            report = await _get(session, f"{base}/drills/{drill_id}")
            record = await _get(session, f"{base}/drills/{drill_id}", Accept="application/json")
    finally:
        await drop_table(service_env["TIMESCALEDB_URL"], table)
    for page in (index, listing):
        assert f'<tr class="drill" data-drill="{drill_id}" data-result="ok">' in page
    assert f"<h2>Failover drill <code>{drill_id}</code>: <strong>OK</strong></h2>" in report
    assert "<h3>Fallback path: replica <code>postgresql://ingest:***@" in report
    assert '"scenario": "fallback"' in record
    assert not [page for page in (index, listing, report, record) if password in page]
