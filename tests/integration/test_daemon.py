"""The daemon end to end against the real Timescale, Redis and Kafka of `make services`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import asyncpg
import pytest

from exporter.config import IngestSettings

from .conftest import REPO, free_port, running_daemon, sample, scrape, wait_for

CONNECTORS = ("timescale", "redis", "kafka")


async def test_all_connectors_up_and_timescaledb_installed(
    settings_factory: Callable[..., IngestSettings], service_env: dict[str, str]
) -> None:
    """Within two probe intervals every connector is up, and the database has timescaledb."""
    settings = settings_factory()
    async with running_daemon(settings) as (_, url):
        text = ""

        async def all_up() -> bool:
            nonlocal text
            text = await scrape(url)
            return all(sample(text, "ingest_connector_up", connector=c) == 1 for c in CONNECTORS)

        deadline = time.monotonic() + 2 * settings.probes.interval_seconds + 5
        while not await all_up():
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        assert sample(text, "ingest_probe_duration_seconds_count", connector="redis")
        assert sample(text, "ingest_probe_last_run_timestamp_seconds", connector="kafka")
    conn = await asyncpg.connect(service_env["TIMESCALEDB_URL"])
    try:
        extensions = {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}
    finally:
        await conn.close()
    assert "timescaledb" in extensions


async def test_serves_while_every_dependency_is_down(
    settings_factory: Callable[..., IngestSettings],
) -> None:
    """With all three services unreachable the daemon starts, serves and reports them down."""
    settings = settings_factory(
        TIMESCALEDB_URL=f"postgresql://ingest:ingest@127.0.0.1:{free_port()}/ingest",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
    )
    async with running_daemon(settings) as (daemon, url):
        await wait_for(lambda: daemon.state.ready, timeout=10)
        text = await scrape(url)
        for connector in CONNECTORS:
            assert sample(text, "ingest_connector_up", connector=connector) == 0
            assert sample(
                text, "ingest_probe_failures_total", connector=connector, reason="refused"
            ), connector
        assert await scrape(url, "/-/healthy")


@pytest.mark.parametrize("service", ["redis", "timescale", "kafka"])
async def test_outage_turns_up_to_zero_and_recovery_back_to_one(
    service: str,
    settings_factory: Callable[..., IngestSettings],
    outage: Callable[[str], None],
) -> None:
    """Stopping a service drops its `up` within interval + timeout; restarting restores it."""
    from .conftest import services_ctl

    settings = settings_factory(INGEST_PROBE_INTERVAL_SECONDS="1", INGEST_PROBE_TIMEOUT_SECONDS="2")
    script_name = "postgres" if service == "timescale" else service
    async with running_daemon(settings) as (daemon, url):
        await wait_for(lambda: daemon.state.ready, timeout=15)

        def up() -> float | None:
            report = daemon.state.reports.get("local")
            return None if report is None else float(report.connector_up(service))

        await wait_for(lambda: up() == 1.0, timeout=15)
        await asyncio.to_thread(outage, script_name)
        stopped_at = time.monotonic()
        await wait_for(lambda: up() == 0.0, timeout=1 + 2 + 2)
        assert time.monotonic() - stopped_at <= 1 + 2 + 2
        text = await scrape(url)
        assert sample(text, "ingest_connector_up", connector=service) == 0
        await asyncio.to_thread(services_ctl, "start", script_name)
        await wait_for(lambda: up() == 1.0, timeout=60)
        assert sample(await scrape(url), "ingest_connector_up", connector=service) == 1


def _spawn(port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=REPO,
        env={**os.environ, **env, "INGEST_PROBE_INTERVAL_SECONDS": "0.5"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _wait_healthy(port: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"http://127.0.0.1:{port}/-/healthy") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("daemon did not answer /-/healthy within 10 s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_gracefully_with_exit_0(
    sig: signal.Signals, service_env: dict[str, str]
) -> None:
    """SIGTERM or SIGINT stops the daemon through the graceful path, exit code 0, quickly."""
    port = free_port()
    process = _spawn(port, service_env)
    try:
        await _wait_healthy(port)
        await asyncio.sleep(1)
        process.send_signal(sig)
        t0 = time.monotonic()
        _, stderr = await asyncio.to_thread(process.communicate, timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert elapsed < 10
    assert '"exporter_stopped"' in stderr
    assert "Traceback" not in stderr


async def test_listen_address_in_use_exits_3(service_env: dict[str, str]) -> None:
    """A listen address already taken gives exit code 3 and a one-line message."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = _spawn(port, service_env)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr
