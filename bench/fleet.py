"""One daemon, N deployments on one PostgreSQL, one Redis and one Kafka: the fleet table."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
import yaml

from bench.load import Endpoint, EndpointLoad, interleaved, new_session
from bench.procfs import cpu_seconds, rss_bytes
from bench.report import fmt_count, fmt_mib, fmt_ms, fmt_seconds, render_table
from bench.samples import count_series, sample_values, sum_samples
from bench.servers import FleetServers, Process, daemon_command, running
from tests.integration.net import free_port

__all__ = [
    "INTERVAL",
    "PER_CLIENT",
    "ROUNDS",
    "SEQ_COUNT",
    "FleetRow",
    "measure_fleet",
    "render_fleet",
]

INTERVAL = 5.0  # seconds between probe cycles, as in the performance targets
TIMEOUT = 4.0  # the probe timeout must stay below the interval
ROUNDS, SEQ_COUNT, PER_CLIENT = 3, 30, 8  # the load: rounds, sequential, each of 8 clients


@dataclass(frozen=True)
class FleetRow:
    """One row of the fleet table."""

    deployments: int
    series: int
    metrics: EndpointLoad
    healthy: EndpointLoad
    cycle_p50: float
    effective_period: float
    cpu_per_check: float
    timeouts: int
    rss: int
    pg_sessions: int
    redis_connections: int
    ready_after: float | None  # None: not ready within the bound


def _config(servers: FleetServers, deployments: int, folder: Path) -> Path:
    """Write the daemon's config: the private servers once, inherited by every deployment."""
    path = folder / f"fleet-{deployments}.yml"
    document = {
        "timescale": {"url": servers.timescale_url, "application_name": "bench-fleet"},
        "redis": {"url": servers.redis_url},
        "kafka": {"bootstrap_servers": servers.kafka_bootstrap},
        "probes": {"interval_seconds": INTERVAL, "timeout_seconds": TIMEOUT},
        "deployments": [{"name": f"d{i:04d}"} for i in range(deployments)],
    }
    path.touch(mode=0o600)  # it holds the private server's password
    path.write_text(yaml.safe_dump(document))
    return path


async def _scrape(process: Process, timeout: float) -> tuple[float, str]:
    """Return when a ``/metrics`` scrape started (monotonic) and its body."""
    async with new_session(clients=1, timeout=timeout) as session:
        started = time.monotonic()
        async with session.get(process.base_url + "/metrics") as response:
            response.raise_for_status()
            return started, await response.text()


async def _ready(process: Process, timeout: float) -> float | None:
    """Return the seconds until ``/-/ready`` answered 200, None when it did not in ``timeout``."""
    try:
        return await process.wait_http("/-/ready", timeout=timeout)
    except TimeoutError:
        return None


async def measure_fleet(
    servers: FleetServers,
    deployments: int,
    folder: Path,
    *,
    ready_timeout: float,
    load_seconds: float,
) -> FleetRow:
    """Run the daemon with ``deployments`` deployments and measure it for about a minute."""
    admin = await asyncpg.connect(servers.pg_admin_url, timeout=10)
    redis = aioredis.Redis.from_url(servers.redis_url)
    sessions_sql = "SELECT sessions FROM pg_stat_database WHERE datname = 'ingest'"
    try:
        # Opened before the baseline and kept: the bench's own connections are not counted.
        sessions_before = int(await admin.fetchval(sessions_sql))
        connections_before = int((await redis.info("stats"))["total_connections_received"])
        port = free_port()
        argv = daemon_command(port, _config(servers, deployments, folder))
        async with running(f"fleet-{deployments}", argv, port=port, env={}, logs=folder) as daemon:
            ready_after = await _ready(daemon, ready_timeout)
            # Quiet window, two intervals with no scrape between its ends: the probe loop's
            # own CPU per check and how often each deployment really gets probed.
            budget = max(30.0, 10 * INTERVAL)
            start, first = await _scrape(daemon, budget)
            cpu_start = cpu_seconds(daemon.pid)
            await asyncio.sleep(2 * INTERVAL)
            end, last = await _scrape(daemon, budget)
            cpu = cpu_seconds(daemon.pid) - cpu_start
            cycles = sum_samples(last, "ingest_probe_cycles_total") - sum_samples(
                first, "ingest_probe_cycles_total"
            )
            checks = len(sample_values(last, "ingest_check_up")) / deployments
            durations = list(sample_values(last, "ingest_probe_cycle_duration_seconds").values())
            endpoints = [
                Endpoint("/metrics", daemon.base_url + "/metrics", daemon.pid),
                Endpoint("/-/healthy", daemon.base_url + "/-/healthy", daemon.pid),
            ]
            async with new_session(timeout=budget) as session:
                loads = await interleaved(
                    session,
                    endpoints,
                    rounds=ROUNDS,
                    seq_count=SEQ_COUNT,
                    per_client=PER_CLIENT,
                    deadline=time.monotonic() + load_seconds,
                )
            _, final = await _scrape(daemon, budget)
            rss = rss_bytes(daemon.pid)
        # PostgreSQL publishes a backend's session count with its next statistics flush.
        await asyncio.sleep(1.0)
        sessions = int(await admin.fetchval(sessions_sql)) - sessions_before
        connections = int((await redis.info("stats"))["total_connections_received"])
    finally:
        await admin.close()
        await redis.aclose()
    return FleetRow(
        deployments=deployments,
        series=count_series(last),
        metrics=loads["/metrics"],
        healthy=loads["/-/healthy"],
        cycle_p50=statistics.median(durations) if durations else math.nan,
        effective_period=deployments * (end - start) / cycles if cycles else math.inf,
        cpu_per_check=cpu / (cycles * checks) if cycles and checks else math.nan,
        timeouts=round(sum_samples(final, "ingest_probe_failures_total", reason="timeout")),
        rss=rss,
        pg_sessions=sessions,
        redis_connections=connections - connections_before,
        ready_after=ready_after,
    )


def render_fleet(rows: list[FleetRow], ready_timeout: float) -> str:
    """Return the fleet table as markdown."""
    headers = [
        "N",
        "series",
        "`/metrics` seq p50 / c8 p99",
        "`/-/healthy` c8 p99",
        "probe cycle p50",
        "effective period",
        "CPU / check",
        "check timeouts (run)",
        "RSS",
        "PG sessions opened",
        "Redis connections opened",
        "ready after",
    ]
    table = [
        (
            fmt_count(row.deployments),
            fmt_count(row.series),
            f"{fmt_ms(row.metrics.seq.median)} / {fmt_ms(row.metrics.c8.p(99))}",
            fmt_ms(row.healthy.c8.p(99)),
            fmt_seconds(row.cycle_p50),
            fmt_seconds(row.effective_period),
            fmt_ms(row.cpu_per_check),
            fmt_count(row.timeouts),
            fmt_mib(row.rss),
            fmt_count(row.pg_sessions),
            fmt_count(row.redis_connections),
            fmt_seconds(row.ready_after)
            if row.ready_after is not None
            else f"> {ready_timeout:.0f} s",
        )
        for row in rows
    ]
    return render_table(headers, table)
