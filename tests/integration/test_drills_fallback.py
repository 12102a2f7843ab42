"""Drills that inject nothing: fallback reads, stop conditions and observe's deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from exporter.config import IngestSettings
from exporter.drills.record import DrillResult
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.store import DrillStore
from exporter.provisioner import InstitutionalIngestProvisioner, InstitutionalIngestServices
from tests.waiting import wait_for

from .conftest import running_daemon, sample, scrape_until
from .drill_support import Feed, create_dimension, drill_settings, drop_table
from .pg_instance import PgReplica, with_hosts


def _replica_url(service_env: dict[str, str]) -> str:
    url = service_env.get("TIMESCALE_REPLICA_URL")
    if not url:
        pytest.fail(
            "TIMESCALE_REPLICA_URL is not set: run `bash scripts/services.sh start standby`"
        )
    return url


@asynccontextmanager
async def _bundle(settings: IngestSettings) -> AsyncIterator[InstitutionalIngestServices]:
    services = InstitutionalIngestProvisioner(settings).provision()
    await services.start(supervise=False)
    try:
        yield services
    finally:
        await services.stop()


@asynccontextmanager
async def _shared_table(
    service_env: dict[str, str], unique: str, *, age_seconds: float = 0.0
) -> AsyncIterator[str]:
    """Create a dimension table on the shared primary; drop it after the test."""
    table = f"drill_fb_{unique}"
    await create_dimension(service_env["TIMESCALEDB_URL"], table, age_seconds=age_seconds)
    try:
        yield table
    finally:
        await drop_table(service_env["TIMESCALEDB_URL"], table)


async def _replicated(url: str, table: str) -> None:
    """Wait until ``table`` has a row on the server behind ``url``."""
    conn = await asyncpg.connect(url, timeout=10)
    try:

        async def visible() -> bool:
            found = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
            return bool(found) and bool(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 - test table

        await wait_for(visible, timeout=5)
    finally:
        await conn.close()


async def test_fallback_with_a_healthy_standby_is_ok_with_report_and_metrics(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """The local stack's standby: verdict ok, few RPO bytes, a report, and the drill gauges."""
    token_file = tmp_path / "token"
    token_file.write_text(f"t-{unique}")
    replica = _replica_url(service_env)
    async with _shared_table(service_env, unique) as table:
        await _replicated(replica, table)
        settings = drill_settings(
            settings_factory,
            tmp_path,
            dimension="trades",
            table=table,
            drill={"label": f"drill-{unique}", "token_file": str(token_file)},
            TIMESCALE_REPLICA_URL=replica,
        )
        async with running_daemon(settings) as (_, url), aiohttp.ClientSession() as session:
            headers = {"X-Drill-Token": f"t-{unique}"}
            async with session.post(f"{url}/api/v1/drills", headers=headers) as response:
                assert response.status == 202, await response.text()
                drill_id = (await response.json())["drill_id"]
            labels = {"label": f"drill-{unique}", "scenario": "fallback"}
            text = await scrape_until(
                url, lambda t: sample(t, "ingest_failover_drill_success", **labels) is not None
            )
            async with session.get(f"{url}/api/v1/drills/{drill_id}") as response:
                record = await response.json()
            async with session.get(f"{url}/api/v1/drills/{drill_id}?format=markdown") as response:
                markdown = await response.text()
            async with session.get(f"{url}/api/v1/drills") as response:
                listing = await response.json()
    assert record["result"] == "ok", markdown
    assert record["fallback"]["streaming"] is True
    assert record["fallback"]["dimensions"][0]["present"] is True
    assert record["measured"]["rpo"]["bytes"] < 1 << 20
    assert sample(text, "ingest_failover_drill_success", **labels) == 1
    assert sample(text, "ingest_failover_drill_rpo_bytes", **labels) == pytest.approx(
        record["measured"]["rpo"]["bytes"]
    )
    assert sample(text, "ingest_failover_drill_last_run_timestamp_seconds", **labels)
    assert "## Fallback path: replica" in markdown
    assert "| trades | replica | present |" in markdown
    assert drill_id in [d["drill_id"] for d in listing["drills"]]


async def test_paused_replay_fails_the_fallback_naming_rpo(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """Replay paused while rows keep arriving: the RPO grows past its objective: fail, rpo."""
    async with (
        _shared_table(service_env, unique) as table,
        PgReplica(service_env["TIMESCALE_ADMIN_URL"]) as replica,
    ):
        replica_user_url = with_hosts(service_env["TIMESCALEDB_URL"], replica.port)
        await _replicated(replica_user_url, table)
        feed = Feed(service_env["TIMESCALEDB_URL"], table)
        feed.start()
        admin = await asyncpg.connect(replica.url, timeout=10)
        try:
            await admin.execute("SELECT pg_wal_replay_pause()")
            # Rows keep arriving on the primary: 40 more at 50 ms are 2 s the replica lacks.
            paused_at = len(feed.acked)
            await wait_for(lambda: len(feed.acked) >= paused_at + 40, timeout=20)
            settings = drill_settings(
                settings_factory,
                tmp_path,
                dimension="trades",
                table=table,
                drill={"label": f"drill-{unique}", "objectives": {"rpo_seconds": 1}},
                TIMESCALE_REPLICA_URL=replica_user_url,
            )
            async with _bundle(settings) as services:
                snapshot = await services.run_failover_drill("fallback", initiator="test")
        finally:
            await feed.stop()
            await admin.close()
    assert snapshot.result is DrillResult.FAIL, snapshot.to_markdown()
    [missed] = snapshot.failed_objectives
    assert missed.startswith("rpo ")
    assert missed.endswith("> objective 1s")
    assert (snapshot.measured.rpo.seconds or 0) > 1
    assert (snapshot.measured.rpo.bytes or 0) > 0
    assert snapshot.fallback is not None
    assert snapshot.fallback.replay_paused is True
    components = {c.name: c.status.value for c in snapshot.components}
    assert components["rpo"] == "fail"
    assert components["fallback"] == "ok"  # the replica has fresh-enough rows: only RPO fails


async def test_stale_dimension_at_pre_check_aborts_before_any_injection(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """A dimension already stale at pre-check is a stop condition: aborted, nothing injected."""
    marker = tmp_path / "injected"
    async with _shared_table(service_env, unique, age_seconds=7200) as table:
        settings = drill_settings(
            settings_factory,
            tmp_path,
            dimension="trades",
            table=table,
            sla=60,
            drill={"label": f"drill-{unique}", "inject_command": ["touch", str(marker)]},
        )
        async with _bundle(settings) as services:
            snapshot = await services.run_failover_drill("kill", initiator="test")
            stored = await DrillStore(services.redis.client).get(snapshot.drill_id)
    assert snapshot.result is DrillResult.ABORTED
    assert snapshot.aborted_reason is not None
    assert snapshot.aborted_reason.startswith("dimension trades not fresh at pre-check")
    assert not marker.exists()
    assert snapshot.injection is None
    assert snapshot.timestamps.fault_injected is None
    assert snapshot.failed_objectives == []
    statuses = {c.name: c.status.value for c in snapshot.components}
    assert statuses["failover"] == statuses["rto"] == statuses["jobs"] == "skipped"
    assert [(p.name, p.status.value) for p in snapshot.phases[:2]] == [
        ("pre_check", "fail"),
        ("arm", "skipped"),
    ]
    assert stored == snapshot


async def test_observe_without_an_outage_ends_aborted_at_the_deadline_and_is_recorded(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """Observe armed with a 2 s deadline and no outage: aborted (deadline), stored in Redis."""
    async with _shared_table(service_env, unique) as table:
        settings = drill_settings(
            settings_factory,
            tmp_path,
            dimension="trades",
            table=table,
            drill={
                "label": f"drill-{unique}",
                "deadline_seconds": 2,
                "probe_interval_seconds": 0.2,
                "write_interval_seconds": 0.1,
            },
        )
        async with _bundle(settings) as services:
            snapshot: FailoverDrillSnapshot = await services.run_failover_drill(
                "observe", initiator="test"
            )
            store = DrillStore(services.redis.client)
            stored = await store.get(snapshot.drill_id)
            running = await store.running_one(snapshot.drill_id)
    assert snapshot.result is DrillResult.ABORTED
    assert snapshot.aborted_reason == "deadline 2s: no outage happened"
    assert 2 <= snapshot.duration_seconds < 4
    assert snapshot.timestamps.armed is not None
    assert snapshot.measured.writes_acknowledged > 5
    assert stored == snapshot
    assert running is None


async def test_the_schedule_runs_fallback_drills_once_a_period(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """schedule_seconds: the daemon runs the fallback scenario itself, initiator schedule."""
    replica = _replica_url(service_env)
    async with _shared_table(service_env, unique) as table:
        await _replicated(replica, table)
        settings = drill_settings(
            settings_factory,
            tmp_path,
            dimension="trades",
            table=table,
            drill={"label": f"drill-{unique}", "schedule_seconds": 60},
            TIMESCALE_REPLICA_URL=replica,
        )
        async with running_daemon(settings) as (daemon, url), aiohttp.ClientSession() as session:
            labels = {"label": f"drill-{unique}", "scenario": "fallback"}
            text = await scrape_until(
                url, lambda t: sample(t, "ingest_failover_drill_success", **labels) is not None
            )
            async with session.get(f"{url}/api/v1/drills") as response:
                listing = await response.json()
    mine = [d for d in listing["drills"] if d["label"] == f"drill-{unique}"]
    assert [(d["initiator"], d["scenario"], d["result"]) for d in mine] == [
        ("schedule", "fallback", "ok")
    ]
    assert sample(text, "ingest_failover_drill_success", **labels) == 1
    assert daemon.supervisor.get("drills:schedule") is not None
