"""A private single-node KRaft Kafka broker for tests that must stop or kill a broker.

It is configured like the shared broker of ``scripts/services.sh`` (same jars, same log4j2
configuration, ``StorageTool format --standalone``), but listens on free ports of its own and
keeps its data in a temporary directory, so a test can stop it without disturbing anyone else.
``stop()`` keeps the data directory and the ports, so ``start()`` brings back the same cluster
(topics, committed offsets) at the same address. Startup takes several seconds on 2 cores.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from aiokafka.admin import AIOKafkaAdminClient

from tests.pki import CertBundle

from .net import free_port

__all__ = ["KafkaInstance"]

REPO = Path(__file__).resolve().parents[2]
LOG4J2 = REPO / "scripts" / "services" / "kafka-log4j2.xml"
JVM_OPTS = ("-Xms128m", "-Xmx384m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    # Runs in the child before exec: if the test process dies without cleaning up (a hard
    # timeout, SIGKILL), the kernel kills the broker too instead of leaving an orphan JVM.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _cluster_id() -> str:
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaInstance:
    """Run one private KRaft broker (broker + controller in one JVM) on free loopback ports."""

    def __init__(self, jars: str | Path | None = None, *, tls: CertBundle | None = None) -> None:
        found = jars or os.environ.get("INGEST_KAFKA_JARS")
        if not found:
            raise RuntimeError("INGEST_KAFKA_JARS is not set: source .services/env")
        self.jars = Path(found)
        self.port = free_port()
        self.controller_port = free_port()
        #: With ``tls``: an extra SSL listener that requires a client certificate.
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        self.workdir = Path(tempfile.mkdtemp(prefix="ingest-kafka-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        """Return the ``host:port`` clients connect to."""
        return f"{HOST}:{self.port}"

    @property
    def tls_bootstrap(self) -> str:
        """Return the ``host:port`` of the mutual-TLS listener (only with ``tls``)."""
        if self.tls_port is None:
            raise RuntimeError("this broker has no TLS listener")
        return f"{HOST}:{self.tls_port}"

    @property
    def running(self) -> bool:
        """Tell whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            *JVM_OPTS,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            f"{self.jars}/*",
            *args,
        ]

    def _write_config(self) -> Path:
        (self.workdir / "data").mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        path = self.workdir / "server.properties"
        listeners = f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        tls: list[str] = []
        if self.tls is not None:
            listeners += f",SSL://{HOST}:{self.tls_port}"
            protocols += ",SSL:SSL"
            # Kafka reads a PEM keystore as one file: the private key, then the certificate.
            keystore = self.workdir / "server.pem"
            keystore.write_text(self.tls.server_key.read_text() + self.tls.server_cert.read_text())
            tls = [
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={self.tls.ca_cert}",
                "ssl.client.auth=required",
                "ssl.endpoint.identification.algorithm=",
            ]
        path.write_text(
            "\n".join(
                [
                    *tls,
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={HOST}:{self.controller_port}",
                    f"listeners={listeners}",
                    f"advertised.listeners={listeners}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"listener.security.protocol.map={protocols}",
                    f"log.dirs={self.workdir / 'data'}",
                    "num.partitions=1",
                    "default.replication.factor=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        return path

    async def start(self, timeout: float = 60.0) -> None:
        """Start the broker (formatting storage the first time) and wait until it answers."""
        if self.running:
            return
        config = self._write_config()
        if not self._formatted:
            format_cmd = self._java(
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(config),
                "--cluster-id",
                _cluster_id(),
                "--standalone",
            )
            done = await asyncio.create_subprocess_exec(
                *format_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            output, _ = await done.communicate()
            if done.returncode != 0:
                raise RuntimeError(f"kafka storage format failed: {output.decode()[-2000:]}")
            self._formatted = True
        with (self.workdir / "logs" / "kafka.out").open("ab") as out:
            # Popen, not asyncio's subprocess: it returns at once, and close() (sync, for
            # finalizers) can still kill the broker after this event loop is gone.
            self._process = subprocess.Popen(  # noqa: ASYNC220
                self._java("kafka.Kafka", str(config)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test run must not hit the broker
                preexec_fn=_die_with_parent,  # no threads start processes in these tests
            )
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"private kafka exited during startup; see {self.workdir}/logs")
            if await self._answers():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"private kafka not ready after {timeout}s")
            # Polled: the broker says it is ready only by answering, and it may also die.
            await asyncio.sleep(0.25)

    async def _answers(self) -> bool:
        # A plain TCP connect first: aiokafka logs an error for every refused bootstrap.
        try:
            async with asyncio.timeout(2):
                _, writer = await asyncio.open_connection(HOST, self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            async with asyncio.timeout(3):
                await admin.start()
                cluster = await admin.describe_cluster()
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return bool(cluster.get("brokers")) and int(cluster.get("controller_id", -1)) >= 0

    async def stop(self, grace: float = 30.0) -> float:
        """Stop the broker with SIGTERM (SIGKILL after ``grace``); return the seconds it took."""
        return await self._signal(signal.SIGTERM, grace)

    async def kill(self) -> float:
        """Kill the broker with SIGKILL at once; return the seconds until it was gone."""
        return await self._signal(signal.SIGKILL, 10.0)

    async def _signal(self, sig: signal.Signals, grace: float) -> float:
        process = self._process
        if process is None or process.poll() is not None:
            return 0.0
        started = time.monotonic()
        process.send_signal(sig)
        try:
            await asyncio.to_thread(process.wait, grace)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 10.0)
        return time.monotonic() - started

    def close(self) -> None:
        """Kill the broker if it still runs and delete its data; safe to call twice."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=10.0)
        self.close()
