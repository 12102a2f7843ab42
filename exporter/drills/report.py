"""The drill record: a versioned, redaction-safe snapshot and the markdown a person pastes.

:class:`FailoverDrillSnapshot` is an allow-list model (``extra="forbid"``): names, numbers,
timestamps and already-redacted text only. Its JSON schema is versioned by
:data:`SCHEMA_VERSION` and shipped as ``docs/failover-drill-snapshot.schema.json`` (a test
fails when the two drift). Times are Unix epoch seconds (UTC); durations are seconds.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from exporter.drills import _markdown

__all__ = [
    "SCHEMA_VERSION",
    "Component",
    "ComponentStatus",
    "DimensionReading",
    "DrillResult",
    "FailoverDrillSnapshot",
    "FallbackReading",
    "InjectionRecord",
    "JobsReading",
    "Measured",
    "Phase",
    "RpoReading",
    "Timestamps",
]

#: Bumped on any change of the snapshot's shape that a reader would notice.
SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComponentStatus(enum.StrEnum):
    """The judgement of one component or phase, best first."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"


class DrillResult(enum.StrEnum):
    """The drill's overall outcome: the worst component, or ``aborted`` by a stop condition."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ABORTED = "aborted"


class Component(_Model):
    """One judged component (health, failover, fallback, rto, rpo, jobs)."""

    name: str
    status: ComponentStatus
    summary: str


class Phase(_Model):
    """One phase as it ran: when, how it ended, one line of what happened."""

    name: str
    status: ComponentStatus
    started_at: float | None = None
    finished_at: float | None = None
    summary: str = ""


class Timestamps(_Model):
    """Every moment the drill recorded (Unix seconds); ``None`` when it did not happen."""

    started: float
    armed: float | None = None
    fault_injected: float | None = None
    #: Observe: no fault is injected; the last success before detection stands in for it.
    outage_began: float | None = None
    detected: float | None = None
    promoted: float | None = None
    first_write_acked: float | None = None
    recovered: float | None = None
    finished: float | None = None


class RpoReading(_Model):
    """Data loss, three ways: acknowledged writes missing, WAL bytes, seconds of writes."""

    lost_writes: int | None = None
    #: The first lost sequence numbers (at most 100).
    lost_seqs: list[int] = Field(default_factory=list)
    bytes: float | None = None
    seconds: float | None = None


class Measured(_Model):
    """The numbers derived from the timestamps and the ledger."""

    detection_seconds: float | None = None
    promotion_seconds: float | None = None
    rto_seconds: float | None = None
    rpo: RpoReading = RpoReading()
    timeline_before: int | None = None
    timeline_after: int | None = None
    promoted_by: str | None = None
    writes_acknowledged: int = 0
    writes_failed: int = 0
    #: Every acknowledged ``seq`` as inclusive ranges (the ledger, compactly).
    acknowledged_seqs: list[tuple[int, int]] = Field(default_factory=list)


class DimensionReading(_Model):
    """One dimension read on one server: is it there, how old is its newest row."""

    dimension: str
    server: Literal["primary", "replica", "new_primary"]
    present: bool
    newest: float | None = None
    age_seconds: float | None = None
    sla_seconds: float
    #: Replica only: the primary's newest row minus the replica's (the RPO exposure).
    behind_seconds: float | None = None
    error: str | None = None

    @property
    def fresh(self) -> bool:
        """Tell whether rows are there and the newest is within the SLA."""
        return (
            self.present and self.age_seconds is not None and self.age_seconds <= self.sla_seconds
        )


class FallbackReading(_Model):
    """The fallback path (the replica) read now: is it usable, how much would be lost."""

    replica_endpoint: str
    streaming: bool | None = None
    replay_paused: bool | None = None
    lag_bytes: float | None = None
    dimensions: list[DimensionReading] = Field(default_factory=list)
    error: str | None = None


class JobsReading(_Model):
    """TimescaleDB background jobs on the (new) primary after the failover."""

    checked: bool
    scheduled: int = 0
    #: Jobs left with ``next_start = -infinity`` (never run again: a known failover bug).
    stuck: int = 0
    detail: str = ""


class InjectionRecord(_Model):
    """The injection command as it ran, its output captured and redacted."""

    argv: list[str]
    exit_code: int | None
    started_at: float
    finished_at: float
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None
    output: str = ""


class FailoverDrillSnapshot(_Model):
    """One failover drill, whole: who, what, every timestamp, every number, the verdict."""

    schema_version: Literal[1] = 1
    drill_id: str
    label: str
    deployment: str
    scenario: str
    initiator: str
    dimensions: list[str]
    fencing_token: int | None = None
    settings: dict[str, Any]
    result: DrillResult
    aborted_reason: str | None = None
    failed_objectives: list[str] = Field(default_factory=list)
    duration_seconds: float
    timestamps: Timestamps
    measured: Measured = Measured()
    fallback: FallbackReading | None = None
    dimensions_after: list[DimensionReading] = Field(default_factory=list)
    jobs: JobsReading | None = None
    injection: InjectionRecord | None = None
    phases: list[Phase] = Field(default_factory=list)
    components: list[Component] = Field(default_factory=list)
    trace_id: str | None = None

    def to_markdown(self) -> str:
        """Return the record as markdown, ready for a post-mortem."""
        return _markdown.render(self)

    def summary(self) -> dict[str, Any]:
        """Return the few fields a list of drills shows."""
        return {
            "drill_id": self.drill_id,
            "label": self.label,
            "deployment": self.deployment,
            "scenario": self.scenario,
            "initiator": self.initiator,
            "result": self.result.value,
            "failed_objectives": self.failed_objectives,
            "aborted_reason": self.aborted_reason,
            "started": self.timestamps.started,
            "duration_seconds": self.duration_seconds,
        }
