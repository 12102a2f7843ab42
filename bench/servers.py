"""Start and stop what the bench measures: our daemon, the Go exporters, private servers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from tests.integration.kafka_instance import KafkaInstance
from tests.integration.pg_instance import PgReplica
from tests.integration.redis_instance import RedisServers

__all__ = [
    "HOST",
    "FleetServers",
    "Process",
    "daemon_command",
    "fleet_servers",
    "running",
    "with_query",
]

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Enough PostgreSQL sessions for 1,000 deployments with two-connection pools, plus slack.
FLEET_MAX_CONNECTIONS = 2_600


def _die_with_parent() -> None:
    # In the child before exec: a bench killed mid-run (Ctrl-C twice, a timeout) must not
    # leave exporters or daemons running on the machine.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def with_query(url: str, **params: str) -> str:
    """Return ``url`` with ``params`` added to (or replacing those in) its query string."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | params
    return urlunsplit(parts._replace(query=urlencode(query)))


def daemon_command(port: int, config_file: Path | None = None) -> list[str]:
    """Return the argv of ``ingest-exporter run`` from this interpreter's environment."""
    command = [
        str(Path(sys.executable).with_name("ingest-exporter")),
        "run",
        *("--web.listen-address", f"{HOST}:{port}"),
        *("--log.level", "warning", "--log.format", "json"),
    ]
    return [*command, "--config.file", str(config_file)] if config_file else command


@dataclass
class Process:
    """One started process with its port and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.popen.pid

    @property
    def base_url(self) -> str:
        """Return ``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    async def wait_http(self, path: str, *, timeout: float) -> float:
        """Wait until ``path`` answers 200; return the seconds waited (fail after ``timeout``)."""
        started = time.monotonic()
        deadline = started + timeout
        client = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=client) as session:
            while True:
                if self.popen.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{self.name} exited ({self.popen.returncode}): {tail}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.base_url + path) as response:
                        if response.status == 200:
                            return time.monotonic() - started
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: {path} not 200 after {timeout:.0f} s")
                # Polled: readiness is only visible as an HTTP answer from another process.
                await asyncio.sleep(0.1)

    async def stop(self, grace: float = 15.0) -> None:
        """Stop with SIGTERM (SIGKILL after ``grace``) and wait until the process is gone."""
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            await asyncio.to_thread(self.popen.wait, grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            await asyncio.to_thread(self.popen.wait, 10.0)


@asynccontextmanager
async def running(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    logs: Path,
) -> AsyncIterator[Process]:
    """Start ``argv`` (its output to ``logs/name.log``); stop it when the block ends."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        # Popen, not asyncio's: it returns at once, and its pid is all the bench needs.
        popen = subprocess.Popen(  # noqa: ASYNC220
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            start_new_session=True,  # a Ctrl-C on the bench reaches the bench only
            preexec_fn=_die_with_parent,  # the bench starts processes from one thread
        )
    process = Process(name, popen, port, log)
    try:
        yield process
    finally:
        await process.stop()


class _FleetPostgres(PgReplica):
    """A private copy of the shared cluster with room for a thousand deployments' sessions."""

    async def resume(self) -> None:
        """Start the server with a larger ``max_connections`` (a standby may have more)."""
        options = (
            f"-p {self.port} -k {self.home} -c listen_addresses={HOST} "
            f"-c max_connections={FLEET_MAX_CONNECTIONS}"
        )
        await self._run(
            str(self.pg_bin / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.home / "postgres.log")),
            *("-o", options, "-w", "-t", "60", "start"),
        )


@dataclass(frozen=True)
class FleetServers:
    """Private PostgreSQL, Redis and Kafka for the fleet runs (same binaries as the shared)."""

    timescale_url: str
    redis_url: str
    kafka_bootstrap: str
    pg_admin_url: str


@asynccontextmanager
async def fleet_servers(
    admin_url: str, app_url: str, redis_server: str
) -> AsyncIterator[FleetServers]:
    """Start private copies of the three servers; stop and delete them when the block ends.

    A thousand deployments open thousands of sessions; on the shared servers that would
    exhaust PostgreSQL's ``max_connections`` (200) under other users' tests, and their
    connections would blur the counts of sessions opened. Private servers give exact counts.
    """
    postgres = _FleetPostgres(admin_url)
    redis_dir = Path(tempfile.mkdtemp(prefix="ingest-bench-redis-"))
    redis = RedisServers(redis_server, redis_dir)
    kafka = KafkaInstance()
    try:
        await postgres.start()
        await postgres.promote()
        redis_port = await redis.start("--maxclients", "20000")
        await kafka.start()
        app = urlsplit(app_url)
        userinfo = app.netloc.rpartition("@")[0]
        yield FleetServers(
            timescale_url=urlunsplit(app._replace(netloc=f"{userinfo}@{HOST}:{postgres.port}")),
            redis_url=f"redis://{HOST}:{redis_port}/0",
            kafka_bootstrap=kafka.bootstrap,
            pg_admin_url=postgres.url,
        )
    finally:
        try:
            kafka.close()  # kills the broker: its data is deleted anyway
            await redis.close()
        finally:
            shutil.rmtree(redis_dir, ignore_errors=True)
            await postgres.stop()
