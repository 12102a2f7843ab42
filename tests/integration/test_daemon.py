"""The daemon end to end against the real Timescale, Redis and Kafka of `make services`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from exporter.config import IngestSettings
from exporter.daemon import SHUTDOWN_TIMEOUT, Daemon

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

    # Interval + timeout = 3 s, as the bound below assumes (the timeout must stay below the
    # interval, so the old 1 s + 2 s became 1.6 s + 1.4 s).
    settings = settings_factory(
        INGEST_PROBE_INTERVAL_SECONDS="1.6", INGEST_PROBE_TIMEOUT_SECONDS="1.4"
    )
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


def _spawn(port: int, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    command = ["run", "--web.listen-address", f"127.0.0.1:{port}", *args]
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", *command],
        cwd=REPO,
        env={
            **os.environ,
            **env,
            # Fast cycles; the timeout (and an operator probe's 1 s) stays below the interval.
            "INGEST_PROBE_INTERVAL_SECONDS": "1.5",
            "INGEST_PROBE_TIMEOUT_SECONDS": "1",
        },
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


@asynccontextmanager
async def _daemon_process(
    port: int, env: dict[str, str], *args: str, settle: float = 1.0
) -> AsyncIterator[subprocess.Popen[str]]:
    """Run the daemon as a process, healthy and settled for ``settle`` s; kill it if left over."""
    process = _spawn(port, env, *args)
    try:
        await _wait_healthy(port)
        await asyncio.sleep(settle)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def _exit(process: subprocess.Popen[str]) -> tuple[str, float]:
    """Wait for the process to end; return its stderr and how long that took."""
    t0 = time.monotonic()
    _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    return stderr, time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_gracefully_with_exit_0(
    sig: signal.Signals, service_env: dict[str, str]
) -> None:
    """SIGTERM or SIGINT stops the daemon through the graceful path, exit code 0, quickly."""
    async with _daemon_process(free_port(), service_env) as process:
        process.send_signal(sig)
        stderr, elapsed = await _exit(process)
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


# An async probe that swallows every cancellation: no timeout or cancel ever ends it.
_STUBBORN = """
import asyncio


async def stubborn() -> bool:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
"""


def _stuck_probe_setup(kind: str, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Return the extra environment and a config file with one probe that never ends."""
    env: dict[str, str] = {}
    if kind == "sync-sleeping":
        target = "tests.fixtures.operator_probes:sleep_ten_seconds"
    else:
        (tmp_path / "stubborn_probe.py").write_text(_STUBBORN)
        env["PYTHONPATH"] = str(tmp_path)
        target = "stubborn_probe:stubborn"
    config = tmp_path / "stuck.yaml"
    config.write_text(
        f"probes:\n  operator:\n    - {{name: stuck, target: '{target}', timeout_seconds: 1}}\n"
    )
    return env, config


@pytest.mark.parametrize(
    ("kind", "bound"),
    # A thread still sleeping, or a task refusing to be cancelled, must not hold the exit:
    # before, the first took the rest of its 10 s sleep, the second never exited at all.
    [("sync-sleeping", 5.0), ("cancel-swallowing", SHUTDOWN_TIMEOUT + 2)],
)
async def test_sigterm_exits_within_the_bound_despite_a_stuck_probe(
    kind: str, bound: float, service_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM ends the process with exit 0 within the shutdown bound while a probe hangs."""
    env, config = _stuck_probe_setup(kind, tmp_path)
    # settle: the stuck probe has started and timed out once.
    async with _daemon_process(
        free_port(), {**service_env, **env}, "--config.file", str(config), settle=1.5
    ) as process:
        process.send_signal(signal.SIGTERM)
        stderr, elapsed = await _exit(process)
    assert process.returncode == 0, stderr
    assert elapsed < bound
    assert '"exporter_stopped"' in stderr
    assert "Traceback" not in stderr


async def test_second_sigint_during_shutdown_exits_130_at_once(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """A second SIGINT while the graceful stop waits on a stuck task exits 130 immediately."""
    env, config = _stuck_probe_setup("cancel-swallowing", tmp_path)
    async with _daemon_process(
        free_port(), {**service_env, **env}, "--config.file", str(config), settle=1.5
    ) as process:
        process.send_signal(signal.SIGINT)
        await asyncio.sleep(0.5)  # the stop now waits for the stuck probe loop
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        stderr, elapsed = await _exit(process)
    assert process.returncode == 130, stderr
    assert elapsed < 2
    assert '"exporter_forced_exit"' in stderr
    assert "Traceback" not in stderr


async def test_listener_is_closed_before_the_services_stop(
    settings_factory: Callable[..., IngestSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the connectors close, the port already refuses requests (no late /probe)."""
    daemon = Daemon(settings_factory())
    await daemon.start()
    port = daemon.port
    assert port is not None
    services = daemon.services[0]
    stop = services.stop
    refused: list[bool] = []

    async def checking_stop(timeout: float = 10.0) -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            refused.append(True)
        else:
            refused.append(False)
            writer.close()
            await writer.wait_closed()
        await stop(timeout)

    monkeypatch.setattr(services, "stop", checking_stop)
    await daemon.stop()
    assert refused == [True]
