"""Benchmark: the status page ``/`` with 10 deployments, served over loopback HTTP.

Run: .venv/bin/python -m bench.status_page
Builds a daemon-sized snapshot (10 deployments x 3 connectors, 14 checks each, a full probe
history of 100 cycles per deployment with log lines, 40 supervised tasks, 50 kept drills, the
real manifests)
and times ``GET /`` end to end through aiohttp (no service needed), plus the render alone.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from aiohttp import test_utils
from prometheus_client import CollectorRegistry

from exporter.config import build_institutional_ingest_config
from exporter.drills.recent import RecentDrills
from exporter.drills.record import DrillResult, Measured, RpoReading, Timestamps
from exporter.drills.report import FailoverDrillSnapshot
from exporter.manifest import build_manifest, connector_infos
from exporter.probes.base import ConnectivityReport, Measurement, ProbeResult, Status
from exporter.reasons import Reason
from exporter.state import ExporterState
from exporter.supervisor import TaskInfo, TaskState
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer
from exporter.telemetry.status_page import render_status
from exporter.telemetry.web import WebApp, build_app

DEPLOYMENTS = 10
CYCLES = 100
RUNS = 1_000
CHECKS = {
    "timescale": ("connect", "recovery", "replication", "connections", "extension", "jobs", "dim"),
    "redis": ("ping", "role", "memory", "cache_keys"),
    "kafka": ("metadata", "topics", "consumer_lag"),
}


def _report(deployment: str, at: float, *, failed: bool) -> ConnectivityReport:
    results = tuple(
        ProbeResult(
            connector=connector,
            check=check,
            status=Status.DOWN if failed and connector == "redis" else Status.OK,
            reason=Reason.REFUSED if failed and connector == "redis" else None,
            latency_seconds=0.002 + 0.0001 * i,
            detail="ConnectionError: Error 111 connecting to 10.0.0.7:6379." if failed else "ok",
            checked_at=at + 0.003,
            measurements=(Measurement("ingest_kafka_brokers", 3.0),) if check == "metadata" else (),
        )
        for connector, checks in CHECKS.items()
        for i, check in enumerate(checks)
    )
    return ConnectivityReport(
        deployment, at, 0.01, results, trace_id="ab" * 16, connectors=tuple(CHECKS)
    )


def _log_lines(report: ConnectivityReport) -> list[dict[str, Any]]:
    return [
        {
            "event": "probe_completed",
            "level": "info",
            "timestamp": "2026-12-04T15:33:24.123456Z",
            "deployment": report.deployment,
            "connector": r.connector,
            "check": r.check,
            "status": r.status.value,
            "duration_seconds": r.latency_seconds,
            "trace_id": report.trace_id,
        }
        for r in report.results
    ]


def _drills(start: float) -> RecentDrills:
    """Return 50 kept drills (every fifth failed an objective), as the daemon's refresh keeps."""
    drills = RecentDrills(enabled=True)
    for i in range(50):
        failed = i % 5 == 0
        drills.observe(
            FailoverDrillSnapshot(
                drill_id=f"20261204T{i:06d}Z-{i:08x}",
                label="q4-dr",
                deployment=f"dep{i % DEPLOYMENTS}",
                scenario="kill",
                initiator="schedule",
                dimensions=["trades"],
                settings={"objectives": {"rto_seconds": 30.0, "lost_writes": 0}},
                result=DrillResult.FAIL if failed else DrillResult.OK,
                failed_objectives=["rto 41.2s > objective 30s"] if failed else [],
                duration_seconds=60.0,
                timestamps=Timestamps(started=start + i * 600),
                measured=Measured(rto_seconds=41.2 if failed else 12.0, rpo=RpoReading()),
            )
        )
    return drills


def build() -> WebApp:
    """Return the web handlers over a full, daemon-sized snapshot."""
    names = [f"dep{d}" for d in range(DEPLOYMENTS)]
    settings = build_institutional_ingest_config(
        environ={}, overrides={"deployments": [{"name": n} for n in names]}
    )
    state = ExporterState()
    state.set_connectors(connector_infos(settings))
    start = time.time() - CYCLES * 15
    for cycle in range(CYCLES):
        for name in names:
            report = _report(name, start + cycle * 15, failed=cycle % 17 == 0)
            state.record(report, _log_lines(report))
    tasks = [
        TaskInfo(f"{job}:{name}", TaskState.RUNNING, ready=True, started_at=start)
        for name in names
        for job in ("probe-loop", "kafka-bridge", "cache", "manifest")
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(state))
    return WebApp(
        state,
        MetricsRenderer(registry, state),
        # Like the daemon: the manifests are built on each request, not cached.
        manifests=lambda: [
            build_manifest(settings, d).model_dump(mode="json") for d in settings.deployments
        ],
        tasks=lambda: tasks,
        refresh_seconds=15.0,
        drills=_drills(start),
    )


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _measure(fn: Callable[[], object]) -> tuple[float, float]:
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return _percentiles(samples)


async def _http(handlers: WebApp) -> tuple[float, float, int]:
    samples = []
    async with test_utils.TestClient(test_utils.TestServer(build_app(handlers))) as client:
        size = len(await (await client.get("/")).read())
        for _ in range(RUNS):
            t0 = time.perf_counter()
            async with client.get("/") as response:
                assert response.status == 200
                await response.read()
            samples.append((time.perf_counter() - t0) * 1000)
    median, p99 = _percentiles(samples)
    return median, p99, size


def main() -> None:
    """Measure and print the render alone and ``GET /`` over HTTP."""
    handlers = build()
    view = handlers.pages.view
    render = _measure(lambda: render_status(view.status(), refresh=15))
    median, p99, size = asyncio.run(_http(handlers))
    print(f"deployments: {DEPLOYMENTS}, page size: {size / 1024:.0f} KiB, runs: {RUNS}")
    print(f"view + render:    median {render[0]:.2f} ms, p99 {render[1]:.2f} ms")
    print(f"GET / over HTTP:  median {median:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
