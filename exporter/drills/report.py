"""The drill record: a versioned, redaction-safe snapshot and the markdown a person pastes.

:class:`FailoverDrillSnapshot` is an allow-list model (``extra="forbid"``): names, numbers,
timestamps and already-redacted text only. Its JSON schema is versioned by
:data:`SCHEMA_VERSION` and shipped as ``docs/failover-drill-snapshot.schema.json`` (a test
fails when the two drift). Times are Unix epoch seconds (UTC); durations are seconds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import Field

from exporter.drills.record import (
    Component,
    DimensionReading,
    DrillResult,
    FallbackReading,
    InjectionRecord,
    JobsReading,
    Measured,
    Phase,
    RecordModel,
    Timestamps,
)

__all__ = ["SCHEMA_PATH", "SCHEMA_VERSION", "FailoverDrillSnapshot", "json_schema"]

#: Bumped on any change of the snapshot's shape that a reader would notice.
SCHEMA_VERSION = 1
#: Where the JSON schema is shipped, relative to the repository (``make docs`` writes it).
SCHEMA_PATH = "docs/failover-drill-snapshot.schema.json"


class FailoverDrillSnapshot(RecordModel):
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
        return _render(self)

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


def json_schema() -> str:
    """Return the snapshot's JSON schema as shipped (sorted keys, two-space indent)."""
    schema = FailoverDrillSnapshot.model_json_schema()
    schema["$id"] = f"https://ingest-exporter/failover-drill-snapshot/v{SCHEMA_VERSION}"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


# -- markdown -----------------------------------------------------------------------------

_EVENTS = (
    ("started", "started"),
    ("armed", "armed (writes and probes running)"),
    ("fault_injected", "fault injected"),
    ("outage_began", "outage began (last success before detection)"),
    ("detected", "detected (first failed probe of the primary)"),
    ("promoted", "promoted (a replica left recovery / new timeline)"),
    ("first_write_acked", "first write acknowledged (RTO end)"),
    ("recovered", "recovered (all checks ok again)"),
    ("finished", "finished"),
)


def _render(snapshot: FailoverDrillSnapshot) -> str:
    s = snapshot
    lines = [f"# Failover drill `{s.drill_id}`: **{s.result.value.upper()}**", ""]
    facts = [
        ("scenario", s.scenario),
        ("label", s.label),
        ("deployment", s.deployment),
        ("initiator", s.initiator),
        ("dimensions", ", ".join(s.dimensions) or "none"),
        ("started", _when(s.timestamps.started)),
        ("duration", f"{s.duration_seconds:.2f} s"),
    ]
    if s.aborted_reason:
        facts.append(("aborted", s.aborted_reason))
    if s.failed_objectives:
        facts.append(("failed objectives", "; ".join(s.failed_objectives)))
    if s.trace_id:
        facts.append(("trace id", f"`{s.trace_id}`"))
    lines += _table(("", ""), facts)
    lines += ["", "## Verdict", ""]
    lines += _table(
        ("component", "status", "summary"),
        [(c.name, c.status.value, c.summary) for c in s.components],
    )
    lines += ["", "## Measurements", ""]
    lines += _table(("measure", "value", "objective"), _measures(s))
    lines += ["", "## Timeline", ""]
    lines += _table(("event", "time (UTC)", "since the fault"), _timeline(s))
    if s.fallback is not None:
        f = s.fallback
        lines += ["", f"## Fallback path: replica `{f.replica_endpoint}`", ""]
        state = "streaming" if f.streaming else "not streaming" if f.streaming is False else "?"
        paused = ", replay paused" if f.replay_paused else ""
        lines.append(f"Replica {state}{paused}; {_bytes(f.lag_bytes)} of WAL behind the primary.")
        if f.error:
            lines.append(f"Error: {f.error}")
        lines.append("")
        lines += _dimension_table(f.dimensions, behind=True)
    if s.dimensions_after:
        lines += ["", "## Dimensions on the new primary", ""]
        lines += _dimension_table(s.dimensions_after, behind=False)
    if s.jobs is not None:
        lines += ["", "## TimescaleDB jobs", "", s.jobs.detail or "not checked"]
    lines += ["", "## Phases", ""]
    lines += _table(
        ("phase", "status", "took", "summary"),
        [(p.name, p.status.value, _took(p.started_at, p.finished_at), p.summary) for p in s.phases],
    )
    if s.injection is not None:
        i = s.injection
        command = " ".join(i.argv)
        lines += ["", "## Injection", "", f"`{command}`: exit code {i.exit_code}"]
        lines.append(
            f"({_took(i.started_at, i.finished_at)}{', timed out' if i.timed_out else ''})"
        )
        if i.error:
            lines.append(f"Error: {i.error}")
        if i.output.strip():
            lines += ["", "```text", i.output.rstrip().replace("```", "'''"), "```"]
    lines += ["", "## Settings used", ""]
    lines += _table(("setting", "value"), _settings(s.settings))
    return "\n".join(lines) + "\n"


def _measures(s: FailoverDrillSnapshot) -> list[tuple[str, str, str]]:
    m = s.measured
    objectives = s.settings.get("objectives", {})
    if s.scenario == "fallback":
        return [
            (
                "RPO exposure: seconds",
                _seconds(m.rpo.seconds),
                _target(objectives.get("rpo_seconds")),
            ),
            ("RPO exposure: WAL bytes", _bytes(m.rpo.bytes), "-"),
        ]
    rows = [
        ("detection", _seconds(m.detection_seconds), _target(objectives.get("detection_seconds"))),
        ("promotion", _seconds(m.promotion_seconds), "-"),
        ("RTO", _seconds(m.rto_seconds), _target(objectives.get("rto_seconds"))),
        ("RPO: lost writes", _count(m.rpo.lost_writes), _count(objectives.get("lost_writes"))),
        ("RPO: WAL bytes", _bytes(m.rpo.bytes), "-"),
        (
            "RPO: seconds of writes",
            _seconds(m.rpo.seconds),
            _target(objectives.get("rpo_seconds")),
        ),
        ("writes acknowledged / failed", f"{m.writes_acknowledged} / {m.writes_failed}", "-"),
    ]
    if m.timeline_before is not None:
        after = m.timeline_after if m.timeline_after is not None else m.timeline_before
        rows.append(("timeline", f"{m.timeline_before} -> {after}", "-"))
    if m.rpo.lost_seqs:
        rows.append(("lost seqs", ", ".join(str(n) for n in m.rpo.lost_seqs[:20]), "-"))
    return rows


def _timeline(s: FailoverDrillSnapshot) -> list[tuple[str, str, str]]:
    stamps = s.timestamps
    zero = stamps.fault_injected or stamps.outage_began
    rows = []
    for key, text in _EVENTS:
        value = getattr(stamps, key)
        if value is not None:
            since = f"{value - zero:+.3f} s" if zero is not None else "-"
            rows.append((text, _when(value), since))
    return rows


def _dimension_table(readings: Sequence[DimensionReading], *, behind: bool) -> list[str]:
    header = ("dimension", "server", "rows", "newest row age", "SLA", "fresh")
    rows = []
    for r in readings:
        row = (
            r.dimension,
            r.server,
            "present" if r.present else (r.error or "none"),
            _seconds(r.age_seconds),
            _seconds(r.sla_seconds),
            "yes" if r.fresh else "no",
        )
        rows.append((*row, _seconds(r.behind_seconds)) if behind else row)
    return _table((*header, "behind the primary") if behind else header, rows)


def _settings(settings: dict[str, object]) -> list[tuple[str, str]]:
    rows = []
    for key, value in settings.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", str(v)) for k, v in value.items()]
        elif isinstance(value, list):
            rows.append((key, " ".join(str(v) for v in value) or "-"))
        else:
            rows.append((key, "-" if value is None else str(value)))
    return rows


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _when(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _took(start: float | None, end: float | None) -> str:
    return f"{end - start:.3f} s" if start is not None and end is not None else "-"


def _seconds(value: object) -> str:
    return f"{value:.3f} s" if isinstance(value, int | float) else "-"


def _target(value: object) -> str:
    return f"{value:g} s" if isinstance(value, int | float) else "-"


def _count(value: object) -> str:
    return str(value) if isinstance(value, int) else "-"


def _bytes(value: float | None) -> str:
    return f"{value:,.0f} bytes" if value is not None else "? bytes"
