"""Fault matrix on private Timescale, Redis and Kafka instances (the shared stack is untouched).

For each service: down at start, killed mid-run, black-holed, slowed past the timeout,
flapping, wrong credentials and an unresolvable name. Every case asserts that the daemon
served every scrape, reported the connector down with the expected reason, reported it up
again after the fault, and that server connections, fds and tasks came back to steady. The
table is printed at the end of the run (``pytest -s`` or the terminal summary) and copied
into the README's reliability section.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from exporter.config import IngestSettings
from exporter.daemon import Daemon

from .fault_matrix import FaultRow, Steady, connector_up, measure_case, render_table, steady, until
from .fault_proxy import FaultProxy
from .pg_instance import PgReplica
from .proxied_kafka import ProxiedKafka
from .redis_instance import RedisServers

Settings = Callable[..., IngestSettings]

#: Probe cadence of the matrix: short, so ~20 cases fit in a few minutes.
INTERVAL, TIMEOUT = 1.0, 0.5
#: A host name glibc refuses on sight (a label may not start with '-'): the lookup fails
#: like any unresolvable name, without sending a DNS query off the machine.
UNRESOLVABLE = "-unresolvable-.invalid"
#: Bounds every case is held to.
DETECT_WITHIN = INTERVAL + TIMEOUT + 1.5
P99_MS = 250.0

_ROWS: list[FaultRow] = []
#: What asyncio (and aiokafka's connection) log for a leak or a lost task; none may appear.
_LOST = ("never retrieved", "destroyed but it is pending", "Unclosed", "Unexpected exception")


class _LostResources(logging.Handler):
    """Collect the event loop's reports of unclosed resources and lost task results."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(marker in message for marker in _LOST):
            self.found.append(message.splitlines()[0])


@pytest.fixture(autouse=True)
def lost_resources() -> Iterator[_LostResources]:
    """Fail the test if the loop reports a leaked resource or an unretrieved task failure."""
    handler = _LostResources()
    loggers = [logging.getLogger(name) for name in ("asyncio", "aiokafka.conn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    gc.collect()  # objects leaked during the run report themselves when collected
    for logger in loggers:
        logger.removeHandler(handler)
    assert not handler.found, handler.found


@pytest.fixture(scope="module", autouse=True)
def _print_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the measured table once every case of the module ran."""
    yield
    if _ROWS:
        text = "\nFault matrix (interval 1 s, timeout 0.5 s):\n" + render_table(_ROWS) + "\n"
        # Past output capture, so the table shows on a passing run too.
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(text)


@asynccontextmanager
async def _daemon(settings: IngestSettings) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def _wait_up(daemon: Daemon, connector: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while connector_up(daemon, connector) is not True:
        assert time.monotonic() < deadline, f"{connector} not up within {timeout}s"
        await asyncio.sleep(0.05)


async def _flap(proxy: FaultProxy, stop: asyncio.Event) -> None:
    """Refuse and pass in turn every 0.6 s until ``stop``."""
    while not stop.is_set():
        await proxy.set_mode("refuse")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.6)
        await proxy.set_mode("pass")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.6)


def _check(row: FaultRow, reasons: set[str], *, recovers: bool = True) -> None:
    """Hold a measured row to the matrix's bounds."""
    _ROWS.append(row)
    assert row.failed_scrapes == 0, row
    assert row.scrapes >= 10, row
    assert row.p99_ms < P99_MS, row
    assert row.detection is not None, row
    assert set(row.reasons.split(",")) & reasons, row
    if recovers:
        assert row.recovery is not None, row
        assert row.settled is not None, row
        assert row.before is not None, row
        assert row.after is not None, row
        assert row.after.within(row.before), row


async def _matrix(
    service: str,
    connector: str,
    settings_for: Callable[..., IngestSettings],
    proxy: FaultProxy,
    *,
    kill: Callable[[], Awaitable[Any]],
    revive: Callable[[], Awaitable[Any]],
    wrong_credentials: dict[str, str],
    unresolvable: dict[str, str],
    recover_within: float,
) -> None:
    """Run the seven cases of one service."""
    proxies = [proxy]
    # Down at start: the daemon starts with the service refusing, then it comes.
    await proxy.set_mode("refuse")
    row = FaultRow(service, "down at start")
    async with _daemon(settings_for()) as daemon:
        # Detection counts from the daemon's start.
        row = await measure_case(
            row,
            daemon,
            connector,
            proxies,
            inject=_nothing,
            restore=lambda: proxy.set_mode("pass"),
            baseline=None,
            hold=0.0,
            recover_within=recover_within,
        )
        # Down at start has no "before": the steady state is the one it settles into.
        await asyncio.sleep(2 * INTERVAL)
        baseline = steady(proxies)
        row.before = row.after = baseline
        row.settled = 0.0
        _check(row, {"refused"})

        cases: list[
            tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]], set[str]]
        ]
        stop_flapping = asyncio.Event()
        flapper: list[asyncio.Task[None]] = []

        async def start_flapping() -> None:
            stop_flapping.clear()
            flapper.append(asyncio.create_task(_flap(proxy, stop_flapping)))

        async def stop_and_pass() -> None:
            stop_flapping.set()
            await flapper.pop()
            await proxy.set_mode("pass")

        cases = [
            ("killed mid-run", kill, revive, {"refused", "timeout"}),
            (
                "black-holed",
                lambda: proxy.set_mode("blackhole"),
                lambda: proxy.set_mode("pass"),
                {"timeout"},
            ),
            (
                "slowed past timeout",
                lambda: proxy.set_mode("slow", delay=2 * TIMEOUT),
                lambda: proxy.set_mode("pass"),
                {"timeout"},
            ),
            ("flapping", start_flapping, stop_and_pass, {"refused", "timeout"}),
        ]
        for name, inject, restore, reasons in cases:
            await _wait_up(daemon, connector)
            await asyncio.sleep(INTERVAL)
            measured = await measure_case(
                FaultRow(service, name),
                daemon,
                connector,
                proxies,
                inject=inject,
                restore=restore,
                baseline=baseline,
                hold=3.0 if name == "flapping" else 1.0,
                detect_within=DETECT_WITHIN + 2,
                recover_within=recover_within,
            )
            _check(measured, reasons)
    for name, env, reasons in (
        ("wrong credentials", wrong_credentials, {"auth"}),
        ("unresolvable name", unresolvable, {"dns"}),
    ):
        before = steady(proxies)
        async with _daemon(settings_for(**env)) as daemon:
            row = await measure_case(
                FaultRow(service, name),
                daemon,
                connector,
                proxies,
                inject=_nothing,
                restore=None,
                baseline=before,
                hold=3 * INTERVAL,
                detect_within=DETECT_WITHIN + 2,
            )
        # Permanent faults: the daemon's stop must give back everything it took.
        row.settled = await until(_within(proxies, before), 15.0)
        row.after = steady(proxies)
        _check(row, reasons, recovers=False)


def _within(proxies: list[FaultProxy], before: Steady) -> Callable[[], bool]:
    return lambda: steady(proxies).within(before)


async def _nothing() -> None:
    """Inject nothing: the fault is in the configuration the daemon started with."""


def _with_port(url: str, port: int, *, password: str | None = None, host: str = "127.0.0.1") -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    secret = password if password is not None else (parts.password or "")
    auth = f"{user}:{secret}@" if secret else (f"{user}@" if user else "")
    return urlunsplit(parts._replace(netloc=f"{auth}{host}:{port}"))


async def test_redis_fault_matrix(settings_factory: Settings, tmp_path: Path) -> None:
    """Redis: every fault is detected with its reason and recovered from; nothing leaks."""
    servers = _KillableRedis("redis-server", tmp_path)
    port = await servers.start("--requirepass", "matrix-pw")
    proxy = FaultProxy(port)
    await proxy.start()
    good = f"redis://:matrix-pw@127.0.0.1:{proxy.port}/0"

    def settings_for(**env: str) -> IngestSettings:
        base = {"REDIS_URL": good, "INGEST_PROBE_INTERVAL_SECONDS": str(INTERVAL)}
        return settings_factory(**{**base, "INGEST_PROBE_TIMEOUT_SECONDS": str(TIMEOUT), **env})

    try:
        await _matrix(
            "redis",
            "redis",
            settings_for,
            proxy,
            kill=lambda: servers.kill(port),
            revive=lambda: servers.start("--requirepass", "matrix-pw", port=port),
            wrong_credentials={"REDIS_URL": f"redis://:wrong-pw@127.0.0.1:{proxy.port}/0"},
            unresolvable={"REDIS_URL": f"redis://:matrix-pw@{UNRESOLVABLE}:6379/0"},
            recover_within=10.0,
        )
    finally:
        await proxy.close()
        await servers.close()


class _KillableRedis(RedisServers):
    """Private redis-servers that can also be killed (SIGKILL, no shutdown)."""

    async def kill(self, port: int) -> None:
        """Kill one server at once and wait for it to be gone."""
        process = self._processes.pop(port)
        process.kill()
        await asyncio.wait_for(process.wait(), 10)


class _KillablePg(PgReplica):
    """A private PostgreSQL primary (a promoted replica) that can crash and come back."""

    async def kill(self) -> None:
        """Stop the server in immediate mode (no shutdown checkpoint, like a crash)."""
        await self._run(
            str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
        )

    async def revive(self) -> None:
        """Start the server again on the same port and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1"
        await self._run(
            str(self.pg_bin / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.home / "postgres.log")),
            *("-o", options, "-w", "-t", "30", "start"),
        )


async def test_timescale_fault_matrix(
    settings_factory: Settings, service_env: dict[str, str]
) -> None:
    """Timescale: every fault is detected with its reason and recovered from; nothing leaks."""
    replica = _KillablePg(service_env["TIMESCALE_ADMIN_URL"])
    async with replica:
        await replica.promote()
        proxy = FaultProxy(replica.port)
        await proxy.start()
        url = service_env["TIMESCALEDB_URL"]
        good = _with_port(url, proxy.port)

        def settings_for(**env: str) -> IngestSettings:
            base = {"TIMESCALEDB_URL": good, "INGEST_PROBE_INTERVAL_SECONDS": str(INTERVAL)}
            return settings_factory(**{**base, "INGEST_PROBE_TIMEOUT_SECONDS": str(TIMEOUT), **env})

        try:
            await _matrix(
                "timescale",
                "timescale",
                settings_for,
                proxy,
                kill=replica.kill,
                revive=replica.revive,
                wrong_credentials={
                    "TIMESCALEDB_URL": _with_port(url, proxy.port, password="wrong-pw")
                },
                unresolvable={"TIMESCALEDB_URL": _with_port(url, 5432, host=UNRESOLVABLE)},
                recover_within=10.0,
            )
        finally:
            await proxy.close()


async def test_kafka_fault_matrix(settings_factory: Settings) -> None:
    """Kafka: every fault is detected with its reason and recovered from; nothing leaks."""
    broker = ProxiedKafka()
    proxy = broker.proxy
    await proxy.start()
    try:
        await broker.start()

        def settings_for(**env: str) -> IngestSettings:
            base = {
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{proxy.port}",
                "INGEST_PROBE_INTERVAL_SECONDS": str(INTERVAL),
                "INGEST_PROBE_TIMEOUT_SECONDS": str(TIMEOUT),
            }
            return settings_factory(**{**base, **env})

        await _matrix(
            "kafka",
            "kafka",
            settings_for,
            proxy,
            kill=broker.kill,
            revive=broker.start,
            wrong_credentials={
                # The broker answers a failed SASL login only after
                # connection.failed.authentication.delay.ms (100 ms), and the probe needs two
                # logins (aiokafka's bootstrap, then its own diagnosis): 0.5 s is too short.
                "INGEST_PROBE_INTERVAL_SECONDS": "3",
                "INGEST_PROBE_TIMEOUT_SECONDS": "2",
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.sasl_port}",
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "monitor",
                "KAFKA_SASL_PASSWORD": "wrong-pw",
            },
            unresolvable={"KAFKA_BOOTSTRAP_SERVERS": f"{UNRESOLVABLE}:9092"},
            recover_within=30.0,
        )
    finally:
        await proxy.close()
        broker.close()
