"""The drill record: markdown a person pastes, a versioned schema shipped with the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.drills.report import SCHEMA_PATH, SCHEMA_VERSION, FailoverDrillSnapshot, json_schema

from .drill_samples import fallback_snapshot, kill_snapshot

REPO = Path(__file__).resolve().parents[2]


def test_kill_report_has_verdict_numbers_timeline_and_the_injection() -> None:
    """The markdown names the result, the missed objective, each number and each moment."""
    text = kill_snapshot().to_markdown()
    assert text.startswith("# Failover drill `20261204T153000Z-0a1b2c3d`: **FAIL**\n")
    assert "| failed objectives | lost_writes 3 > objective 0 |" in text
    assert "| RTO | 1.300 s | 10 s |" in text
    assert "| RPO: lost writes | 3 | 0 |" in text
    assert "| RPO: WAL bytes | 4,096 bytes | - |" in text
    assert "| timeline | 2 -> 3 |" in text
    assert "| fault injected | 2026-12-04 15:30:00.000Z | +0.000 s |" in text
    assert "| first write acknowledged (RTO end) | 2026-12-04 15:30:01.300Z | +1.300 s |" in text
    assert "| post_check | skipped | - | not reached |" in text
    # The command's own output is kept verbatim in a code block (its pipes are not a table).
    assert "```text\nCurrent cluster topology | leader | pg-1 |\n" in text
    assert "| trace id | `0af7651916cd43dd8448eb211c80319c` |" in text


def test_table_cells_escape_pipes_and_newlines() -> None:
    """A summary with a pipe or a newline stays inside its table cell."""
    snapshot = kill_snapshot(aborted_reason="a | b\nc")
    assert "| aborted | a \\| b c |" in snapshot.to_markdown()


def test_fallback_report_shows_the_replica_and_only_the_exposure() -> None:
    """A fallback report shows the replica's dimensions and the RPO exposure, no RTO rows."""
    text = fallback_snapshot().to_markdown()
    assert "## Fallback path: replica `postgresql://ingest:***@replica:5432/ingest`" in text
    assert "Replica streaming; 512 bytes of WAL behind the primary." in text
    assert "| trades | replica | present | 2.000 s | 60.000 s | yes | 0.100 s |" in text
    assert "| RPO exposure: seconds | 0.100 s | 1 s |" in text
    assert "RTO" not in text


def test_snapshot_round_trips_through_json_and_refuses_unknown_fields() -> None:
    """The JSON form reads back equal; an unknown field or another version is refused."""
    snapshot = kill_snapshot()
    assert FailoverDrillSnapshot.model_validate_json(snapshot.model_dump_json()) == snapshot
    data = json.loads(snapshot.model_dump_json())
    assert data["schema_version"] == SCHEMA_VERSION
    with pytest.raises(ValidationError):
        FailoverDrillSnapshot.model_validate({**data, "password": "x"})
    with pytest.raises(ValidationError):
        FailoverDrillSnapshot.model_validate({**data, "schema_version": 2})


def test_shipped_schema_matches_the_model() -> None:
    """docs/failover-drill-snapshot.schema.json is what `make docs` generates from the code."""
    shipped = (REPO / SCHEMA_PATH).read_text(encoding="utf-8")
    assert shipped == json_schema(), "stale schema: run `make docs`"
    assert json.loads(shipped)["properties"]["schema_version"]["const"] == 1


def test_summary_is_what_the_list_shows() -> None:
    """The list view carries id, scenario, result, the misses and the timing only."""
    summary = kill_snapshot().summary()
    assert summary == {
        "drill_id": "20261204T153000Z-0a1b2c3d",
        "label": "q4-dr",
        "deployment": "eu-primary",
        "scenario": "kill",
        "initiator": "cli:sre",
        "result": "fail",
        "failed_objectives": ["lost_writes 3 > objective 0"],
        "aborted_reason": None,
        "started": kill_snapshot().timestamps.started,
        "duration_seconds": 4.2,
    }
