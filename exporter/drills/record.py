"""The pieces of a drill record: allow-list models of names, numbers and redacted text.

:class:`~exporter.drills.report.FailoverDrillSnapshot` is made of these. Every model forbids
unknown fields, so a new field is a deliberate change of the versioned schema.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Component",
    "ComponentStatus",
    "DimensionReading",
    "DrillResult",
    "FallbackReading",
    "InjectionRecord",
    "JobsReading",
    "Measured",
    "Phase",
    "RpoReading",
    "Timestamps",
]


class RecordModel(BaseModel):
    """Base of every record model: frozen, unknown fields refused."""

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


class Component(RecordModel):
    """One judged component (health, failover, fallback, rto, rpo, jobs)."""

    name: str
    status: ComponentStatus
    summary: str


class Phase(RecordModel):
    """One phase as it ran: when, how it ended, one line of what happened."""

    name: str
    status: ComponentStatus
    started_at: float | None = None
    finished_at: float | None = None
    summary: str = ""


class Timestamps(RecordModel):
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


class RpoReading(RecordModel):
    """Data loss, three ways: acknowledged writes missing, WAL bytes, seconds of writes."""

    lost_writes: int | None = None
    #: The first lost sequence numbers (at most 100).
    lost_seqs: list[int] = Field(default_factory=list)
    bytes: float | None = None
    seconds: float | None = None


class Measured(RecordModel):
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


class DimensionReading(RecordModel):
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


class FallbackReading(RecordModel):
    """The fallback path (the replica) read now: is it usable, how much would be lost."""

    replica_endpoint: str
    streaming: bool | None = None
    replay_paused: bool | None = None
    lag_bytes: float | None = None
    dimensions: list[DimensionReading] = Field(default_factory=list)
    error: str | None = None


class JobsReading(RecordModel):
    """TimescaleDB background jobs on the (new) primary after the failover."""

    checked: bool
    scheduled: int = 0
    #: Jobs left with ``next_start = -infinity`` (never run again: a known failover bug).
    stuck: int = 0
    detail: str = ""


class InjectionRecord(RecordModel):
    """The injection command as it ran, its output captured and redacted."""

    argv: list[str]
    exit_code: int | None
    started_at: float
    finished_at: float
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None
    output: str = ""
