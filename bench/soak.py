"""Soak: the daemon at a 1 s probe interval for 30 minutes with a fault every 30 s.

Run: ``make soak`` (or ``. .services/env && .venv/bin/python -m bench.soak [--duration S]
[--warmup S]``). Needs the local stack (``make services``) and its Kafka jars: Timescale and
Redis are the shared ones behind fault proxies (a fault never touches them), Kafka is a
private broker that advertises its proxy, so every byte of every client crosses it. The
daemon runs in this process (its asyncio tasks can be counted); the proxies' own sockets and
tasks are left out of the figures.

Every 30 s one fault starts and lasts 10 s, in turn on each service: black hole, refused
connections, slowed past the timeout, flapping. A producer sends 10 events a second to the
ingest topic the bridge consumes (past the proxy), and /metrics is scraped every second.
Every 10 s a sample: RSS, fds, tasks, server connections per service. The verdict: RSS
growth after the warm-up below 5 % and every scrape answered; the ranges of fds, tasks and
connections over the steady samples (none during a fault or right after one) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from exporter.config import build_institutional_ingest_config
from exporter.daemon import Daemon
from exporter.telemetry.logs import configure_logging
from tests.integration.fault_matrix import steady
from tests.integration.fault_proxy import FaultProxy
from tests.integration.proxied_kafka import ProxiedKafka

INTERVAL, TIMEOUT = 1.0, 0.8
FAULT_EVERY, FAULT_FOR, SAMPLE_EVERY = 30.0, 10.0, 10.0
MAX_RSS_GROWTH = 0.05
_FAULTS = ("blackhole", "refuse", "slow", "flap")


@dataclass(frozen=True)
class Sample:
    """One sample of the daemon's resources."""

    t: float
    rss_mib: float
    fds: int
    tasks: int
    connections: dict[str, int]
    fault: str


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _fault(proxy: FaultProxy, kind: str, seconds: float) -> None:
    """Hold one fault on ``proxy`` for ``seconds``, then pass again."""
    end = time.monotonic() + seconds
    if kind == "flap":
        while time.monotonic() < end:
            await proxy.set_mode("refuse")
            await asyncio.sleep(0.7)
            await proxy.set_mode("pass")
            await asyncio.sleep(0.7)
    else:
        await proxy.set_mode(kind, delay=2 * TIMEOUT)  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
    await proxy.set_mode("pass")


async def _produce(broker: ProxiedKafka, topic: str, stop: asyncio.Event) -> int:
    """Send 10 ingest events a second until ``stop``; return how many were acknowledged.

    Through the broker's SASL listener, which is not proxied: the producer's connections
    stay out of the daemon's server-side count and out of the faults.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=f"127.0.0.1:{broker.sasl_port}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username=ProxiedKafka.SASL_USER,
        sasl_plain_password=ProxiedKafka.SASL_PASSWORD,
        request_timeout_ms=5000,
    )
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            event = {"ts": time.time(), "seq": sent}
            with contextlib.suppress(Exception):  # a Kafka fault: the event is just not sent
                await asyncio.wait_for(producer.send_and_wait(topic, json.dumps(event).encode()), 2)
                sent += 1
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return sent


async def _scrape(
    url: str, stop: asyncio.Event, latencies: list[float], failures: list[int]
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        failures.append(response.status)
            except aiohttp.ClientError:
                failures.append(0)
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(1.0)


async def soak(duration: float, warmup: float) -> bool:
    """Run the soak; print the samples and the verdict; return whether it passed."""
    # The daemon's own log lines (faults are warnings) go to stderr; the figures to stdout.
    configure_logging(level="warning", fmt="json")
    env = {k: os.environ[k] for k in ("TIMESCALEDB_URL", "REDIS_URL") if k in os.environ}
    if len(env) < 2 or "INGEST_KAFKA_JARS" not in os.environ:
        sys.exit("soak: source .services/env first (make services)")
    pg = urlsplit(env["TIMESCALEDB_URL"])
    redis = urlsplit(env["REDIS_URL"])
    proxies = {
        "timescale": FaultProxy(pg.port or 5432),
        "redis": FaultProxy(redis.port or 6379),
    }
    broker = ProxiedKafka()
    proxies["kafka"] = broker.proxy
    for proxy in proxies.values():
        await proxy.start()
    topic = f"soak-{uuid.uuid4().hex[:8]}"
    await broker.start()
    stop = asyncio.Event()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 2, 1)])
        await admin.close()
        settings = build_institutional_ingest_config(
            environ={
                "TIMESCALEDB_URL": _via(env["TIMESCALEDB_URL"], proxies["timescale"].port),
                "REDIS_URL": _via(env["REDIS_URL"], proxies["redis"].port),
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{proxies['kafka'].port}",
                "INGEST_DIMENSIONS": "ticks",
                "KAFKA_INGEST_TOPICS": f"ticks:{topic}",
                "KAFKA_MANIFEST_TOPIC": f"{topic}.manifest",
                "INGEST_PROBE_INTERVAL_SECONDS": str(INTERVAL),
                "INGEST_PROBE_TIMEOUT_SECONDS": str(TIMEOUT),
                "INGEST_WEB_LISTEN_ADDRESS": "127.0.0.1:0",
            }
        )
        daemon = Daemon(settings)
        await daemon.start()
        latencies: list[float] = []
        failures: list[int] = []
        producing = asyncio.create_task(_produce(broker, topic, stop))
        scraping = asyncio.create_task(
            _scrape(f"http://127.0.0.1:{daemon.port}/metrics", stop, latencies, failures)
        )
        samples: list[Sample] = []
        faults: list[asyncio.Task[None]] = []
        t0 = time.monotonic()
        next_fault, next_sample, turn = FAULT_EVERY, 0.0, 0
        current, ended_at = "-", 0.0
        try:
            while (now := time.monotonic() - t0) < duration:
                if now >= next_fault:
                    service = ("timescale", "redis", "kafka")[turn % 3]
                    kind = _FAULTS[(turn // 3) % len(_FAULTS)]
                    current = f"{service} {kind}"
                    faults.append(asyncio.create_task(_fault(proxies[service], kind, FAULT_FOR)))
                    ended_at = now + FAULT_FOR
                    next_fault += FAULT_EVERY
                    turn += 1
                if now >= next_sample:
                    # A sample within one sample period of a fault's end is "after" it: the
                    # daemon may still be reconnecting, so its figures are not steady ones.
                    active = "-"
                    if faults and not faults[-1].done():
                        active = current
                    elif faults and now - ended_at < SAMPLE_EVERY:
                        active = f"after {current}"
                    state = steady(list(proxies.values()))
                    conns = {name: p.upstream for name, p in proxies.items()}
                    sample = Sample(round(now), _rss_mib(), state.fds, state.tasks, conns, active)
                    samples.append(sample)
                    print(
                        f"t={sample.t:5.0f}s rss={sample.rss_mib:7.1f}MiB fds={sample.fds:3d} "
                        f"tasks={sample.tasks:3d} conns={conns} fault={active}",
                        flush=True,
                    )
                    next_sample += SAMPLE_EVERY
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.gather(*faults, return_exceptions=True)
            sent = await producing
            await scraping
            await daemon.stop()
    finally:
        for proxy in proxies.values():
            await proxy.close()
        await broker.stop(grace=10)
        broker.close()
    return _verdict(samples, warmup, latencies, failures, sent)


def _verdict(
    samples: list[Sample], warmup: float, latencies: list[float], failures: list[int], sent: int
) -> bool:
    settled = [s for s in samples if s.t >= warmup]
    base = settled[0]
    rss_growth = (settled[-1].rss_mib - base.rss_mib) / base.rss_mib
    peak_growth = (max(s.rss_mib for s in settled) - base.rss_mib) / base.rss_mib
    # Steady: neither during a fault nor within a sample period after one.
    quiet = [s for s in settled if s.fault == "-"]
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)] * 1000 if ordered else 0.0
    print()
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| duration / warm-up | {samples[-1].t:.0f} s / {warmup:.0f} s |")
    print(
        f"| RSS after warm-up -> end (peak) | {base.rss_mib:.1f} -> {settled[-1].rss_mib:.1f} MiB "
        f"({rss_growth:+.1%}; peak {peak_growth:+.1%}) |"
    )
    print(
        f"| fds after warm-up (min-max, steady samples) | "
        f"{min(s.fds for s in quiet)}-{max(s.fds for s in quiet)} |"
    )
    print(
        f"| tasks after warm-up (min-max, steady samples) | "
        f"{min(s.tasks for s in quiet)}-{max(s.tasks for s in quiet)} |"
    )
    for name in samples[0].connections:
        values = [s.connections[name] for s in quiet]
        print(
            f"| {name} server connections (min-max, steady samples) | {min(values)}-{max(values)} |"
        )
    print(
        f"| /metrics scrapes, failed, p99, median | {len(latencies)}, {len(failures)}, "
        f"{p99:.1f} ms, {statistics.median(latencies) * 1000:.1f} ms |"
    )
    print(f"| events produced (acknowledged) | {sent} |")
    passed = rss_growth < MAX_RSS_GROWTH and not failures
    print(
        f"\nverdict: {'PASS' if passed else 'FAIL'} (RSS growth after warm-up must stay below "
        f"{MAX_RSS_GROWTH:.0%}; every scrape must answer)"
    )
    return passed


def main() -> None:
    """Parse the arguments and run the soak; exit 1 when the verdict fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (30 min)")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before judging")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(soak(args.duration, args.warmup)) else 1)


if __name__ == "__main__":
    main()
