"""Metric specs: one helper builds every family; an undeclared measurement is never silent."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from structlog.testing import capture_logs

from exporter.errors import UndeclaredMetricError
from exporter.metricspec import MetricKind, family, spec
from exporter.probes.base import ConnectivityReport, Measurement, ProbeResult, Status
from exporter.state import ExporterState
from exporter.telemetry import metrics
from exporter.telemetry.metrics import IngestCollector


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("gauge", GaugeMetricFamily),
        ("counter", CounterMetricFamily),
        ("histogram", HistogramMetricFamily),
        ("info", InfoMetricFamily),
    ],
)
def test_family_has_the_specs_type_name_help_and_labels(kind: MetricKind, expected: type) -> None:
    """The family is of the declared type and carries the spec's name, help and labels."""
    declared = spec("ingest_thing", kind, "deployment topic", "What a thing is.")
    built = family(declared)
    assert (built.name, built.documentation) == ("ingest_thing", "What a thing is.")
    assert built._labelnames == ("deployment", "topic")
    assert type(built) is expected


def test_an_info_family_renders_its_labels_as_before() -> None:
    """An info spec's labels become the ``_info`` sample's labels, in the exposition too."""
    built = family(spec("ingest_connector", "info", "deployment kind", "Connectors."))
    built.add_metric(["eu-1", "redis"], {})
    (sample,) = built.samples
    assert (sample.name, sample.labels, sample.value) == (
        "ingest_connector_info",
        {"deployment": "eu-1", "kind": "redis"},
        1.0,
    )


def test_spec_refuses_an_unknown_type() -> None:
    """A type outside the four prometheus kinds is refused when declared, not when scraped."""
    with pytest.raises(ValueError, match="unknown metric type"):
        spec("ingest_thing", "summary", "", "x")  # type: ignore[arg-type]


def _state_with(*names: str) -> ExporterState:
    state = ExporterState()
    result = ProbeResult(
        connector="operator",
        check="queue",
        status=Status.OK,
        reason=None,
        latency_seconds=0.001,
        detail="",
        checked_at=1_700_000_000.0,
        measurements=tuple(Measurement(name, 1.0) for name in names),
    )
    state.record(ConnectivityReport("local", 1_700_000_000.0, 0.01, (result,)))
    return state


def _render(collector: IngestCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_suite_runs_every_collector_strict() -> None:
    """The suite's conftest makes a collector built with defaults raise on undeclared names."""
    collector = IngestCollector(_state_with("ingest_operator_queue_depth"))
    with pytest.raises(UndeclaredMetricError, match="ingest_operator_queue_depth") as caught:
        _render(collector)
    assert caught.value.name == "ingest_operator_queue_depth"


def test_a_lenient_collector_logs_an_undeclared_name_once_and_publishes_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At run time an undeclared measurement is skipped, with one warning per name in all."""
    monkeypatch.setattr(metrics, "_WARNED", set())
    state = _state_with("ingest_operator_queue_depth", "ingest_kafka_brokers")
    collector = IngestCollector(state, strict=False)
    with capture_logs() as logs:
        first, second = _render(collector), _render(collector)
    assert first == second
    assert 'ingest_kafka_brokers{deployment="local"} 1.0' in first
    assert "ingest_operator_queue_depth" not in first
    warned = [e for e in logs if e["event"] == "measurement_undeclared"]
    assert warned == [
        {
            "event": "measurement_undeclared",
            "log_level": "warning",
            "measurement": "ingest_operator_queue_depth",
        }
    ]


def test_undeclared_warnings_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names minted without end (an operator probe's bug) cannot grow the warned set forever."""
    monkeypatch.setattr(metrics, "_WARNED", set())
    monkeypatch.setattr(metrics, "_MAX_WARNED", 2)
    collector = IngestCollector(_state_with("a_1", "a_2", "a_3"), strict=False)
    with capture_logs() as logs:
        _render(collector)
    assert [e["measurement"] for e in logs] == ["a_1", "a_2"]
    assert sorted(metrics._WARNED) == ["a_1", "a_2"]
