"""The drill gauges: the last drill of each deployment, label and scenario, from memory.

Labels are bounded: ``deployment`` and ``label`` come from the settings, ``scenario`` from
:class:`~exporter.drills.plan.Scenario`, ``objective`` is one of three names. Values come
from the drill records (refreshed from Redis by the daemon, so every replica publishes the
last drill whichever replica ran it); a number the last drill did not measure is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric

from exporter.config import IngestSettings
from exporter.drills.plan import Scenario
from exporter.drills.record import DrillResult
from exporter.drills.report import FailoverDrillSnapshot
from exporter.metricspec import MetricSpec, family, spec

__all__ = ["METRIC_SPECS", "DrillMetrics"]

_LABELS = "deployment label scenario"
_FROM = "Of the last drill; read from the drill records in Redis (shared by every replica)."

#: The gauges this module publishes.
METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_failover_drill_last_run_timestamp_seconds",
        "gauge",
        _LABELS,
        f"Unix time the drill started. {_FROM}",
    ),
    spec(
        "ingest_failover_drill_success",
        "gauge",
        _LABELS,
        f"1 when the drill's result was ok; 0 for warn, fail or aborted. {_FROM}",
    ),
    spec(
        "ingest_failover_drill_duration_seconds",
        "gauge",
        _LABELS,
        f"Wall time of the whole drill. {_FROM}",
    ),
    spec(
        "ingest_failover_drill_detection_seconds",
        "gauge",
        _LABELS,
        "From the fault (observe: the last success) to the first failed probe of the primary. "
        f"{_FROM}",
    ),
    spec(
        "ingest_failover_drill_promotion_seconds",
        "gauge",
        _LABELS,
        f"From detection to a replica leaving recovery (or a newer timeline). {_FROM}",
    ),
    spec(
        "ingest_failover_drill_rto_seconds",
        "gauge",
        _LABELS,
        f"From the fault to the first write acknowledged after the outage. {_FROM}",
    ),
    spec(
        "ingest_failover_drill_rpo_bytes",
        "gauge",
        _LABELS,
        "WAL bytes lost: past the new timeline's branch point (fallback: the replica's lag "
        f"now). {_FROM}",
    ),
    spec(
        "ingest_failover_drill_lost_writes",
        "gauge",
        _LABELS,
        f"Acknowledged drill writes missing on the new primary. {_FROM}",
    ),
    spec(
        "ingest_failover_drill_objective_seconds",
        "gauge",
        f"{_LABELS} objective",
        "The drill objectives from the settings (failover_drill.objectives): detection, rto, rpo.",
    ),
)
_OBJECTIVES = (("detection", "detection_seconds"), ("rto", "rto_seconds"), ("rpo", "rpo_seconds"))


class DrillMetrics:
    """Hold the last drill per (deployment, label, scenario) and publish it as gauges."""

    def __init__(self, settings: IngestSettings, *, on_change: Callable[[], None]) -> None:
        self._settings = settings
        self._on_change = on_change
        self._last: dict[tuple[str, str, str], FailoverDrillSnapshot] = {}

    def observe(self, snapshot: FailoverDrillSnapshot) -> None:
        """Keep ``snapshot`` when it is newer than the last one of its series."""
        key = (snapshot.deployment, snapshot.label, snapshot.scenario)
        known = self._last.get(key)
        if known is not None and known.timestamps.started >= snapshot.timestamps.started:
            return
        if snapshot.scenario not in {s.value for s in Scenario}:
            return  # a record from a newer exporter: its scenario would be an unbounded label
        self._last[key] = snapshot
        self._on_change()

    def metric_families(self) -> Iterator[Metric]:
        """Yield the drill gauges from memory."""
        families = {s.name: family(s) for s in METRIC_SPECS}
        for key, snapshot in sorted(self._last.items()):
            m = snapshot.measured
            values = {
                "ingest_failover_drill_last_run_timestamp_seconds": snapshot.timestamps.started,
                "ingest_failover_drill_success": float(snapshot.result is DrillResult.OK),
                "ingest_failover_drill_duration_seconds": snapshot.duration_seconds,
                "ingest_failover_drill_detection_seconds": m.detection_seconds,
                "ingest_failover_drill_promotion_seconds": m.promotion_seconds,
                "ingest_failover_drill_rto_seconds": m.rto_seconds,
                "ingest_failover_drill_rpo_bytes": m.rpo.bytes,
                "ingest_failover_drill_lost_writes": m.rpo.lost_writes,
            }
            for name, value in values.items():
                if value is not None:
                    families[name].add_metric(list(key), float(value))
        drill = self._settings.failover_drill
        if drill.enabled:
            objective = families["ingest_failover_drill_objective_seconds"]
            for deployment in self._settings.deployments:
                for scenario in Scenario:
                    for name, field in _OBJECTIVES:
                        labels = [deployment.name, drill.label, scenario.value, name]
                        objective.add_metric(labels, float(getattr(drill.objectives, field)))
        yield from families.values()
