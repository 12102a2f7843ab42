"""A private PostgreSQL streaming replica of the shared cluster (or, promoted, a private primary).

The replica is made with ``pg_basebackup -R`` from the shared cluster of ``scripts/services.sh``
(whose ``pg_hba.conf`` allows replication from 127.0.0.1 with SCRAM), runs as user ``postgres``
(PostgreSQL refuses root) in a data directory under ``/var/lib/postgresql/`` (a folder that user
can traverse), on a free loopback port and with its own socket directory. Everything else,
``shared_preload_libraries = timescaledb`` included, is copied by the base backup: a hot standby
must have at least the primary's ``max_connections``, so the copy is also the safe choice.

``stop()`` uses ``pg_ctl stop -m immediate`` and removes the whole directory, so a test leaves
nothing behind. The primary keeps no replication slot for the replica (``wal_keep_size`` covers
the short life of a test replica), so nothing accumulates on the shared cluster either.
``promote()`` turns the replica into a primary of its own: a private copy of the shared
database (roles, TimescaleDB, tables) that a test may lock, load or stop (``halt()``, then
``resume()``) without disturbing other tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from tests.waiting import wait_for

from .net import free_port

__all__ = ["PgPair", "PgReplica", "with_hosts"]

HOST = "127.0.0.1"
PG_HOME = Path("/var/lib/postgresql")


class PgReplica:
    """Run one streaming replica of the cluster behind ``primary_url`` (a superuser URL)."""

    def __init__(self, primary_url: str, *, pg_bin: str | None = None) -> None:
        self.primary_url = primary_url
        found = pg_bin or os.environ.get("INGEST_PG_BIN")
        if not found:
            raise RuntimeError("INGEST_PG_BIN is not set: source .services/env")
        self.pg_bin = Path(found)
        token = uuid.uuid4().hex[:10]
        #: The replica's application_name, so the primary's pg_stat_replication names it.
        self.name = f"probe_replica_{token}"
        self.home = PG_HOME / f"ingest-replica-{token}"
        self.data = self.home / "data"
        self.port = free_port()
        self._started = False

    @property
    def url(self) -> str:
        """Return ``primary_url`` pointed at the replica's port (same role, same database)."""
        parts = urlsplit(self.primary_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{HOST}:{self.port}" if userinfo else f"{HOST}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def _run(self, *args: str, env: dict[str, str] | None = None) -> None:
        """Run a PostgreSQL tool as user postgres; fail with its output on a non-zero exit."""
        process = await asyncio.create_subprocess_exec(
            "runuser",
            "-u",
            "postgres",
            "--",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
        if process.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({process.returncode}): {output.decode()[-800:]}")

    async def start(self, *, timeout: float = 60.0) -> None:
        """Base-backup the primary, start the replica and wait until it streams."""
        parts = urlsplit(self.primary_url)
        self.home.mkdir(mode=0o700)
        shutil.chown(self.home, "postgres", "postgres")
        self._started = True
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # The password reaches pg_basebackup through its environment, never its argv.
            "PGPASSWORD": unquote(parts.password or ""),
            "PGAPPNAME": self.name,
        }
        conninfo = (
            f"host={parts.hostname} port={parts.port or 5432} "
            f"user={unquote(parts.username or 'postgres')} application_name={self.name}"
        )
        await self._run(
            str(self.pg_bin / "pg_basebackup"),
            "-d",
            conninfo,
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
            env=env,
        )
        await self.resume()
        await self.wait_streaming(timeout=timeout)

    async def resume(self) -> None:
        """Start the server on its port and data (again, after :meth:`halt`); wait until it runs."""
        options = f"-p {self.port} -k {self.home} -c listen_addresses={HOST}"
        await self._run(
            str(self.pg_bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.home / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    async def halt(self) -> None:
        """Stop the server at once (an outage), keeping its data for :meth:`resume`."""
        await self._run(
            str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
        )

    async def wait_streaming(self, *, timeout: float = 30.0) -> None:
        """Wait until the primary lists the replica as ``streaming``."""
        conn = await asyncpg.connect(self.primary_url, timeout=10)

        async def streaming() -> bool:
            state = await conn.fetchval(
                "SELECT state FROM pg_stat_replication WHERE application_name = $1", self.name
            )
            return bool(state == "streaming")

        try:
            await wait_for(streaming, timeout=timeout, interval=0.1)
        finally:
            await conn.close()

    async def promote(self, *, timeout: float = 30.0) -> None:
        """Promote the replica to a primary of its own (a private cluster to break freely)."""
        await self._run(str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-w", "promote")
        conn = await asyncpg.connect(self.url, timeout=10)

        async def promoted() -> bool:
            return not await conn.fetchval("SELECT pg_is_in_recovery()")

        try:
            await wait_for(promoted, timeout=timeout, interval=0.1)
        finally:
            await conn.close()

    async def stop(self) -> None:
        """Stop the replica at once and remove its directory; calling it again is a no-op."""
        if not self._started:
            return
        self._started = False
        try:
            if (self.data / "postmaster.pid").exists():
                await self._run(
                    str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def with_hosts(url: str, *ports: int, query: str = "") -> str:
    """Return ``url`` pointed at ``127.0.0.1`` on ``ports`` (several: a libpq multi-host URL)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    hosts = ",".join(f"{HOST}:{port}" for port in ports)
    netloc = f"{userinfo}@{hosts}" if userinfo else hosts
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class PgPair:
    """A private primary with a streaming standby of its own: a copy of the shared cluster.

    The primary is a promoted :class:`PgReplica` of the shared cluster (roles, TimescaleDB
    and tables included); the standby streams from it. A test may kill the primary and
    promote the standby (``scripts/timescale-failover.sh --primary-port P --standby-port S``)
    while the shared stack stays a primary with its standby. ``synchronous=True`` makes the
    primary's commits wait for the standby (``synchronous_standby_names``), set only on the
    primary, so the promoted standby does not wait for a standby it lacks.
    """

    def __init__(self, admin_url: str, *, synchronous: bool = False) -> None:
        self.admin_url = admin_url
        self.synchronous = synchronous
        self.primary = PgReplica(admin_url)
        self.standby: PgReplica | None = None

    def url(self, url: str, *, standby: bool = False) -> str:
        """Return ``url`` (any role of the shared cluster) pointed at the primary or standby."""
        server = self._standby if standby else self.primary
        return with_hosts(url, server.port)

    def write_url(self, url: str) -> str:
        """Return the multi-host read-write URL over both servers (it follows the primary)."""
        return with_hosts(
            url, self.primary.port, self._standby.port, query="target_session_attrs=read-write"
        )

    @property
    def _standby(self) -> PgReplica:
        if self.standby is None:
            raise RuntimeError("the pair is not started")
        return self.standby

    async def start(self) -> None:
        """Copy the shared cluster into a private primary, then stream a standby from it."""
        await self.primary.start()
        await self.primary.promote()
        self.standby = PgReplica(self.primary.url, pg_bin=str(self.primary.pg_bin))
        await self.standby.start()
        if self.synchronous:
            conn = await asyncpg.connect(self.primary.url, timeout=10)
            try:
                name = self.standby.name
                await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
                await conn.execute("SELECT pg_reload_conf()")

                async def synchronous() -> bool:
                    state = await conn.fetchval(
                        "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                        name,
                    )
                    return bool(state == "sync")

                await wait_for(synchronous, timeout=10, interval=0.05)
            finally:
                await conn.close()

    async def stop(self) -> None:
        """Stop both servers and remove their directories."""
        try:
            if self.standby is not None:
                await self.standby.stop()
        finally:
            await self.primary.stop()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
