"""The end-to-end stack: the daemon, Prometheus, Alertmanager and a webhook, as real processes.

The daemon runs on the local services, but with a private Redis pair (so the test may stop
its Redis) and a private streaming replica of the shared PostgreSQL; a real Prometheus loads
the generated rules and a real Alertmanager notifies a webhook.

Everything listens on loopback with short intervals; the rules are the shipped ones rendered
with the test's selector and ``for:`` scaled down (``RuleParams.time_scale``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.prometheus.generate import write as write_rules
from deploy.prometheus.rules import RuleParams

from .alertmanager_instance import (
    AlertmanagerInstance,
    WebhookReceiver,
    running_alertmanager,
    webhook_receiver,
    with_receiver,
)
from .conftest import REPO
from .net import free_port
from .pg_instance import PgReplica
from .prometheus_instance import PrometheusInstance, running_prometheus, scrape_config
from .redis_instance import RedisServers

__all__ = [
    "JOB",
    "PROBE_INTERVAL",
    "RULES",
    "SCRAPE_INTERVAL",
    "Stack",
    "ingest_stack",
    "produce",
    "run_drill",
]

JOB = "ingest-e2e"
SCRAPE_INTERVAL = 1.0
PROBE_INTERVAL = 2.0
#: The shipped rules with the test's selector, every duration divided by 12 (60 s -> 5 s).
RULES = RuleParams(
    selector=f'job="{JOB}"',
    time_scale=1 / 12,
    probe_interval_seconds=PROBE_INTERVAL,
    manifest_interval_seconds=5.0,
)
_SERVICE_VARIABLES = (
    "TIMESCALEDB_URL",
    "TIMESCALE_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "KAFKA_BROKERS",
    "KAFKA_BOOTSTRAP_SERVERS",
)


@dataclass
class Stack:
    """Handles on every process of the end-to-end stack."""

    config: Path
    redis: RedisServers
    redis_port: int
    replica_port: int
    topic: str
    bootstrap: str
    prometheus: PrometheusInstance
    alertmanager: AlertmanagerInstance
    receiver: WebhookReceiver


def _config(
    env: dict[str, str], unique: str, table: str, ports: tuple[int, int], standby: str
) -> dict[str, object]:
    """Return the daemon's configuration file: two deployments, a primary and its standbys."""
    primary, replica = ports
    return {
        "dimensions": [
            {"name": "e2e", "table": table, "time_column": "time", "freshness_sla_seconds": 3600}
        ],
        # The replica is also the fallback path a drill reads.
        "timescale": {"url": env["TIMESCALEDB_URL"], "replica_url": standby},
        "failover_drill": {"enabled": True, "dimensions": ["e2e"], "label": "e2e"},
        # The cache is opt-in: the Redis dashboard's cache panels need it on.
        "redis": {"url": f"redis://127.0.0.1:{primary}/0", "cache": {"strategy": "institutional"}},
        "kafka": {
            "bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"],
            "ingest_topics": {"e2e": f"test.e2e.{unique}"},
            "consumer_group": f"e2e-{unique}",
            # Read-only lag of a named group (the bridge's own here) fills the group panels.
            "lag": {"groups": [f"e2e-{unique}"]},
            "manifest_topic": f"test.e2e.manifest.{unique}",
            "manifest_publish": True,
            "manifest_interval_seconds": RULES.manifest_interval_seconds,
        },
        "probes": {"interval_seconds": PROBE_INTERVAL, "timeout_seconds": 0.75 * PROBE_INTERVAL},
        "deployments": [
            {"name": "e2e"},
            {
                # The standbys: private streaming replicas of Timescale and of the Redis.
                "name": "e2e-standby",
                "timescale": {"url": standby},
                # A bridge group is one deployment's own.
                "kafka": {"consumer_group": f"e2e-standby-{unique}"},
                "redis": {
                    "url": f"redis://127.0.0.1:{replica}/0",
                    "cache": {"strategy": "disabled"},  # a replica is read-only
                },
            },
        ],
    }


@asynccontextmanager
async def _table(url: str, name: str) -> AsyncIterator[str]:
    """Create a hypertable with one fresh row (the declared dimension); drop it after."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE TABLE "{name}" (time timestamptz NOT NULL, v int)')
        await conn.execute("SELECT create_hypertable($1::regclass, 'time')", f'"{name}"')
        await conn.execute(f'INSERT INTO "{name}" VALUES (now(), 1)')  # noqa: S608 - test table
        yield f"public.{name}"
    finally:
        await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        await conn.close()


@asynccontextmanager
async def _topics(bootstrap: str, unique: str) -> AsyncIterator[str]:
    """Create the ingest topic (with one good event) and delete it and the manifest's after."""
    topic = f"test.e2e.{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await produce(bootstrap, topic, json.dumps({"seq": 1}).encode())
        yield topic
    finally:
        existing = set(await admin.list_topics())
        gone = [t for t in (topic, f"test.e2e.manifest.{unique}") if t in existing]
        if gone:
            await admin.delete_topics(gone)
        await admin.close()


async def produce(bootstrap: str, topic: str, value: bytes) -> None:
    """Send one record and wait for its acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


def _environment() -> dict[str, str]:
    """Return the daemon's environment: no service variable, so the config file decides."""
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_VARIABLES}
    env["INGEST_LOG_FORMAT"] = "json"
    return env


async def run_drill(config: Path, scenario: str) -> tuple[int | None, str]:
    """Run ``ingest-exporter drill`` with the stack's configuration; return exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "exporter", "drill", f"--config.file={config}"),
        *("--scenario", scenario, "--format", "json"),
        cwd=REPO,
        env=_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, output.decode(errors="replace")


@asynccontextmanager
async def _daemon(config: Path, port: int, log: Path) -> AsyncIterator[None]:
    """Run ``ingest-exporter run`` as a process until the block ends (SIGTERM, then kill)."""
    env = _environment()
    sink = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "exporter", "run", f"--config.file={config}"),
            *("--web.listen-address", f"127.0.0.1:{port}"),
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    finally:
        os.close(sink)  # the child has its own copy
    try:
        if not await _ready(port, process):
            tail = await asyncio.to_thread(log.read_text, encoding="utf-8", errors="replace")
            pytest.fail(f"the daemon did not become ready ({process.returncode}):\n{tail[-3000:]}")
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def _ready(port: int, process: asyncio.subprocess.Process) -> bool:
    """Wait until the daemon answers ``/-/ready`` (every deployment probed once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline and process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/-/ready") as response:
                    if response.status == 200:
                        return True
            # Nothing announces readiness but the endpoint itself: look again shortly.
            await asyncio.sleep(0.2)
    return False


@asynccontextmanager
async def ingest_stack(workdir: Path, env: dict[str, str], unique: str) -> AsyncIterator[Stack]:
    """Start the whole stack in dependency order; stop everything after, in reverse."""
    redis = RedisServers(env["INGEST_REDIS_SERVER"], workdir)
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    try:
        primary = await redis.start()
        replica = await redis.start("--replicaof", "127.0.0.1", str(primary))
        async with (
            _table(env["TIMESCALEDB_URL"], f"e2e_{unique}") as table,
            PgReplica(env["TIMESCALE_ADMIN_URL"]) as standby,
            _topics(bootstrap, unique) as topic,
        ):
            config = workdir / "ingest.yml"
            document = _config(env, unique, table, (primary, replica), standby.url)
            config.write_text(yaml.safe_dump(document), encoding="utf-8")
            rules = write_rules(workdir / "rules", RULES)
            port = free_port()
            async with (
                _daemon(config, port, workdir / "daemon.log"),
                webhook_receiver() as receiver,
                running_alertmanager(
                    workdir / "alertmanager",
                    with_receiver(
                        REPO / "deploy" / "alertmanager" / "alertmanager.yml",
                        receiver.base_url,
                        timing={
                            "group_wait": "1s",
                            "group_interval": "1s",
                            "repeat_interval": "1h",
                        },
                    ),
                ) as alertmanager,
                running_prometheus(
                    workdir / "prometheus",
                    [scrape_config(JOB, [f"127.0.0.1:{port}"], interval=f"{SCRAPE_INTERVAL:g}s")],
                    rule_files=rules,
                    alertmanager=f"127.0.0.1:{alertmanager.port}",
                    args=["--rules.alert.resend-delay=1s"],
                ) as prometheus,
            ):
                yield Stack(
                    config,
                    redis,
                    primary,
                    replica,
                    topic,
                    bootstrap,
                    prometheus,
                    alertmanager,
                    receiver,
                )
    finally:
        await redis.close()
