"""The in-memory snapshot: probes and tasks write it, the metrics collector only reads it."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import Metric

from exporter.history import ProbeHistory
from exporter.probes.base import ConnectivityReport
from exporter.telemetry.cycle_log import LogLine

__all__ = [
    "DURATION_BUCKETS",
    "ConnectorInfo",
    "DurationHistogram",
    "ExporterState",
    "MetricSource",
]

# Probe latencies on loopback are ~1 ms; a black-holed dependency takes the whole timeout.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    """What the collector publishes as ``ingest_connector_info`` (endpoint already redacted)."""

    deployment: str
    connector: str
    kind: str
    endpoint: str


@dataclass(slots=True)
class DurationHistogram:
    """Cumulative probe-duration histogram with the newest exemplar per bucket."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    # bucket index -> (trace_id, value, timestamp)
    exemplars: dict[int, tuple[str, float, float]] = field(default_factory=dict)

    def observe(self, value: float, trace_id: str | None, stamp: float) -> None:
        """Count one observation."""
        index = bisect.bisect_left(DURATION_BUCKETS, value)
        self.counts[index] += 1
        self.total += value
        if trace_id:
            self.exemplars[index] = (trace_id, value, stamp)


class MetricSource(Protocol):
    """Something in memory that publishes metric families (bridge, cache, drills).

    A source must not do I/O in :meth:`metric_families` and must call
    :meth:`ExporterState.touch` whenever what it would publish changes.
    """

    def metric_families(self) -> Iterable[Metric]:
        """Yield the source's metric families from memory."""
        ...


class ExporterState:
    """Hold the latest probe reports and cumulative counters; bump ``version`` on change.

    Writers run on the event loop; the lock only guards against a rendering thread reading
    the counters while they change.
    """

    def __init__(self, history: ProbeHistory | None = None) -> None:
        self.version = 0
        # Recent cycles for the status page; not part of the metrics.
        self.history = history or ProbeHistory()
        self.started_at = time.time()
        self.reports: dict[str, ConnectivityReport] = {}
        self.failures: Counter[tuple[str, str, str]] = Counter()
        self.cycles: Counter[str] = Counter()
        self.durations: dict[tuple[str, str], DurationHistogram] = {}
        self.connectors: tuple[ConnectorInfo, ...] = ()
        self.failover: Mapping[str, Any] | None = None
        self.sources: list[MetricSource] = []
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Tell whether every known deployment finished at least one probe cycle."""
        names = {info.deployment for info in self.connectors}
        return bool(self.reports) and names <= set(self.reports)

    def touch(self) -> None:
        """Mark the snapshot changed."""
        with self._lock:
            self.version += 1

    def add_source(self, source: MetricSource) -> None:
        """Publish ``source``'s families on every scrape."""
        self.sources.append(source)
        self.touch()

    def set_connectors(self, connectors: tuple[ConnectorInfo, ...]) -> None:
        """Record the configured connectors (static for the process's life)."""
        self.connectors = connectors
        self.touch()

    def set_failover(self, metadata: Mapping[str, Any] | None) -> None:
        """Record the failover-drill metadata (``None`` when drills are off)."""
        self.failover = metadata
        self.touch()

    def record(
        self, report: ConnectivityReport, log_lines: Sequence[LogLine] = (), *, dropped: int = 0
    ) -> None:
        """Store a finished probe cycle (and the log lines it produced) and count it."""
        self.history.add(report, log_lines, dropped=dropped)
        deployment = report.deployment
        with self._lock:
            self.reports[deployment] = report
            self.cycles[deployment] += 1
            for result in report.results:
                if result.reason is not None:
                    key = (deployment, result.connector, result.reason.value)
                    self.failures[key] += 1
            for connector, results in report.by_connector().items():
                if not results:
                    continue
                histogram = self.durations.setdefault((deployment, connector), DurationHistogram())
                slowest = max(r.latency_seconds for r in results)
                histogram.observe(slowest, report.trace_id, max(r.checked_at for r in results))
        self.touch()
