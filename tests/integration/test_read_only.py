"""Safe to point at production: least privileges suffice, and the defaults never write.

The privileges are the README's "Privileges" section, granted exactly: a PostgreSQL role with
``pg_monitor`` plus ``USAGE``/``SELECT`` on a dimension's schema and table, a Redis ACL user
allowed ``ping``, ``info`` and ``client|setname`` on no key. Kafka on the local stack runs without
an authorizer, so its ACLs are documented, not enforced here.

Writes are counted on the servers: PostgreSQL's per-table statistics of a database of the
test's own, a private redis-server's ``INFO commandstats`` (every command flagged ``write``) and
key count, a private broker's topic list and the end offset of every partition (those of
``__consumer_offsets`` included: a commit would move them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import IngestSettings, build_institutional_ingest_config

from .conftest import running_daemon, sample, scrape, scrape_until
from .kafka_instance import KafkaInstance
from .redis_instance import RedisServers

#: The README's default Redis rule (after the user's name and password).
REDIS_RULE = ("resetkeys", "resetchannels", "-@all", "+ping", "+info", "+client|setname")
#: Cycles of the no-write run: an hour of the default 15 s interval.
CYCLES = 240


def _with_user(url: str, user: str, password: str, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.netloc.rpartition('@')[2]}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.fixture
async def pg_admin(service_env: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """Return a superuser session on the shared cluster (closed after)."""
    connection = await asyncpg.connect(service_env["TIMESCALE_ADMIN_URL"])
    yield connection
    await connection.close()


@pytest.fixture
async def monitor_role(
    pg_admin: asyncpg.Connection, service_env: dict[str, str], unique: str
) -> AsyncIterator[tuple[str, str]]:
    """Create the README's least-privilege role and a dimension it may read; drop both after.

    Returns the role's URL and the dimension's ``schema.table``.
    """
    role, schema, password = f"ro_{unique}", f"ro_{unique}", f"pw-{unique}"
    database = urlsplit(service_env["TIMESCALEDB_URL"]).path.lstrip("/")
    await pg_admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        # The README's grants, verbatim.
        await pg_admin.execute(f"GRANT pg_monitor TO {role}")
        await pg_admin.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        await pg_admin.execute(f"CREATE SCHEMA {schema}")
        await pg_admin.execute(
            f"CREATE TABLE {schema}.bars (time timestamptz NOT NULL, price double precision)"
        )
        await pg_admin.execute(f"SELECT create_hypertable('{schema}.bars', 'time')")
        await pg_admin.execute(f"INSERT INTO {schema}.bars VALUES (now(), 1.0)")  # noqa: S608 - test table
        await pg_admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        await pg_admin.execute(f"GRANT SELECT ON {schema}.bars TO {role}")
        yield _with_user(service_env["TIMESCALEDB_URL"], role, password), f"{schema}.bars"
    finally:
        await pg_admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pg_admin.execute(f"DROP OWNED BY {role}")
        await pg_admin.execute(f"DROP ROLE {role}")


@pytest.fixture
async def redis_monitor(service_env: dict[str, str], unique: str) -> AsyncIterator[str]:
    """Create the README's least-privilege Redis ACL user; delete it after. Return its URL."""
    user, password = f"ro-{unique}", f"pw-{unique}"
    admin = aioredis.Redis.from_url(service_env["REDIS_URL"])
    await admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"])
    await admin.execute_command("ACL", "SETUSER", user, *REDIS_RULE)  # type: ignore[no-untyped-call] # redis-py leaves it untyped
    try:
        yield _with_user(service_env["REDIS_URL"], user, password)
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()


def check_values(text: str) -> dict[str, float]:
    """Return ``ingest_check_up`` by ``connector/check``."""
    return {
        f"{s.labels['connector']}/{s.labels['check']}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ingest_check_up"
    }


async def test_least_privilege_users_pass_every_default_check(
    settings_factory: Callable[..., IngestSettings],
    monitor_role: tuple[str, str],
    redis_monitor: str,
    service_env: dict[str, str],
    unique: str,
    tmp_path: Path,
) -> None:
    """As the README's least-privilege users, every check of the defaults is ok."""
    url, table = monitor_role
    config = tmp_path / "dimensions.yaml"
    config.write_text(f"dimensions: [{{name: bars, table: {table}}}]\n", encoding="utf-8")
    settings = settings_factory(config, TIMESCALEDB_URL=url, REDIS_URL=redis_monitor)
    async with running_daemon(settings) as (_, base_url):
        text = await scrape_until(base_url, lambda t: len(check_values(t)) >= 11, timeout=30)
    checks = check_values(text)
    expected = {
        "timescale/connect",
        "timescale/recovery",
        "timescale/replication",
        "timescale/connections",
        "timescale/extension",
        "timescale/dimension:bars",
        "timescale/jobs",
        "redis/ping",
        "redis/role",
        "redis/memory",
        "kafka/metadata",
    }
    assert set(checks) == expected
    assert {name for name, up in checks.items() if up != 1.0} == set()
    # Nothing the daemon tried was refused: Redis logs every denied command.
    admin = aioredis.Redis.from_url(service_env["REDIS_URL"])
    try:
        denied = [e for e in await admin.acl_log() if e.get("username") == f"ro-{unique}"]
    finally:
        await admin.aclose()
    assert denied == []


@pytest.fixture
async def own_database(
    pg_admin: asyncpg.Connection, service_env: dict[str, str], unique: str
) -> AsyncIterator[str]:
    """Create an empty database for this test (its statistics are the daemon's alone)."""
    name = f"nowrite_{unique}"
    await pg_admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        await pg_admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def pg_writes(admin_url: str, database: str) -> dict[str, tuple[int, int, int]]:
    """Return rows inserted, updated and deleted per table of ``database``, from the server.

    Every table of the database counts, its catalogs too (so DDL shows), except the shared
    catalogs (``pg_database``, ``pg_authid``, ...: their counters are the whole cluster's, which
    other tests change) and ``pg_statistic``, which autovacuum's ANALYZE rewrites on its own
    schedule.
    """
    url = urlsplit(admin_url)
    local = await asyncpg.connect(urlunsplit(url._replace(path=f"/{database}")))
    try:
        await local.execute("SELECT pg_stat_clear_snapshot()")
        rows = await local.fetch(
            "SELECT s.schemaname || '.' || s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_del "
            "FROM pg_stat_all_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE NOT c.relisshared AND s.relname <> 'pg_statistic'"
        )
    finally:
        await local.close()
    return {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def redis_writes(client: aioredis.Redis) -> tuple[int, dict[str, int]]:
    """Return the key count and the calls of every command that can write, from the server."""
    stats = await client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    command = ("COMMAND", "INFO", *calls)
    flags = await client.execute_command(*command) if calls else []  # type: ignore[no-untyped-call] # redis-py leaves it untyped
    writes = {
        name: calls[name]
        for name, info in zip(calls, flags, strict=True)
        # may_replicate: EVAL, EVALSHA, FCALL and the like, which can write through a script.
        if info is not None and {"write", "may_replicate"} & {_text(flag) for flag in info[2]}
    }
    return int(await client.dbsize()), writes


async def kafka_state(bootstrap: str) -> tuple[set[str], dict[TopicPartition, int]]:
    """Return the broker's topics and every partition's end offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await reader.start()
    try:
        described = await admin.describe_topics()
        partitions = [
            TopicPartition(str(t["topic"]), int(p["partition"]))
            for t in described
            for p in t["partitions"]
        ]
        return {str(t["topic"]) for t in described}, await reader.end_offsets(partitions)
    finally:
        await reader.stop()
        await admin.close()


async def seed_group(bootstrap: str, topic: str, group: str) -> None:
    """Give the private broker a topic with messages and a group with a committed offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for index in range(5):
            await producer.send_and_wait(topic, str(index).encode(), partition=0)
    finally:
        await producer.stop()
    # No auto-commit: on stop it would commit its own position, which may already be reset
    # to the end, over the offset committed here.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): 2})
    finally:
        await consumer.stop()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[int]:
    """Return the port of a private redis-server (its counters are the daemon's alone)."""
    binary = os.environ.get("INGEST_REDIS_SERVER") or shutil.which("redis-server")
    assert binary, "INGEST_REDIS_SERVER is not set and redis-server is not on PATH"
    servers = RedisServers(binary, tmp_path)
    port = await servers.start()
    yield port
    await servers.close()


async def test_defaults_write_nothing_over_an_hour_of_cycles(
    settings_factory: Callable[..., IngestSettings],
    pg_admin: asyncpg.Connection,
    own_database: str,
    private_redis: int,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """240 cycles with the defaults (and a lag group) create no topic, key, row or commit."""
    redis = aioredis.Redis(port=private_redis)
    async with KafkaInstance(service_env["INGEST_KAFKA_JARS"]) as kafka:
        group = f"nowrite-{unique}"
        await seed_group(kafka.bootstrap, f"nowrite-{unique}", group)
        url = urlsplit(service_env["TIMESCALEDB_URL"])
        env = {
            "TIMESCALEDB_URL": urlunsplit(url._replace(path=f"/{own_database}")),
            "REDIS_URL": f"redis://127.0.0.1:{private_redis}/0",
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "KAFKA_LAG_GROUPS": group,
            "INGEST_PROBE_TIMEOUT_SECONDS": "2",
            "INGEST_WEB_LISTEN_ADDRESS": "127.0.0.1:0",
        }
        # Built here, not by settings_factory: that one switches manifest publishing off
        # explicitly, and this test is about the defaults.
        settings = build_institutional_ingest_config(environ=env)
        # An hour of cycles in about a minute: below the loader's 1 s minimum (which keeps
        # production from hammering the servers), set here past validation on purpose. A
        # cycle does the same requests whatever the interval.
        fast = settings.probes.model_copy(update={"interval_seconds": 0.1})
        settings = settings.model_copy(update={"probes": fast})
        before = (
            await pg_writes(service_env["TIMESCALE_ADMIN_URL"], own_database),
            await redis_writes(redis),
            await kafka_state(kafka.bootstrap),
        )
        async with running_daemon(settings) as (_, base_url):
            text = await scrape_until(
                base_url,
                lambda t: (sample(t, "ingest_probe_cycles_total") or 0) >= CYCLES,
                timeout=180,
            )
            assert sample(text, "ingest_check_up", check=f"group_lag:{group}") == 1.0
            text = await scrape(base_url)
            cycles = sample(text, "ingest_probe_cycles_total")
        # Backends flush their statistics when they exit; the daemon's pool is closed now.
        for _ in range(50):
            active = await pg_admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", own_database
            )
            if not active:
                break
            await asyncio.sleep(0.1)
        after = (
            await pg_writes(service_env["TIMESCALE_ADMIN_URL"], own_database),
            await redis_writes(redis),
            await kafka_state(kafka.bootstrap),
        )
    await redis.aclose()
    assert cycles is not None
    assert cycles >= CYCLES
    assert after[0] == before[0], "rows written in PostgreSQL"
    assert after[1] == before[1], "Redis keys or write commands"
    assert after[2][0] == before[2][0], "topics created"
    assert after[2][1] == before[2][1], "messages or offset commits written"
