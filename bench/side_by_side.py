"""One deployment, three exporters on the shared servers: scrapes, probes and raw round trips."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

from bench.load import Endpoint, EndpointLoad, interleaved, new_session
from bench.procfs import rss_bytes
from bench.report import fmt_mib, fmt_ms, render_table
from bench.samples import count_series, percentile, sample_values
from bench.servers import daemon_command, running, with_query
from tests.integration.net import free_port

__all__ = ["PER_CLIENT", "SEQ_COUNT", "RoundTrip", "SideBySide", "measure_side_by_side"]

OURS, PG_EXPORTER, REDIS_EXPORTER = "ingest-exporter", "postgres_exporter", "redis_exporter"
RAW_OPS = 2_000
SEQ_COUNT, PER_CLIENT = 150, 30  # per round: sequential requests, then each of 8 clients'


@dataclass(frozen=True)
class RoundTrip:
    """A bare client's round trip: wall time per operation and the client's CPU per operation."""

    p50_seconds: float
    cpu_seconds: float


@dataclass
class SideBySide:
    """Everything measured with one deployment."""

    scrapes: dict[str, EndpointLoad]
    probes: dict[str, EndpointLoad]
    rss: dict[str, int]
    checks_per_probe: int
    raw: dict[str, RoundTrip]
    series: dict[str, int]

    def floor(self) -> float:
        """Return the Go HTTP floor: redis_exporter's ``/health`` p50 (sequential)."""
        return self.scrapes[f"{REDIS_EXPORTER} /health"].seq.median

    def probe_cpu_per_check(self) -> float:
        """Return our daemon's CPU seconds per check on the ``/probe`` path."""
        load = self.probes[f"{OURS} /probe"]
        checks = load.requests * self.checks_per_probe
        return load.cpu_seconds / checks if checks else float("nan")

    def render(self) -> str:
        """Return the markdown of the one-deployment sections."""
        rows = []
        for label, load in self.scrapes.items():
            process = label.split()[0]
            server = fmt_ms(load.server_cpu_per_request) if process != REDIS_EXPORTER else "n/a"
            rows.append(
                (
                    label,
                    *(fmt_ms(load.seq.median), fmt_ms(load.seq.p(99))),
                    *(fmt_ms(load.c8.median), fmt_ms(load.c8.p(99))),
                    f"{load.cpu_per_1000:.2f} s",
                    fmt_mib(self.rss[process]),
                    server,
                    load.seq.errors + load.c8.errors,
                )
            )
        headers = ["endpoint", "seq p50", "seq p99", "c8 p50", "c8 p99", "CPU / 1,000"]
        text = render_table([*headers, "RSS", "PG CPU / scrape", "errors"], rows)
        probe_rows = [
            (label, fmt_ms(load.seq.median), fmt_ms(load.seq.p(99)), f"{load.cpu_per_1000:.2f} s")
            for label, load in self.probes.items()
        ]
        text += "\n" + render_table(["on-demand probe", "p50", "p99", "CPU / 1,000"], probe_rows)
        raw_rows = [
            (name, fmt_ms(rt.p50_seconds), fmt_ms(rt.cpu_seconds)) for name, rt in self.raw.items()
        ]
        raw_rows.append(
            (
                f"ingest-exporter /probe, per check ({self.checks_per_probe} checks a probe)",
                "-",
                fmt_ms(self.probe_cpu_per_check()),
            )
        )
        return text + "\n" + render_table(["probe path", "wall p50", "CPU / op"], raw_rows)


async def _raw_round_trips(env: Mapping[str, str]) -> dict[str, RoundTrip]:
    """Time ``RAW_OPS`` bare asyncpg ``SELECT 1`` and redis ``PING`` on one connection each."""

    async def timed(op: Callable[[], Awaitable[object]]) -> RoundTrip:
        walls: list[float] = []
        cpu = time.process_time()
        for _ in range(RAW_OPS):
            started = time.perf_counter()
            await op()
            walls.append(time.perf_counter() - started)
        return RoundTrip(percentile(walls, 50), (time.process_time() - cpu) / RAW_OPS)

    conn = await asyncpg.connect(env["TIMESCALEDB_URL"], timeout=10)
    try:
        pg = await timed(lambda: conn.fetchval("SELECT 1"))
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(env["REDIS_URL"])
    try:
        await client.ping()  # connect outside the timing, as the asyncpg connection is
        rd = await timed(client.ping)
    finally:
        await client.aclose()
    return {"asyncpg `SELECT 1` (bench process)": pg, "redis-py `PING` (bench process)": rd}


async def measure_side_by_side(
    env: Mapping[str, str], logs: Path, *, rounds: int, deadline: float
) -> SideBySide:
    """Start the three exporters against the shared servers and load them in rounds."""
    token = uuid.uuid4().hex[:8]
    ours_app, pgexp_app = f"bench-ours-{token}", f"bench-pgexp-{token}"
    redis_url = env["REDIS_URL"]
    redis_addr = f"redis://{urlsplit(redis_url).netloc}"
    ports = {name: free_port() for name in (OURS, PG_EXPORTER, REDIS_EXPORTER)}
    ours_env = {
        "TIMESCALEDB_URL": env["TIMESCALEDB_URL"],
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": env["KAFKA_BOOTSTRAP_SERVERS"],
        "TIMESCALE_APPLICATION_NAME": ours_app,
    }
    dsn = with_query(env["TIMESCALEDB_URL"], sslmode="disable", application_name=pgexp_app)
    async with AsyncExitStack() as stack:
        ours = await stack.enter_async_context(
            running(OURS, daemon_command(ports[OURS]), port=ports[OURS], env=ours_env, logs=logs)
        )
        pgexp = await stack.enter_async_context(
            running(
                PG_EXPORTER,
                [
                    "prometheus-postgres-exporter",
                    f"--web.listen-address=127.0.0.1:{ports[PG_EXPORTER]}",
                ],
                port=ports[PG_EXPORTER],
                env={"DATA_SOURCE_NAME": dsn},
                logs=logs,
            )
        )
        rexp = await stack.enter_async_context(
            running(
                REDIS_EXPORTER,
                [
                    "prometheus-redis-exporter",
                    *("-web.listen-address", f"127.0.0.1:{ports[REDIS_EXPORTER]}"),
                    *("-redis.addr", redis_addr),
                ],
                port=ports[REDIS_EXPORTER],
                env={},
                logs=logs,
            )
        )
        await asyncio.gather(
            ours.wait_http("/-/ready", timeout=60),
            pgexp.wait_http("/metrics", timeout=30),
            rexp.wait_http("/metrics", timeout=30),
        )
        admin = await asyncpg.connect(env["TIMESCALE_ADMIN_URL"], timeout=10)
        stack.push_async_callback(admin.close)

        def backends(app: str) -> Callable[[], Awaitable[list[int]]]:
            async def pids() -> list[int]:
                rows = await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
                )
                return [int(row["pid"]) for row in rows]

            return pids

        endpoints = [
            Endpoint(f"{OURS} /metrics", f"{ours.base_url}/metrics", ours.pid, backends(ours_app)),
            Endpoint(f"{OURS} /-/healthy", f"{ours.base_url}/-/healthy", ours.pid),
            Endpoint(f"{REDIS_EXPORTER} /metrics", f"{rexp.base_url}/metrics", rexp.pid),
            Endpoint(f"{REDIS_EXPORTER} /health", f"{rexp.base_url}/health", rexp.pid),
            Endpoint(
                f"{PG_EXPORTER} /metrics",
                f"{pgexp.base_url}/metrics",
                pgexp.pid,
                backends(pgexp_app),
            ),
        ]
        probe_endpoints = [
            Endpoint(f"{OURS} /probe", f"{ours.base_url}/probe?target=local", ours.pid),
            Endpoint(
                f"{REDIS_EXPORTER} /scrape",
                f"{rexp.base_url}/scrape?target={redis_addr}",
                rexp.pid,
            ),
        ]
        async with new_session() as session:
            scrapes = await interleaved(
                session,
                endpoints,
                rounds=rounds,
                seq_count=SEQ_COUNT,
                per_client=PER_CLIENT,
                deadline=deadline,
            )
            # Sequential only: concurrent /probe calls of one target share one run by design.
            probes = await interleaved(
                session,
                probe_endpoints,
                rounds=rounds,
                seq_count=40,
                per_client=0,
                deadline=deadline,
            )
            async with session.get(probe_endpoints[0].url) as response:
                body = await response.text()
            series = {}
            for name, process in ((OURS, ours), (PG_EXPORTER, pgexp), (REDIS_EXPORTER, rexp)):
                async with session.get(process.base_url + "/metrics") as response:
                    series[name] = count_series(await response.text())
        checks = len(sample_values(body, "ingest_check_up"))
        rss = {OURS: rss_bytes(ours.pid), PG_EXPORTER: rss_bytes(pgexp.pid)}
        rss[REDIS_EXPORTER] = rss_bytes(rexp.pid)
        raw = await _raw_round_trips(env)
    return SideBySide(scrapes, probes, rss, checks, raw, series)
