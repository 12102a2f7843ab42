"""The drill gauges: the last drill per deployment, label and scenario, bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from exporter.drills.metrics import DrillMetrics
from exporter.drills.record import Timestamps

from .drill_samples import T0, fallback_snapshot, kill_snapshot, settings


def _text(metrics: DrillMetrics) -> str:
    registry = CollectorRegistry(auto_describe=False)

    class Source:
        def collect(self) -> object:
            return metrics.metric_families()

    registry.register(Source())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_last_drill_of_each_scenario_becomes_gauges() -> None:
    """Each measured number is a gauge; a number not measured is absent, not zero."""
    changes: list[int] = []
    metrics = DrillMetrics(settings(), on_change=lambda: changes.append(1))
    metrics.observe(kill_snapshot())
    metrics.observe(fallback_snapshot())
    text = _text(metrics)
    kill = 'deployment="eu-primary",label="q4-dr",scenario="kill"'
    assert f"ingest_failover_drill_success{{{kill}}} 0.0" in text
    assert f"ingest_failover_drill_rto_seconds{{{kill}}} 1.3" in text
    assert f"ingest_failover_drill_lost_writes{{{kill}}} 3.0" in text
    assert f"ingest_failover_drill_rpo_bytes{{{kill}}} 4096.0" in text
    fallback = 'deployment="eu-primary",label="q4-dr",scenario="fallback"'
    assert f"ingest_failover_drill_success{{{fallback}}} 1.0" in text
    assert f"ingest_failover_drill_rpo_bytes{{{fallback}}} 512.0" in text
    assert f"ingest_failover_drill_rto_seconds{{{fallback}}}" not in text
    assert len(changes) == 2


def test_an_older_record_never_replaces_a_newer_one() -> None:
    """Records arrive from Redis in any order: the newest start wins."""
    changes: list[int] = []
    metrics = DrillMetrics(settings(), on_change=lambda: changes.append(1))
    metrics.observe(kill_snapshot())
    metrics.observe(kill_snapshot(timestamps=Timestamps(started=T0 - 3600), duration_seconds=1))
    metrics.observe(kill_snapshot())
    assert "ingest_failover_drill_duration_seconds{" in _text(metrics)
    assert 'scenario="kill"} 4.2' in _text(metrics)
    assert len(changes) == 1


def test_a_scenario_this_exporter_does_not_know_is_not_published() -> None:
    """A record from a newer exporter cannot add an unbounded scenario label."""
    metrics = DrillMetrics(settings(), on_change=lambda: None)
    metrics.observe(kill_snapshot(scenario="region-loss"))
    assert "region-loss" not in _text(metrics)


def test_objectives_are_published_for_every_scenario_while_drills_are_on() -> None:
    """Objectives come from the settings: three per scenario per deployment."""
    text = _text(DrillMetrics(settings(), on_change=lambda: None))
    labels = 'deployment="local",label="timescale-failover-drill"'
    assert (
        f'ingest_failover_drill_objective_seconds{{{labels},objective="rto",scenario="kill"}} 120.0'
        in text
    )
    assert text.count("ingest_failover_drill_objective_seconds{") == 12
    off = DrillMetrics(settings(enabled=False), on_change=lambda: None)
    assert "ingest_failover_drill_objective_seconds{" not in _text(off)
