"""Sample drill settings, evidence and records for the drills' unit tests."""

from __future__ import annotations

from typing import Any

from exporter.config import DrillObjectives, IngestSettings, build_institutional_ingest_config
from exporter.drills.plan import Scenario
from exporter.drills.record import (
    Component,
    ComponentStatus,
    DimensionReading,
    DrillResult,
    FallbackReading,
    InjectionRecord,
    JobsReading,
    Measured,
    Phase,
    RpoReading,
    Timestamps,
)
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.verdict import Evidence

__all__ = ["T0", "evidence", "fallback_snapshot", "kill_snapshot", "settings"]

#: 2026-12-04 15:30:00 UTC: the samples' fault time.
T0 = 1_796_398_200.0


def settings(**drill: Any) -> IngestSettings:
    """Return settings with one dimension ``trades`` and drills on (``drill``: the section)."""
    return build_institutional_ingest_config(
        environ={"TIMESCALE_REPLICA_URL": "postgresql://ingest:pw-Canary9@replica:5432/ingest"},
        overrides={
            "dimensions": [{"name": "trades", "freshness_sla_seconds": 60}],
            "failover_drill": {"enabled": True, **drill},
        },
    )


def evidence(**changes: Any) -> Evidence:
    """Return the evidence of a clean kill drill (every component ok), with ``changes``."""
    measured = Measured(
        detection_seconds=0.9,
        promotion_seconds=0.3,
        rto_seconds=1.2,
        rpo=RpoReading(lost_writes=0, bytes=0.0, seconds=0.0),
        timeline_before=2,
        timeline_after=3,
        promoted_by="the replica left recovery",
        writes_acknowledged=40,
        writes_failed=6,
    )
    fresh = DimensionReading(
        dimension="trades", server="new_primary", present=True, age_seconds=0.5, sla_seconds=60
    )
    values: dict[str, Any] = {
        "scenario": Scenario.KILL,
        "objectives": DrillObjectives(detection_seconds=5, rto_seconds=10, rpo_seconds=1),
        "measured": measured,
        "dimensions_after": [fresh],
        "detected": True,
        "promoted": True,
        "resumed": True,
        "exercised": True,
        "jobs": JobsReading(checked=True, scheduled=2, detail="2 scheduled job(s)"),
    }
    values.update(changes)
    return Evidence(**values)


def kill_snapshot(**changes: Any) -> FailoverDrillSnapshot:
    """Return the record of a kill drill that lost writes (result fail), with ``changes``."""
    values: dict[str, Any] = {
        "drill_id": "20261204T153000Z-0a1b2c3d",
        "label": "q4-dr",
        "deployment": "eu-primary",
        "scenario": "kill",
        "initiator": "cli:sre",
        "dimensions": ["trades"],
        "fencing_token": 7,
        "settings": {
            "objectives": {
                "detection_seconds": 5.0,
                "rto_seconds": 10.0,
                "rpo_seconds": 1.0,
                "lost_writes": 0,
            },
            "inject_command": ["patronictl", "failover", "--force"],
        },
        "result": DrillResult.FAIL,
        "failed_objectives": ["lost_writes 3 > objective 0"],
        "duration_seconds": 4.2,
        "timestamps": Timestamps(
            started=T0 - 1,
            armed=T0 - 0.2,
            fault_injected=T0,
            detected=T0 + 0.9,
            promoted=T0 + 1.2,
            first_write_acked=T0 + 1.3,
            recovered=T0 + 2.0,
            finished=T0 + 3.2,
        ),
        "measured": Measured(
            detection_seconds=0.9,
            promotion_seconds=0.3,
            rto_seconds=1.3,
            rpo=RpoReading(lost_writes=3, lost_seqs=[8, 9, 10], bytes=4096.0, seconds=0.3),
            timeline_before=2,
            timeline_after=3,
            writes_acknowledged=40,
            writes_failed=6,
            acknowledged_seqs=[(1, 10), (17, 46)],
        ),
        "injection": InjectionRecord(
            argv=["patronictl", "failover", "--force"],
            exit_code=0,
            started_at=T0,
            finished_at=T0 + 1.1,
            output="Current cluster topology | leader | pg-1 |\nSuccessfully failed over",
        ),
        "phases": [
            Phase(name="pre_check", status=ComponentStatus.OK, started_at=T0 - 1, finished_at=T0),
            Phase(name="post_check", status=ComponentStatus.SKIPPED, summary="not reached"),
        ],
        "components": [
            Component(name="health", status=ComponentStatus.OK, summary="7 timescale checks ok"),
            Component(name="rpo", status=ComponentStatus.FAIL, summary="lost_writes 3 > 0"),
        ],
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    values.update(changes)
    return FailoverDrillSnapshot(**values)


def fallback_snapshot(**changes: Any) -> FailoverDrillSnapshot:
    """Return the record of an ok fallback drill, with ``changes``."""
    reading = DimensionReading(
        dimension="trades",
        server="replica",
        present=True,
        newest=T0 - 2,
        age_seconds=2.0,
        sla_seconds=60,
        behind_seconds=0.1,
    )
    values: dict[str, Any] = {
        "drill_id": "20261204T153000Z-ffeeddcc",
        "label": "q4-dr",
        "deployment": "eu-primary",
        "scenario": "fallback",
        "initiator": "schedule",
        "dimensions": ["trades"],
        "settings": {"objectives": {"rpo_seconds": 1.0}},
        "result": DrillResult.OK,
        "duration_seconds": 0.3,
        "timestamps": Timestamps(started=T0, finished=T0 + 0.3),
        "measured": Measured(rpo=RpoReading(bytes=512.0, seconds=0.1)),
        "fallback": FallbackReading(
            replica_endpoint="postgresql://ingest:***@replica:5432/ingest",
            streaming=True,
            replay_paused=False,
            lag_bytes=512.0,
            dimensions=[reading],
        ),
    }
    values.update(changes)
    return FailoverDrillSnapshot(**values)
