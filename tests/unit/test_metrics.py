"""The collector reads the snapshot; the renderer caches each format until it changes."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.probes.base import ConnectivityReport, Measurement, ProbeResult, Reason, Status
from exporter.state import ConnectorInfo, ExporterState
from exporter.telemetry.catalog import all_specs
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@dataclass
class FakeTask:
    """A supervisor row as the collector sees it."""

    name: str
    up: bool
    restarts: int


def _result(connector: str, check: str, status: Status, reason: Reason | None) -> ProbeResult:
    return ProbeResult(
        connector=connector,
        check=check,
        status=status,
        reason=reason,
        latency_seconds=0.004,
        detail="",
        checked_at=1_700_000_000.0,
        measurements=(Measurement("ingest_kafka_brokers", 3.0),) if connector == "kafka" else (),
    )


def _state() -> ExporterState:
    state = ExporterState()
    state.set_connectors((ConnectorInfo("local", "redis", "redis", "redis://h:6379/0"),))
    state.set_failover({"label": "q4", "dimensions": ["daily_bars"]})
    report = ConnectivityReport(
        deployment="local",
        started_at=1_700_000_000.0,
        duration_seconds=0.01,
        results=(
            _result("timescale", "connect", Status.OK, None),
            _result("redis", "ping", Status.DOWN, Reason.REFUSED),
            _result("kafka", "metadata", Status.OK, None),
        ),
        trace_id="0af7651916cd43dd8448eb211c80319c",
    )
    state.record(report)
    return state


def _render(state: ExporterState, accept: str | None = None) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    tasks = [FakeTask("probe-loop:local", True, 2)]
    registry.register(IngestCollector(state, tasks=lambda: tasks))
    return MetricsRenderer(registry, state).render(accept)


def test_every_family_is_declared_in_the_catalog() -> None:
    """Every family the collector emits has a spec (so the README documents it)."""
    body, _ = _render(_state())
    names = {spec.name for spec in all_specs()} | {spec.exposed_name for spec in all_specs()}
    emitted = {family.name for family in text_string_to_metric_families(body.decode())}
    assert emitted <= names
    assert "ingest_connector_up" in emitted


def test_up_follows_the_last_report() -> None:
    """A connector with a down check is 0, the others 1; failures are counted by reason."""
    text = _render(_state())[0].decode()
    assert 'ingest_connector_up{connector="redis",deployment="local"} 0.0' in text
    assert 'ingest_connector_up{connector="kafka",deployment="local"} 1.0' in text
    assert (
        'ingest_probe_failures_total{connector="redis",deployment="local",reason="refused"} 1.0'
        in text
    )
    assert 'ingest_supervisor_task_restarts_total{task="probe-loop:local"} 2.0' in text
    assert 'ingest_kafka_brokers{deployment="local"} 3.0' in text
    assert 'ingest_failover_drill_dimension_required{dimension="daily_bars",label="q4"}' in text


def test_openmetrics_carries_the_trace_id_exemplar() -> None:
    """The OpenMetrics exposition attaches the probe cycle's trace id to a histogram bucket."""
    body, content_type = _render(_state(), OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(body.decode())}  # type: ignore[no-untyped-call]
    samples = families["ingest_probe_duration_seconds"].samples
    exemplars = [s.exemplar for s in samples if s.exemplar]
    assert exemplars
    assert exemplars[0].labels == {"trace_id": "0af7651916cd43dd8448eb211c80319c"}


def test_renderer_serves_cached_bytes_until_the_snapshot_changes() -> None:
    """Two scrapes without a change return the same bytes object; a change re-renders."""
    state = _state()
    registry = CollectorRegistry(auto_describe=False)
    calls = []

    class Counting(IngestCollector):
        def collect(self):  # type: ignore[no-untyped-def]
            calls.append(1)
            return super().collect()

    registry.register(Counting(state))
    renderer = MetricsRenderer(registry, state)
    first, _ = renderer.render(None)
    second, _ = renderer.render(None)
    assert first is second
    assert len(calls) == 1
    state.touch()
    renderer.render(None)
    assert len(calls) == 2
    renderer.render(OPENMETRICS)
    assert len(calls) == 3


def test_check_status_is_a_state_set_and_reason_names_the_cause() -> None:
    """Each check has one series per status, exactly one at 1, and one reason series at 1."""
    text = _render(_state())[0].decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    for connector, check, expected, reason in (
        ("redis", "ping", "down", "refused"),
        ("kafka", "metadata", "ok", "none"),
    ):
        statuses = {
            s.labels["status"]: s.value
            for s in samples
            if s.name == "ingest_check_status" and s.labels["check"] == check
        }
        assert statuses == {s.value: float(s.value == expected) for s in Status}, connector
        reasons = [
            (s.labels["reason"], s.value)
            for s in samples
            if s.name == "ingest_check_reason" and s.labels["check"] == check
        ]
        assert reasons == [(reason, 1.0)], connector


def test_every_counter_label_value_is_present_at_zero_in_the_first_scrape() -> None:
    """Before any probe cycle, failures per Reason per connector and cycles are 0, not absent."""
    state = ExporterState()
    state.set_connectors(
        tuple(ConnectorInfo("eu", c, c, "x") for c in ("timescale", "redis", "kafka"))
    )
    text = _render(state)[0].decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    failures = {
        (s.labels["connector"], s.labels["reason"]): s.value
        for s in samples
        if s.name == "ingest_probe_failures_total"
    }
    assert failures == {(c, r.value): 0.0 for c in ("timescale", "redis", "kafka") for r in Reason}
    cycles = [(s.labels, s.value) for s in samples if s.name == "ingest_probe_cycles_total"]
    assert cycles == [({"deployment": "eu"}, 0.0)]
    restarts = [s.value for s in samples if s.name == "ingest_supervisor_task_restarts_total"]
    assert restarts == [2.0]
