"""The daemon end to end against the real Timescale, Redis and Kafka of `make services`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from exporter.config import IngestSettings
from exporter.daemon import SHUTDOWN_TIMEOUT, Daemon
from tests.waiting import Changes

from .conftest import REPO, running_daemon, sample, scrape, wait_for
from .kafka_instance import KafkaInstance
from .pg_instance import PgReplica
from .redis_instance import RedisServers

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

        await wait_for(all_up, timeout=2 * settings.probes.interval_seconds + 5)
        assert sample(text, "ingest_probe_duration_seconds_count", connector="redis")
        assert sample(text, "ingest_probe_last_run_timestamp_seconds", connector="kafka")
    conn = await asyncpg.connect(service_env["TIMESCALEDB_URL"])
    try:
        extensions = {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}
    finally:
        await conn.close()
    assert "timescaledb" in extensions


async def test_serves_while_every_dependency_is_down(
    settings_factory: Callable[..., IngestSettings], refused_port: int
) -> None:
    """With all three services unreachable the daemon starts, serves and reports them down."""
    settings = settings_factory(
        TIMESCALEDB_URL=f"postgresql://ingest:ingest@127.0.0.1:{refused_port}/ingest",
        REDIS_URL=f"redis://127.0.0.1:{refused_port}/0",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{refused_port}",
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


#: A private server's address for the settings, and how to stop and start it again.
Private = tuple[dict[str, str], Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]


@asynccontextmanager
async def _private(service: str, env: dict[str, str], folder: Path) -> AsyncIterator[Private]:
    """Run a private server of ``service``: the outage must not touch the shared stack."""
    if service == "redis":
        servers = RedisServers(env.get("INGEST_REDIS_SERVER") or "redis-server", folder)
        port = await servers.start()
        try:
            yield (
                {"REDIS_URL": f"redis://127.0.0.1:{port}/0"},
                lambda: servers.stop(port),
                lambda: servers.start(port=port),
            )
        finally:
            await servers.close()
    elif service == "kafka":
        async with KafkaInstance(env["INGEST_KAFKA_JARS"]) as kafka:
            yield {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}, kafka.stop, kafka.start
    else:
        async with PgReplica(env["TIMESCALE_ADMIN_URL"]) as server:
            await server.promote()
            url = urlsplit(env["TIMESCALEDB_URL"])
            netloc = f"{url.netloc.rpartition('@')[0]}@127.0.0.1:{server.port}"
            private = urlunsplit(url._replace(netloc=netloc))
            yield {"TIMESCALEDB_URL": private}, server.halt, server.resume


@pytest.mark.parametrize("service", ["redis", "timescale", "kafka"])
async def test_outage_turns_up_to_zero_and_recovery_back_to_one(
    service: str,
    settings_factory: Callable[..., IngestSettings],
    service_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Stopping a service drops its `up` within interval + timeout; restarting restores it."""
    async with _private(service, service_env, tmp_path) as (env, stop, start):
        # Interval + timeout = 3 s, as the bound below assumes (the timeout must stay below
        # the interval, so the old 1 s + 2 s became 1.6 s + 1.4 s).
        settings = settings_factory(
            INGEST_PROBE_INTERVAL_SECONDS="1.6", INGEST_PROBE_TIMEOUT_SECONDS="1.4", **env
        )
        async with running_daemon(settings) as (daemon, url):
            await wait_for(lambda: daemon.state.ready, timeout=15)

            def up() -> float | None:
                report = daemon.state.reports.get("local")
                return None if report is None else float(report.connector_up(service))

            await wait_for(lambda: up() == 1.0, timeout=15)
            await stop()
            stopped_at = time.monotonic()
            await wait_for(lambda: up() == 0.0, timeout=1 + 2 + 2)
            assert time.monotonic() - stopped_at <= 1 + 2 + 2
            text = await scrape(url)
            assert sample(text, "ingest_connector_up", connector=service) == 0
            await start()
            await wait_for(lambda: up() == 1.0, timeout=60)
            assert sample(await scrape(url), "ingest_connector_up", connector=service) == 1


class DaemonProcess:
    """``ingest-exporter run`` as a child process, its JSON log lines read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._logged = Changes()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode(errors="replace"))
            self._logged()
        self._logged()  # end of output: waiters re-check and give up

    @property
    def stderr(self) -> str:
        """Return what the process wrote to stderr so far."""
        return "".join(self.lines)

    def event(self, name: str) -> dict[str, Any] | None:
        """Return the first log event called ``name``, if it was logged."""
        for line in self.lines:
            if f'"{name}"' in line:
                event: dict[str, Any] = json.loads(line)
                if event.get("event") == name:
                    return event
        return None

    async def logged(self, name: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the event ``name`` is logged and return it; fail if output ends first."""
        try:
            await self._logged.until(
                lambda: self.event(name) is not None or self._reader.done(), timeout
            )
        except TimeoutError:
            pytest.fail(f"{name} not logged within {timeout}s:\n{self.stderr}")
        event = self.event(name)
        if event is None:
            pytest.fail(f"the daemon ended without logging {name}:\n{self.stderr}")
        return event

    async def exit(self) -> tuple[str, float]:
        """Wait for the process to end; return its whole stderr and how long that took."""
        t0 = time.monotonic()
        await asyncio.wait_for(self.process.wait(), timeout=30)
        elapsed = time.monotonic() - t0
        await self._reader
        return self.stderr, elapsed

    @property
    def running(self) -> bool:
        """Tell whether the process has not been seen to end yet."""
        return self.process.returncode is None

    def kill(self) -> None:
        """Kill the process if it still runs."""
        if self.running:
            self.process.kill()


async def _spawn(env: dict[str, str], *args: str, listen: str = "127.0.0.1:0") -> DaemonProcess:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "exporter", "run", "--web.listen-address", listen, *args),
        cwd=REPO,
        env={
            **os.environ,
            **env,
            # Fast cycles; the timeout (and an operator probe's 1 s) stays below the interval.
            "INGEST_PROBE_INTERVAL_SECONDS": "1.5",
            "INGEST_PROBE_TIMEOUT_SECONDS": "1",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return DaemonProcess(process)


@asynccontextmanager
async def _daemon_process(
    env: dict[str, str], *args: str, settled: str | None = None
) -> AsyncIterator[DaemonProcess]:
    """Run the daemon as a process on a port it binds itself; yield it once settled; kill leftovers.

    The daemon listens on port 0 and logs the port it got (``exporter_started``), so no port
    is chosen, closed and bound again by another process. Settled means ready (every
    deployment finished a probe cycle), or, when given, the event ``settled`` was logged.
    """
    daemon = await _spawn(env, *args)
    try:
        started = await daemon.logged("exporter_started")
        port = int(started["listen_address"].rpartition(":")[2])
        if settled is None:
            await wait_for(lambda: _ready(port), timeout=30)
        else:
            await daemon.logged(settled)
        yield daemon
    finally:
        daemon.kill()
        await daemon.exit()


async def _ready(port: int) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/-/ready") as response,
    ):
        return response.status == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_gracefully_with_exit_0(
    sig: signal.Signals, service_env: dict[str, str]
) -> None:
    """SIGTERM or SIGINT stops the daemon through the graceful path, exit code 0, quickly."""
    async with _daemon_process(service_env) as daemon:
        daemon.process.send_signal(sig)
        stderr, elapsed = await daemon.exit()
    assert daemon.process.returncode == 0, stderr
    assert elapsed < 10
    assert '"exporter_stopped"' in stderr
    assert "Traceback" not in stderr


async def test_listen_address_in_use_exits_3(service_env: dict[str, str]) -> None:
    """A listen address already taken gives exit code 3 and a one-line message."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = await _spawn(service_env, listen=f"127.0.0.1:{port}")
        stderr, _ = await daemon.exit()
    assert daemon.process.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr


# An async probe that swallows every cancellation: no timeout or cancel ever ends it.
# It says on stderr (as a JSON line, like the daemon's) each time it swallows a cancellation.
_STUBBORN = """
import asyncio
import sys


async def stubborn() -> bool:
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print('{"event": "stubborn_probe_cancelled"}', file=sys.stderr, flush=True)
"""


def _stuck_probe_setup(kind: str, tmp_path: Path) -> tuple[dict[str, str], Path, str | None]:
    """Return the extra environment and a config file with one probe that never ends.

    The third value is the event saying the probe has started and timed out once (``None``:
    readiness says it).
    """
    env: dict[str, str] = {}
    if kind == "sync-sleeping":
        # Its first cycle ends at the probe's timeout, so the daemon becomes ready.
        target, settled = "tests.fixtures.operator_probes:sleep_ten_seconds", None
    else:
        # Its first cycle never ends; the probe itself reports the swallowed timeout.
        (tmp_path / "stubborn_probe.py").write_text(_STUBBORN)
        env["PYTHONPATH"] = str(tmp_path)
        target, settled = "stubborn_probe:stubborn", "stubborn_probe_cancelled"
    config = tmp_path / "stuck.yaml"
    config.write_text(
        f"probes:\n  operator:\n    - {{name: stuck, target: '{target}', timeout_seconds: 1}}\n"
    )
    return env, config, settled


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
    env, config, settled = _stuck_probe_setup(kind, tmp_path)
    # Settled: the stuck probe has started and timed out once.
    async with _daemon_process(
        {**service_env, **env}, "--config.file", str(config), settled=settled
    ) as daemon:
        daemon.process.send_signal(signal.SIGTERM)
        stderr, elapsed = await daemon.exit()
    assert daemon.process.returncode == 0, stderr
    assert elapsed < bound
    assert '"exporter_stopped"' in stderr
    assert "Traceback" not in stderr


async def test_second_sigint_during_shutdown_exits_130_at_once(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """A second SIGINT while the graceful stop waits on a stuck task exits 130 immediately."""
    env, config, settled = _stuck_probe_setup("cancel-swallowing", tmp_path)
    async with _daemon_process(
        {**service_env, **env}, "--config.file", str(config), settled=settled
    ) as daemon:
        daemon.process.send_signal(signal.SIGINT)
        await daemon.logged("exporter_stopping")  # the stop now waits for the stuck probe loop
        assert daemon.running
        daemon.process.send_signal(signal.SIGINT)
        stderr, elapsed = await daemon.exit()
    assert daemon.process.returncode == 130, stderr
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
