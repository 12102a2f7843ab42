"""The Prometheus collector over the snapshot, and exposition rendered once per change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from exporter import __version__
from exporter.errors import UndeclaredMetricError
from exporter.metricspec import REFRESHED as _REFRESH
from exporter.metricspec import MetricSpec, family
from exporter.metricspec import spec as _spec
from exporter.probes.base import Status
from exporter.probes.kafka import METRIC_SPECS as KAFKA_SPECS
from exporter.probes.redis import METRIC_SPECS as REDIS_SPECS
from exporter.probes.timescale import METRIC_SPECS as TIMESCALE_SPECS
from exporter.reasons import Reason
from exporter.state import DURATION_BUCKETS, ExporterState
from exporter.telemetry._exposition import negotiate

__all__ = [
    "EXPOSED_NAMES",
    "MEASUREMENTS",
    "METRICS",
    "IngestCollector",
    "MetricSpec",
    "MetricsRenderer",
    "runtime_registry",
]

_log = structlog.get_logger(__name__)

#: Undeclared measurement names already warned about (process-wide: /probe builds a collector
#: per request). Capped: names come from probe code, but an operator probe could mint them.
_WARNED: set[str] = set()
_MAX_WARNED = 256

METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _spec("ingest_exporter_build", "info", "version", "Exporter version (constant 1)."),
        _spec(
            "ingest_connector_up",
            "gauge",
            "deployment connector",
            f"1 when no check of the connector was down in the last probe cycle and one was ok. "
            f"{_REFRESH}",
        ),
        _spec(
            "ingest_connector",
            "info",
            "deployment connector kind endpoint",
            "Configured connectors; the endpoint has every credential masked.",
        ),
        _spec(
            "ingest_check_up",
            "gauge",
            "deployment connector check",
            f"1 when the check's status was ok in the last probe cycle. {_REFRESH}",
        ),
        _spec(
            "ingest_check_status",
            "gauge",
            "deployment connector check status",
            f"State set of the check's status in the last probe cycle: one series per status "
            f"(ok, degraded, down, unknown), exactly one at 1. A check that could not run "
            f"(its connector down) is present as unknown. {_REFRESH}",
        ),
        _spec(
            "ingest_check_reason",
            "gauge",
            "deployment connector check reason",
            f"The check's bounded failure reason in the last probe cycle (timeout, refused, "
            f'auth, ...) at 1; reason="none" when it has none. {_REFRESH}',
        ),
        _spec(
            "ingest_probe_duration_seconds",
            "histogram",
            "deployment connector",
            "Latency of the connector's slowest check in each probe cycle, with the cycle's "
            "trace id as exemplar (OpenMetrics).",
        ),
        _spec(
            "ingest_probe_last_run_timestamp_seconds",
            "gauge",
            "deployment connector",
            "Unix time the connector was last probed.",
        ),
        _spec(
            "ingest_probe_failures",
            "counter",
            "deployment connector reason",
            "Checks that reported a failure reason (down, degraded or unknown) since start, by "
            "bounded reason (timeout, refused, auth, ...).",
        ),
        _spec(
            "ingest_probe_cycles",
            "counter",
            "deployment",
            "Probe cycles completed since start.",
        ),
        _spec(
            "ingest_probe_cycle_duration_seconds",
            "gauge",
            "deployment",
            f"Wall time of the last probe cycle (all probes run concurrently). {_REFRESH}",
        ),
        _spec(
            "ingest_supervisor_task_up",
            "gauge",
            "task",
            "1 while the supervised background task is running; 0 in backoff, failed or ended.",
        ),
        _spec(
            "ingest_supervisor_task_restarts",
            "counter",
            "task",
            "Restarts of the supervised background task since start.",
        ),
        _spec(
            "ingest_failover_drill_enabled",
            "gauge",
            "",
            "1 when failover drills are enabled in the configuration.",
        ),
        _spec(
            "ingest_failover_drill_dimension_required",
            "gauge",
            "label dimension",
            "1 for each Timescale dimension that must take part in failover drills.",
        ),
    )
}

# Measurements probes report, published as gauges under the measurement's name.
MEASUREMENTS: dict[str, MetricSpec] = {
    spec.name: spec for group in (TIMESCALE_SPECS, REDIS_SPECS, KAFKA_SPECS) for spec in group
}


#: Measurement name -> the sample name a scrape shows (``_total`` on counters): JSON reports
#: use these, so a name found there can be pasted into a PromQL query.
EXPOSED_NAMES: dict[str, str] = {name: spec.exposed_name for name, spec in MEASUREMENTS.items()}


class IngestCollector(Collector):
    """Turn the snapshot into metric families; no I/O and no awaits on scrape.

    A measurement whose name no spec declares is not published. By default it is logged
    once per name (``measurement_undeclared``); a ``strict`` collector raises instead, which
    the test suite turns on for every collector (``IngestCollector.strict = True``).
    """

    #: The default of the ``strict`` argument.
    strict: ClassVar[bool] = False

    def __init__(
        self,
        state: ExporterState,
        *,
        tasks: Callable[[], Iterable[Any]] = tuple,
        strict: bool | None = None,
    ) -> None:
        self._state = state
        self._tasks = tasks
        self._strict = type(self).strict if strict is None else strict

    def describe(self) -> Iterable[Metric]:
        """Return nothing: the families depend on the snapshot, so none are pre-declared."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every family from the current snapshot.

        Raises:
            UndeclaredMetricError: A strict collector met a measurement without a spec.
        """
        state = self._state
        info = self._family("ingest_exporter_build")
        info.add_metric([__version__], {})
        yield info
        yield from self._connectors()
        yield from self._probes()
        yield from self._supervisor()
        yield from self._failover()
        for source in state.sources:
            yield from source.metric_families()

    def _family(self, name: str) -> Any:
        return family(METRICS.get(name) or MEASUREMENTS[name])

    def _undeclared(self, name: str) -> None:
        if self._strict:
            raise UndeclaredMetricError(name)
        if name not in _WARNED and len(_WARNED) < _MAX_WARNED:
            _WARNED.add(name)
            _log.warning("measurement_undeclared", measurement=name)

    def _connectors(self) -> Iterator[Metric]:
        info = self._family("ingest_connector")
        for c in self._state.connectors:
            info.add_metric([c.deployment, c.connector, c.kind, c.endpoint], {})
        yield info

    def _probes(self) -> Iterator[Metric]:
        state = self._state
        up = self._family("ingest_connector_up")
        check_up = self._family("ingest_check_up")
        check_status = self._family("ingest_check_status")
        check_reason = self._family("ingest_check_reason")
        last_run = self._family("ingest_probe_last_run_timestamp_seconds")
        cycle = self._family("ingest_probe_cycle_duration_seconds")
        measured: dict[str, Any] = {}
        for deployment, report in sorted(state.reports.items()):
            cycle.add_metric([deployment], report.duration_seconds)
            for connector, results in report.by_connector().items():
                up.add_metric(
                    [deployment, connector], 1.0 if report.connector_up(connector) else 0.0
                )
                if results:
                    last_run.add_metric([deployment, connector], max(r.checked_at for r in results))
                for result in results:
                    where = [deployment, connector, result.check]
                    check_up.add_metric(where, 1.0 if result.ok else 0.0)
                    for status in Status:
                        check_status.add_metric(
                            [*where, status.value], 1.0 if result.status is status else 0.0
                        )
                    reason = result.reason.value if result.reason is not None else "none"
                    check_reason.add_metric([*where, reason], 1.0)
                    for m in result.measurements:
                        spec = MEASUREMENTS.get(m.name)
                        if spec is None:
                            self._undeclared(m.name)
                            continue
                        target = measured.get(m.name)
                        if target is None:
                            target = measured[m.name] = self._family(m.name)
                        extra = dict(m.labels)
                        target.add_metric(
                            [
                                deployment if n == "deployment" else extra.get(n, "")
                                for n in spec.labels
                            ],
                            m.value,
                        )
        yield from (up, check_up, check_status, check_reason, last_run, cycle)
        yield from measured.values()
        # Every known label value from the first scrape on, at 0 until it happens: increase()
        # and rate() then see the first failure instead of a series that appears with it.
        connectors = {(c.deployment, c.connector) for c in state.connectors}
        for deployment, report in state.reports.items():
            connectors.update((deployment, name) for name in report.by_connector())
        failures = self._family("ingest_probe_failures")
        counts = {(d, c, r.value): 0 for d, c in connectors for r in Reason}
        counts.update(state.failures)
        for (deployment, connector, reason), count in sorted(counts.items()):
            failures.add_metric([deployment, connector, reason], count)
        yield failures
        cycles = self._family("ingest_probe_cycles")
        per_deployment = dict.fromkeys((d for d, _ in connectors), 0) | dict(state.cycles)
        for deployment, count in sorted(per_deployment.items()):
            cycles.add_metric([deployment], count)
        yield cycles
        histogram = self._family("ingest_probe_duration_seconds")
        bounds = [*(str(b) for b in DURATION_BUCKETS), "+Inf"]
        for (deployment, connector), hist in sorted(state.durations.items()):
            buckets: list[Any] = []
            running = 0
            for index, bound in enumerate(bounds):
                running += hist.counts[index]
                exemplar = hist.exemplars.get(index)
                if exemplar is None:
                    buckets.append((bound, running))
                else:
                    trace_id, value, stamp = exemplar
                    buckets.append((bound, running, Exemplar({"trace_id": trace_id}, value, stamp)))
            histogram.add_metric([deployment, connector], buckets, hist.total)
        yield histogram

    def _supervisor(self) -> Iterator[Metric]:
        up = self._family("ingest_supervisor_task_up")
        restarts = self._family("ingest_supervisor_task_restarts")
        seen: set[str] = set()
        for task in self._tasks():
            if task.name in seen:
                continue
            seen.add(task.name)
            up.add_metric([task.name], 1.0 if task.up else 0.0)
            restarts.add_metric([task.name], task.restarts)
        yield up
        yield restarts

    def _failover(self) -> Iterator[Metric]:
        metadata = self._state.failover
        enabled = self._family("ingest_failover_drill_enabled")
        enabled.add_metric([], 1.0 if metadata else 0.0)
        yield enabled
        required = self._family("ingest_failover_drill_dimension_required")
        if metadata:
            for dimension in metadata.get("dimensions", ()):
                required.add_metric([str(metadata.get("label", "")), str(dimension)], 1.0)
        yield required


class MetricsRenderer:
    """Render each exposition format once per snapshot change and serve the cached bytes.

    Rendering ~1,000 series costs milliseconds of event-loop time; doing it only when the
    snapshot changed keeps ``/metrics`` cheap however often it is scraped. The ``live``
    registry (the process and Python runtime collectors: a few dozen samples) is rendered on
    every scrape and appended, so CPU time and memory are as of the scrape, not the cycle.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        state: ExporterState,
        *,
        live: CollectorRegistry | None = None,
    ) -> None:
        self._registry = registry
        self._state = state
        self._live = live
        self._cache: dict[str, tuple[int, bytes]] = {}

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """Return the exposition body and content type for an ``Accept`` header."""
        encoder, content_type = negotiate(accept)
        version = self._state.version
        cached = self._cache.get(content_type)
        if cached is not None and cached[0] == version:
            body = cached[1]
        else:
            body = encoder(self._registry)
            self._cache[content_type] = (version, body)
        if self._live is None:
            return body, content_type
        live = encoder(self._live)
        # OpenMetrics ends with one "# EOF": keep only the live part's.
        return body.removesuffix(_EOF) + live, content_type


_EOF = b"# EOF\n"


def runtime_registry() -> CollectorRegistry:
    """Return a registry of the process_* and python_* collectors (never the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
