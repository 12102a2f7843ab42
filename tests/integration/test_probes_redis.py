"""The Redis probe against real servers: the shared one and private ones it may break."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from exporter.config import IngestSettings, RedisCacheSettings, RedisSettings
from exporter.connectors.redis import RedisConnector
from exporter.probes.base import ProbeResult, Reason, Status
from exporter.probes.redis import RedisProbe, cache_index_key
from exporter.probes.runner import ProbeRunner

from .conftest import free_port, running_daemon, sample, scrape_until, wait_for
from .redis_instance import RedisServers

CLIENT_NAME = "ingest-exporter"  # set by RedisConnector on every connection


@pytest.fixture
async def redis_servers(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[RedisServers]:
    """Start private Redis servers on demand (``$INGEST_REDIS_SERVER``); stop them after."""
    servers = RedisServers(service_env["INGEST_REDIS_SERVER"], tmp_path)
    yield servers
    await servers.close()


@contextlib.asynccontextmanager
async def connected(
    url: str, *, timeout: float = 2.0, cache: RedisCacheSettings | None = None
) -> AsyncIterator[RedisConnector]:
    """Yield a started connector for ``url``; stop it after."""
    settings = RedisSettings(url=SecretStr(url), cache=cache or RedisCacheSettings())
    connector = RedisConnector(settings, timeout=timeout)
    await connector.start()
    try:
        yield connector
    finally:
        await connector.stop()


async def run(probe: RedisProbe, timeout: float = 2.0) -> dict[str, ProbeResult]:
    """Run the probe once through the runner; return the results by check name."""
    results = await ProbeRunner(default_timeout=timeout).run_one(probe)
    return {r.check: r for r in results}


def values(result: ProbeResult) -> dict[str, float]:
    """Return a result's measurements by name."""
    return {m.name: m.value for m in result.measurements}


async def test_shared_redis_passes_every_check(service_env: dict[str, str], unique: str) -> None:
    """On the shared server ping, role, memory and cache_keys pass, counting the index."""
    namespace = f"test:probe:{unique}"
    cache = RedisCacheSettings(strategy="institutional", namespace=namespace, max_keys=5)
    async with connected(service_env["REDIS_URL"], cache=cache) as connector:
        client = connector.client
        await client.zadd(cache_index_key(namespace), {"a": 1, "b": 2, "c": 3})
        try:
            results = await run(RedisProbe(connector))
        finally:
            await client.delete(cache_index_key(namespace))
    assert list(results) == ["ping", "role", "memory", "cache_keys"]
    assert all(r.status is Status.OK for r in results.values()), results
    assert results["cache_keys"].detail == "3 of at most 5 keys"
    assert values(results["memory"])["ingest_redis_memory_used_bytes"] > 0
    assert "ingest_redis_evicted_keys" in values(results["memory"])
    assert "ingest_redis_connected_replicas" in values(results["role"])


async def test_cache_over_its_key_limit_is_degraded(
    service_env: dict[str, str], unique: str
) -> None:
    """More index members than the policy's max_keys makes cache_keys degraded/capacity."""
    namespace = f"test:probe:{unique}"
    cache = RedisCacheSettings(strategy="institutional", namespace=namespace, max_keys=2)
    async with connected(service_env["REDIS_URL"], cache=cache) as connector:
        await connector.client.zadd(cache_index_key(namespace), {"a": 1, "b": 2, "c": 3})
        try:
            results = await run(RedisProbe(connector))
        finally:
            await connector.client.delete(cache_index_key(namespace))
    assert (results["cache_keys"].status, results["cache_keys"].reason) == (
        Status.DEGRADED,
        Reason.CAPACITY,
    )


async def test_stopped_redis_is_down_refused() -> None:
    """A port nothing listens on: ping down/refused, every other check unknown/refused."""
    async with connected(f"redis://127.0.0.1:{free_port()}/0") as connector:
        probe = RedisProbe(connector)
        results = await run(probe)
    assert list(results) == list(probe.checks)
    assert (results["ping"].status, results["ping"].reason) == (Status.DOWN, Reason.REFUSED)
    assert {(r.status, r.reason) for r in list(results.values())[1:]} == {
        (Status.UNKNOWN, Reason.REFUSED)
    }


async def test_wrong_or_missing_password_is_auth(redis_servers: RedisServers) -> None:
    """With requirepass, a wrong or missing password is down/auth; the right one passes."""
    port = await redis_servers.start("--requirepass", "s3cret-pw")
    for url in (f"redis://:wrong@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        async with connected(url) as connector:
            results = await run(RedisProbe(connector))
        assert (results["ping"].status, results["ping"].reason) == (Status.DOWN, Reason.AUTH)
        assert "s3cret-pw" not in results["ping"].detail
    async with connected(f"redis://:s3cret-pw@127.0.0.1:{port}/0") as connector:
        results = await run(RedisProbe(connector))
    assert results["ping"].status is Status.OK


async def test_acl_without_info_is_unknown_permission(redis_servers: RedisServers) -> None:
    """A user denied INFO still passes ping; role and memory are unknown/permission."""
    port = await redis_servers.start()
    admin = aioredis.Redis(port=port)
    await admin.acl_setuser(
        "probe",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-info"],
    )
    await admin.aclose()
    cache = RedisCacheSettings(strategy="institutional")
    async with connected(f"redis://probe:pw@127.0.0.1:{port}/0", cache=cache) as connector:
        results = await run(RedisProbe(connector))
    assert results["ping"].status is Status.OK
    for name in ("role", "memory"):
        assert (results[name].status, results[name].reason) == (Status.UNKNOWN, Reason.PERMISSION)
    assert results["cache_keys"].status is Status.OK


async def test_blackhole_times_out_within_ten_percent(blackhole: int) -> None:
    """A server that accepts and never answers is down/timeout within the timeout + 10%."""
    timeout = 1.0
    async with connected(f"redis://127.0.0.1:{blackhole}/0", timeout=timeout) as connector:
        t0 = time.perf_counter()
        results = await run(RedisProbe(connector), timeout=timeout)
        elapsed = time.perf_counter() - t0
    assert (results["ping"].status, results["ping"].reason) == (Status.DOWN, Reason.TIMEOUT)
    assert elapsed <= timeout * 1.1, elapsed


async def _poll(probe: RedisProbe, check: str, wanted: Status, within: float) -> ProbeResult:
    async def reached() -> ProbeResult | None:
        result = (await run(probe))[check]
        return result if result.status is wanted else None

    found = await wait_for(reached, timeout=within, interval=0.1)
    assert found is not None
    return found


async def test_replica_goes_stale_when_its_primary_stops(redis_servers: RedisServers) -> None:
    """A synced replica reports its link up; once the primary stops it is degraded/stale."""
    primary = await redis_servers.start("--repl-diskless-sync-delay", "0")
    replica = await redis_servers.start("--replicaof", "127.0.0.1", str(primary))
    async with (
        connected(f"redis://127.0.0.1:{primary}/0") as to_primary,
        connected(f"redis://127.0.0.1:{replica}/0") as to_replica,
    ):
        probe = RedisProbe(to_replica)
        synced = await _poll(probe, "role", Status.OK, within=15)
        assert values(synced)["ingest_redis_master_link_up"] == 1.0
        role = (await run(RedisProbe(to_primary)))["role"]
        assert values(role) == {"ingest_redis_connected_replicas": 1.0}
        await redis_servers.stop(primary)
        stale = await _poll(probe, "role", Status.DEGRADED, within=15)
    assert stale.reason is Reason.STALE
    assert values(stale)["ingest_redis_master_link_up"] == 0.0
    assert values(stale)["ingest_redis_master_link_down_seconds"] >= 0.0


async def test_memory_near_maxmemory_is_degraded_and_evictions_counted(
    redis_servers: RedisServers,
) -> None:
    """Filling an LRU server past maxmemory evicts keys; memory is degraded/capacity."""
    port = await redis_servers.start("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
    async with connected(f"redis://127.0.0.1:{port}/0") as connector:
        async with connector.client.pipeline(transaction=False) as pipe:
            for index in range(400):
                pipe.set(f"filler:{index}", b"x" * 20_000)
            await pipe.execute()
        results = await run(RedisProbe(connector))
    memory = results["memory"]
    assert (memory.status, memory.reason) == (Status.DEGRADED, Reason.CAPACITY), memory.detail
    assert values(memory)["ingest_redis_memory_max_bytes"] == 4 * 1024 * 1024
    assert values(memory)["ingest_redis_evicted_keys"] > 0


async def _our_connections(port: int) -> int:
    admin = aioredis.Redis(port=port)
    try:
        clients: Sequence[dict[str, str]] = await admin.client_list()
    finally:
        await admin.aclose()
    return sum(1 for client in clients if client.get("name") == CLIENT_NAME)


@pytest.mark.slow
async def test_connections_stay_constant_over_a_thousand_cycles(
    redis_servers: RedisServers,
) -> None:
    """After 1,000 cycles, with cancelled runs and killed connections, the count is unchanged."""
    port = await redis_servers.start()
    runner = ProbeRunner(default_timeout=2.0)
    async with connected(f"redis://127.0.0.1:{port}/0") as connector:
        healthy = RedisProbe(connector)
        # Cancelled by the runner mid-command: a connection may be left half-read.
        hasty = RedisProbe(connector, timeout=0.0003)
        await runner.run_one(healthy)
        before = await _our_connections(port)
        statuses: list[Status] = []
        admin = aioredis.Redis(port=port)
        try:
            for cycle in range(1000):
                probe = healthy
                if cycle % 20 == 5:
                    probe = hasty
                elif cycle % 20 == 15:
                    # The server drops our connections: the next command finds it closed.
                    await admin.client_kill_filter(_type="normal", skipme=True)
                results = await runner.run_one(probe)
                statuses.append(results[0].status)
        finally:
            await admin.aclose()
        await runner.run_one(healthy)
        after = await _our_connections(port)
    assert statuses.count(Status.DOWN) >= 50  # the faults really failed runs
    assert statuses.count(Status.OK) >= 900
    assert before == after == 1


async def test_median_probe_latency_over_a_hundred_runs(service_env: dict[str, str]) -> None:
    """The whole probe takes a few milliseconds on loopback (median of 100 runs)."""
    runner = ProbeRunner(default_timeout=2.0)
    async with connected(service_env["REDIS_URL"]) as connector:
        probe = RedisProbe(connector)
        durations = []
        for _ in range(100):
            t0 = time.perf_counter()
            await runner.run_one(probe)
            durations.append(time.perf_counter() - t0)
    median = statistics.median(durations)
    print(f"redis probe median over 100 runs: {median * 1000:.2f} ms")
    assert median < 0.05


async def test_daemon_publishes_the_redis_series(
    settings_factory: Callable[..., IngestSettings], unique: str
) -> None:
    """The daemon scrapes every Redis check and its gauges, evictions as a _total counter."""
    settings = settings_factory(
        REDIS_CACHE_STRATEGY="institutional", REDIS_CACHE_NAMESPACE=f"test:daemon:{unique}"
    )
    async with running_daemon(settings) as (_, url):
        text = await scrape_until(
            url, lambda text: sample(text, "ingest_redis_memory_used_bytes") is not None
        )
    for check in ("ping", "role", "memory", "cache_keys"):
        assert sample(text, "ingest_check_up", connector="redis", check=check) == 1.0
    assert sample(text, "ingest_redis_evicted_keys_total") is not None
    assert "# TYPE ingest_redis_evicted_keys_total counter" in text
    assert sample(text, "ingest_cache_max_keys") == 50_000.0
