"""Benchmark: /metrics rendering with ~1,000 series, rendered per scrape vs served from cache.

Run: .venv/bin/python -m bench.metrics_render
Prints the median and p99 of each variant in milliseconds (no service needed).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from exporter.probes.base import ConnectivityReport, Measurement, ProbeResult, Status
from exporter.state import ExporterState
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer

RUNS = 500


def _state(deployments: int = 10, checks: int = 20) -> ExporterState:
    """Return a snapshot of ``deployments`` x 3 connectors x ``checks`` checks (~1,000 series)."""
    state = ExporterState()
    for d in range(deployments):
        results = tuple(
            ProbeResult(
                connector=connector,
                check=f"check{c}",
                status=Status.OK,
                reason=None,
                latency_seconds=0.002,
                detail="",
                checked_at=time.time(),
                # One sample per deployment: a repeat would be a duplicate series.
                measurements=(Measurement("ingest_kafka_brokers", 3.0),) if first else (),
            )
            for connector in ("timescale", "redis", "kafka")
            for c in range(checks)
            for first in [connector == "kafka" and c == 0]
        )
        state.record(ConnectivityReport(f"dep{d}", time.time(), 0.01, results, trace_id="ab" * 16))
    return state


def _measure(fn: Callable[[], object]) -> tuple[float, float]:
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    """Measure and print both variants."""
    state = _state()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(state))
    renderer = MetricsRenderer(registry, state)
    series = generate_latest(registry).decode().count("\n")
    every = _measure(lambda: generate_latest(registry))
    renderer.render(None)
    cached = _measure(lambda: renderer.render(None))
    print(f"exposition lines: {series}")
    print(f"render on every scrape: median {every[0]:.3f} ms, p99 {every[1]:.3f} ms")
    print(f"cached bytes:           median {cached[0]:.4f} ms, p99 {cached[1]:.4f} ms")


if __name__ == "__main__":
    main()
