"""Run the whole benchmark within a time budget and write bench/results/DATE.md.

Run: ``make bench``, or with the stack already up: ``. .services/env && .venv/bin/python -m
bench.suite [--note TEXT]``. Needs the local stack (``make services``), the Debian packages
``prometheus-postgres-exporter`` and ``prometheus-redis-exporter`` (``scripts/bench-tools.sh``)
and root (the fleet copies the local PostgreSQL into a private cluster run as ``postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import aiokafka
import asyncpg
import redis
import redis.asyncio as aioredis

from bench import fleet
from bench.fleet import INTERVAL, FleetRow, measure_fleet, render_fleet
from bench.kafka_bridge import BridgeThroughput, measure_bridge
from bench.report import Document, render_table
from bench.servers import fleet_servers
from bench.side_by_side import PER_CLIENT, SEQ_COUNT, measure_side_by_side
from bench.targets import verdicts
from exporter import __version__
from exporter.telemetry.logs import configure_logging

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET = 570.0  # seconds: make bench must end within ten minutes, installs included
FLEET_SIZES = (10, 100)
THOUSAND = 1_000
#: Seconds the 1,000-deployment run needs at least (start, ready bound, windows, stop).
THOUSAND_NEEDS = 230.0
REQUIRED = ("TIMESCALEDB_URL", "TIMESCALE_ADMIN_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")


def _version(argv: list[str]) -> str:
    """Return the first version number a ``--version`` command prints."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    found = re.search(r"\d+\.\d+\.\d+[^\s,\"]*", done.stdout + done.stderr)
    return found.group(0) if found else "unknown"


def _machine() -> str:
    """Return the CPU model, core count and memory of this machine."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().split()[1]
    return (
        f"{os.cpu_count()} cores ({model}), {int(memory) / 2**20:.0f} GiB, "
        f"Linux {platform.release()}"
    )


async def _versions(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return the version of every program measured or measured against."""
    conn = await asyncpg.connect(env["TIMESCALE_ADMIN_URL"], timeout=10)
    try:
        postgres = await conn.fetchval("SHOW server_version")
        timescale = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        )
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(env["REDIS_URL"])
    try:
        redis_version = (await client.info("server"))["redis_version"]
    finally:
        await client.aclose()
    return [
        ("ingest-exporter", __version__),
        ("postgres_exporter", _version(["prometheus-postgres-exporter", "--version"])),
        ("redis_exporter", _version(["prometheus-redis-exporter", "--version"])),
        ("PostgreSQL", f"{postgres} (TimescaleDB {timescale or 'absent'})"),
        ("Redis", str(redis_version)),
        ("Kafka", env.get("INGEST_KAFKA_VERSION", "unknown")),
        ("Python", platform.python_version()),
        (
            "asyncpg / redis-py / aiokafka",
            f"{asyncpg.__version__} / {redis.__version__} / {aiokafka.__version__}",
        ),
    ]


async def _fleet(
    env: Mapping[str, str], folder: Path, deadline: float
) -> tuple[list[FleetRow], str]:
    """Measure every fleet size that fits the budget; return the rows and why 1,000 was skipped."""
    rows: list[FleetRow] = []
    skipped = ""
    async with fleet_servers(
        env["TIMESCALE_ADMIN_URL"], env["TIMESCALEDB_URL"], env["INGEST_REDIS_SERVER"]
    ) as servers:
        for size in FLEET_SIZES:
            rows.append(
                await measure_fleet(servers, size, folder, ready_timeout=60, load_seconds=30)
            )
            print(f"bench: fleet N={size} done", flush=True)
        remaining = deadline - time.monotonic()
        if remaining >= THOUSAND_NEEDS:
            ready = min(150.0, remaining - 80.0)
            rows.append(
                await measure_fleet(servers, THOUSAND, folder, ready_timeout=ready, load_seconds=60)
            )
        else:
            skipped = (
                f"{remaining:.0f} s of the budget were left and the run needs "
                f"{THOUSAND_NEEDS:.0f} s"
            )
    return rows, skipped


async def run(note: str) -> Path:
    """Run every part in order within the budget and write the dated result file."""
    env = dict(os.environ)
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} not set: source .services/env")
    # The in-process bridge logs each start and stop; the report is what matters here.
    configure_logging(level="warning", fmt="console")
    started = time.monotonic()
    deadline = started + BUDGET
    today = dt.datetime.now(dt.UTC).date().isoformat()
    load_before = os.getloadavg()
    versions = await _versions(env)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        folder = Path(tmp)
        one = await measure_side_by_side(
            env, folder, rounds=6, deadline=min(deadline, time.monotonic() + 150)
        )
        print("bench: one deployment done", flush=True)
        bridge: BridgeThroughput | None = await measure_bridge(
            env["KAFKA_BOOTSTRAP_SERVERS"],
            events=100_000,
            rounds=3,
            deadline=min(deadline, time.monotonic() + 90),
        )
        print("bench: kafka bridge done", flush=True)
        rows, skipped = await _fleet(env, folder, deadline)
    elapsed = time.monotonic() - started
    doc = Document(f"`make bench`, {today}")
    doc.preamble += [
        f"Machine: {_machine()}. Load average {load_before[0]:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end; the run took {elapsed:.0f} s.",
        *([f"\n{note}"] if note else []),
    ]
    doc.section("Versions", render_table(["program", "version"], versions))
    doc.section(
        "One deployment, three exporters (shared local servers)",
        f"Interleaved rounds (shuffled order each round): {SEQ_COUNT} sequential requests, then "
        f"8 concurrent clients x {PER_CLIENT}, keep-alive, `Accept-Encoding: gzip`; each step "
        "bounded in time. CPU from "
        "`/proc/<pid>/stat` of the serving process; PG CPU is that of the exporter's own "
        "PostgreSQL backends (found by `application_name`) while it was scraped (Redis 7.0 "
        "cannot attribute CPU to one client). Series: "
        + ", ".join(f"{name} {count:,}" for name, count in one.series.items())
        + ".\n\n"
        + one.render(),
    )
    doc.section(
        f"Fleet: one daemon, N deployments (probe interval {INTERVAL:.0f} s)",
        "All deployments on one private PostgreSQL, Redis and Kafka (copies of the local "
        "stack's, so other users' connections neither blur the counts nor run out). CPU per "
        "check (the daemon's CPU over the checks it completed) and the effective period come "
        f"from a quiet window of two intervals; the load is {fleet.ROUNDS} interleaved rounds "
        f"of {fleet.SEQ_COUNT} sequential and 8 x {fleet.PER_CLIENT} concurrent requests, "
        "bounded in time. Sessions and connections opened count from before the start to "
        "after the stop; check timeouts count checks whose reason was `timeout` since start."
        + (f"\n\nN = 1,000 skipped: {skipped}." if skipped else "")
        + "\n\n"
        + render_fleet(rows, 150),
    )
    if bridge is not None:
        doc.section(
            "Kafka ingest bridge",
            f"{bridge.events:,} small JSON events on a 3-partition topic of the bench's own, "
            "read whole by each consumer in its own group per round (rate from the first "
            "event to the last, so group joins do not count; both decode JSON).\n\n"
            + bridge.render(),
        )
    doc.verdicts = verdicts(one, rows, bridge, skipped_thousand=skipped)
    path = doc.write(RESULTS / f"{today}.md")
    print(doc.render())
    return path


def main() -> None:
    """Parse the arguments and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--note", default="", help="a line about the run (e.g. a shared machine)")
    args = parser.parse_args()
    path = asyncio.run(run(args.note))
    print(f"bench: wrote {path}")


if __name__ == "__main__":
    main()
