"""The in-memory snapshot: readiness, cumulative counters, the duration histogram, versions."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.probes.base import ConnectivityReport, ProbeResult, Reason, Status
from exporter.state import DURATION_BUCKETS, ConnectorInfo, DurationHistogram, ExporterState

CONNECTORS = ("timescale", "redis", "kafka")


def _result(
    connector: str,
    check: str = "connect",
    *,
    reason: Reason | None = None,
    latency: float = 0.001,
    checked_at: float = 100.0,
) -> ProbeResult:
    status = Status.OK if reason is None else Status.DOWN
    return ProbeResult(connector, check, status, reason, latency, "", checked_at)


def _report(
    deployment: str, *results: ProbeResult, trace_id: str | None = None
) -> ConnectivityReport:
    return ConnectivityReport(
        deployment, 100.0, 0.01, results, trace_id=trace_id, connectors=CONNECTORS
    )


def _infos(*deployments: str) -> tuple[ConnectorInfo, ...]:
    return tuple(ConnectorInfo(d, c, c, f"{c}://host") for d in deployments for c in CONNECTORS)


def test_not_ready_until_every_known_deployment_reported() -> None:
    """Ready needs a finished cycle of every configured deployment, and at least one report."""
    state = ExporterState()
    assert not state.ready
    state.set_connectors(_infos("eu", "us"))
    state.record(_report("eu", _result("redis")))
    assert not state.ready
    state.record(_report("us", _result("redis", reason=Reason.REFUSED)))
    assert state.ready, "a failing cycle still counts: readiness is about having data"


def test_record_keeps_the_latest_report_and_counts_cycles_and_failures() -> None:
    """Each cycle replaces the report; cycles and failures (by reason) accumulate."""
    state = ExporterState()
    first = _report("eu", _result("redis", reason=Reason.TIMEOUT), _result("kafka"))
    second = _report(
        "eu",
        _result("redis", reason=Reason.TIMEOUT),
        _result("kafka", "metadata", reason=Reason.REFUSED),
        _result("kafka", "topics", reason=Reason.REFUSED),
    )
    state.record(first)
    state.record(second)
    assert state.reports == {"eu": second}
    assert state.cycles == {"eu": 2}
    assert state.failures == {
        ("eu", "redis", "timeout"): 2,
        ("eu", "kafka", "refused"): 2,
    }


def test_the_histogram_observes_each_connectors_slowest_check() -> None:
    """Per connector one observation per cycle: its slowest check, stamped by its newest."""
    state = ExporterState()
    report = _report(
        "eu",
        _result("kafka", "metadata", latency=0.002, checked_at=10.0),
        _result("kafka", "topics", latency=0.3, checked_at=11.0),
        _result("redis", latency=0.004, checked_at=12.0),
        trace_id="ab" * 16,
    )
    state.record(report)
    kafka = state.durations["eu", "kafka"]
    assert sum(kafka.counts) == 1
    assert kafka.total == pytest.approx(0.3)
    index = DURATION_BUCKETS.index(0.5)
    assert kafka.counts[index] == 1
    assert kafka.exemplars == {index: ("ab" * 16, 0.3, 11.0)}
    assert state.durations["eu", "redis"].total == pytest.approx(0.004)
    assert ("eu", "timescale") not in state.durations, "no check, no observation"


def test_bucket_bounds_are_inclusive_and_the_last_bucket_is_infinite() -> None:
    """A value equal to a bound lands in that bucket (le); a value past the last in +Inf."""
    histogram = DurationHistogram()
    histogram.observe(DURATION_BUCKETS[0], None, 1.0)
    histogram.observe(DURATION_BUCKETS[-1] * 2, "cd" * 16, 2.0)
    assert len(histogram.counts) == len(DURATION_BUCKETS) + 1
    assert histogram.counts[0] == 1
    assert histogram.counts[-1] == 1
    assert histogram.exemplars == {
        len(DURATION_BUCKETS): ("cd" * 16, DURATION_BUCKETS[-1] * 2, 2.0)
    }
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_every_write_bumps_the_version() -> None:
    """Connectors, failover metadata, sources, reports and touch each mark the snapshot changed."""
    state = ExporterState()
    versions = [state.version]

    class Source:
        def metric_families(self) -> Iterable[Metric]:
            yield GaugeMetricFamily("ingest_test", "A test family.", value=1.0)

    state.set_connectors(_infos("eu"))
    versions.append(state.version)
    state.set_failover({"enabled": True})
    versions.append(state.version)
    state.add_source(Source())
    versions.append(state.version)
    state.record(_report("eu", _result("redis")))
    versions.append(state.version)
    state.touch()
    versions.append(state.version)
    assert versions == sorted(set(versions)), versions
    assert len(state.sources) == 1
    assert state.failover == {"enabled": True}
    assert state.connectors == _infos("eu")
