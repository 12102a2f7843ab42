"""Game-day drills on private primary/standby pairs: kill and switchover, measured twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from exporter.config import IngestSettings
from exporter.drills.record import DrillResult
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.writer import iter_ranges
from exporter.provisioner import InstitutionalIngestProvisioner
from tests.waiting import wait_for

from .conftest import running_daemon, sample, scrape_until
from .drill_support import FAILOVER_SCRIPT, Feed, PrimaryStopwatch, create_dimension, drill_settings
from .pg_instance import PgPair

#: The drills' probe interval: detection and RTO must agree with the tests' within it.
INTERVAL = 0.3


def _script(command: str, pair: PgPair) -> str:
    ports = f"--primary-port {pair.primary.port} --standby-port {pair.standby.port}"  # type: ignore[union-attr]
    return f"bash {FAILOVER_SCRIPT} {command} {ports}"


async def _kill_drill(
    pair: PgPair,
    factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> tuple[FailoverDrillSnapshot, Feed, PrimaryStopwatch, float, set[int]]:
    """Run a kill drill whose injection first cuts the standby off for a moment (writes go on).

    Returns the record, the test's feed and stopwatch, the moment the injection began (its
    own stamp) and the drill's sequence numbers found on the new primary afterwards.
    """
    user_url = service_env["TIMESCALEDB_URL"]
    write_url = pair.write_url(user_url)
    table = f"drill_trades_{unique}"
    await create_dimension(pair.url(user_url), table)
    stamp = tmp_path / "injected-at"
    injection = (
        f"date +%s.%N > {stamp} && {_script('partition', pair)} && sleep 0.6 && "
        f"{_script('kill', pair)}"
    )
    settings = drill_settings(
        factory,
        tmp_path,
        dimension="trades",
        table=table,
        drill={
            "label": f"drill-{unique}",
            "inject_command": ["bash", "-c", injection],
            "probe_interval_seconds": INTERVAL,
            "write_interval_seconds": 0.05,
            "deadline_seconds": 60,
            "objectives": {"detection_seconds": 5, "rto_seconds": 20, "rpo_seconds": 5},
        },
        TIMESCALEDB_URL=write_url,
        TIMESCALE_WRITE_URL=write_url,
        TIMESCALE_REPLICA_URL=pair.url(user_url, standby=True),
    )
    feed = Feed(write_url, table)
    stopwatch = PrimaryStopwatch(pair.url(user_url))
    services = InstitutionalIngestProvisioner(settings).provision()
    await services.start(supervise=False)
    feed.start()
    stopwatch.start()
    try:
        await wait_for(lambda: feed.acked, timeout=10)  # fresh before the pre-check
        snapshot = await services.run_failover_drill("kill", initiator="test")
    finally:
        await feed.stop()
        await stopwatch.stop()
        await services.stop()
    conn = await asyncpg.connect(write_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT seq FROM ingest_failover_drill_writes WHERE drill_id = $1", snapshot.drill_id
        )
    finally:
        await conn.close()
    injected = float(stamp.read_text().strip())
    return snapshot, feed, stopwatch, injected, {int(r["seq"]) for r in rows}


def _assert_measured_like_the_test(
    snapshot: FailoverDrillSnapshot, feed: Feed, stopwatch: PrimaryStopwatch, injected: float
) -> None:
    """Detection and RTO agree with the test's own stopwatch within one probe interval."""
    m = snapshot.measured
    assert stopwatch.failed_at is not None
    assert feed.resumed is not None
    assert m.detection_seconds is not None
    assert m.rto_seconds is not None
    own_detection = stopwatch.failed_at - injected
    own_rto = feed.resumed - injected
    assert abs(m.detection_seconds - own_detection) <= INTERVAL, (m, own_detection)
    assert abs(m.rto_seconds - own_rto) <= INTERVAL, (m, own_rto)
    assert m.promotion_seconds is not None
    assert m.timeline_after == (m.timeline_before or 0) + 1


async def test_kill_with_async_replication_counts_the_lost_writes(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """Kill after a cut: detection and RTO match the test's stopwatch; lost writes match the DB."""
    async with PgPair(service_env["TIMESCALE_ADMIN_URL"]) as pair:
        snapshot, feed, stopwatch, injected, survivors = await _kill_drill(
            pair, settings_factory, tmp_path, service_env, unique
        )
    _assert_measured_like_the_test(snapshot, feed, stopwatch, injected)
    acknowledged = set(iter_ranges(snapshot.measured.acknowledged_seqs))
    lost = acknowledged - survivors
    # Writes went on for 0.6 s with the standby cut off: some acknowledged ones are gone.
    assert len(lost) > 0
    assert snapshot.measured.rpo.lost_writes == len(lost)
    assert snapshot.measured.rpo.lost_seqs == sorted(lost)
    assert (snapshot.measured.rpo.bytes or 0) > 0
    assert (snapshot.measured.rpo.seconds or 0) > 0
    assert snapshot.result is DrillResult.FAIL
    assert f"lost_writes {len(lost)} > objective 0" in snapshot.failed_objectives
    components = {c.name: c.status.value for c in snapshot.components}
    assert components["rpo"] == "fail"
    assert components["failover"] == "ok"
    assert components["rto"] == "ok"
    assert snapshot.injection is not None
    assert snapshot.injection.exit_code == 0
    assert "failover: promoted" in snapshot.injection.output


async def test_kill_with_synchronous_replication_loses_nothing(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """With synchronous_standby_names the same kill acknowledges nothing the standby lacks."""
    async with PgPair(service_env["TIMESCALE_ADMIN_URL"], synchronous=True) as pair:
        snapshot, feed, stopwatch, injected, survivors = await _kill_drill(
            pair, settings_factory, tmp_path, service_env, unique
        )
    _assert_measured_like_the_test(snapshot, feed, stopwatch, injected)
    acknowledged = set(iter_ranges(snapshot.measured.acknowledged_seqs))
    assert acknowledged
    assert acknowledged <= survivors
    assert snapshot.measured.rpo.lost_writes == 0
    assert snapshot.result is DrillResult.OK, snapshot.to_markdown()
    assert snapshot.failed_objectives == []


async def _record_when_done(base_url: str, drill_id: str) -> dict[str, Any] | None:
    """Return the drill's record, or ``None`` while it runs."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/api/v1/drills/{drill_id}") as response,
    ):
        assert response.status == 200, await response.text()
        body = await response.json()
    if "result" in body:
        return dict(body)
    assert body["state"] == "running"
    return None


async def test_switchover_over_http_loses_nothing_and_moves_the_timeline_gauge(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """A clean switchover started by POST: 0 lost writes, ingest_timescale_timeline +1."""
    token = f"tok-{unique}"
    token_file = tmp_path / "drill-token"
    token_file.write_text(token + "\n")
    async with PgPair(service_env["TIMESCALE_ADMIN_URL"]) as pair:
        user_url = service_env["TIMESCALEDB_URL"]
        write_url = pair.write_url(user_url)
        table = f"drill_trades_{unique}"
        await create_dimension(pair.url(user_url), table)
        settings = drill_settings(
            settings_factory,
            tmp_path,
            dimension="trades",
            table=table,
            drill={
                "label": f"drill-{unique}",
                "inject_command": ["bash", "-c", _script("switchover", pair)],
                "token_file": str(token_file),
                "probe_interval_seconds": INTERVAL,
                "write_interval_seconds": 0.05,
                "deadline_seconds": 60,
            },
            TIMESCALEDB_URL=write_url,
            TIMESCALE_WRITE_URL=write_url,
            TIMESCALE_REPLICA_URL=pair.url(user_url, standby=True),
        )
        feed = Feed(write_url, table)
        feed.start()
        try:
            async with running_daemon(settings) as (_, url):
                before = await scrape_until(
                    url, lambda t: sample(t, "ingest_timescale_timeline") is not None
                )
                timeline = sample(before, "ingest_timescale_timeline")
                headers = {"Authorization": f"Bearer {token}"}
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        f"{url}/api/v1/drills?scenario=switchover", headers=headers
                    ) as response,
                ):
                    assert response.status == 202, await response.text()
                    started = await response.json()
                    assert response.headers["Location"] == started["location"]
                record = await wait_for(
                    lambda: _record_when_done(url, started["drill_id"]), timeout=45, interval=0.2
                )
                after = await scrape_until(
                    url,
                    lambda t: (
                        sample(t, "ingest_timescale_timeline") == (timeline or 0) + 1
                        and sample(t, "ingest_failover_drill_rto_seconds", scenario="switchover")
                        is not None
                    ),
                )
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        f"{url}/api/v1/drills/{started['drill_id']}?format=markdown"
                    ) as response,
                ):
                    markdown = await response.text()
        finally:
            await feed.stop()
    assert record["result"] == "ok", markdown
    assert record["measured"]["rpo"]["lost_writes"] == 0
    assert record["measured"]["timeline_after"] == record["measured"]["timeline_before"] + 1
    assert record["initiator"].startswith("http:")
    labels = {"scenario": "switchover", "label": f"drill-{unique}"}
    assert sample(after, "ingest_failover_drill_success", **labels) == 1
    assert sample(after, "ingest_failover_drill_lost_writes", **labels) == 0
    assert sample(after, "ingest_failover_drill_rto_seconds", **labels) == pytest.approx(
        record["measured"]["rto_seconds"]
    )
    assert (
        sample(after, "ingest_failover_drill_objective_seconds", objective="rto", **labels) == 120
    )
    assert f"# Failover drill `{started['drill_id']}`: **OK**" in markdown
    assert "failover: standby_caught_up" in markdown
