"""The write ledger and RPO: acknowledged writes against what survived on the new primary."""

from __future__ import annotations

import pytest

from exporter.drills.measure import durations, rpo_reading
from exporter.drills.writer import Ack, Ledger, iter_ranges, seq_ranges


def _ledger(*acks: tuple[int, int, float, float | None]) -> Ledger:
    """Acks as (seq, timeline, written_at, position)."""
    return Ledger(acks=[Ack(s, w + 0.001, w, t, p) for s, t, w, p in acks])


LEDGER = _ledger(
    (1, 2, 10.0, 1000.0),
    (2, 2, 10.1, 1100.0),
    (3, 2, 10.2, 1200.0),
    (4, 2, 10.3, 1300.0),
    # seq 5 and 6 failed (the outage); 7 is the first on the new primary
    (7, 3, 11.5, 2000.0),
)


def test_ranges_round_trip() -> None:
    """Sequence numbers fold into inclusive ranges and unfold back."""
    seqs = {1, 2, 3, 7, 9, 10}
    assert seq_ranges(seqs) == [(1, 3), (7, 7), (9, 10)]
    assert set(iter_ranges(seq_ranges(seqs))) == seqs
    assert seq_ranges(set()) == []


def test_ledger_finds_the_timeline_boundaries() -> None:
    """The last write on the old timeline and the first on a newer one."""
    assert LEDGER.last_on_timeline(2) == LEDGER.acks[3]
    assert LEDGER.first_on_timeline_after(2) == LEDGER.acks[4]
    assert LEDGER.first_on_timeline_after(3) is None


def test_writes_missing_on_the_new_primary_are_lost_in_count_bytes_and_seconds() -> None:
    """3 and 4 acknowledged but gone: 2 lost, WAL past the branch, 0.2 s of writes."""
    rpo = rpo_reading(LEDGER, {1, 2, 7}, baseline_timeline=2, branch=1150.0)
    assert rpo.lost_writes == 2
    assert rpo.lost_seqs == [3, 4]
    assert rpo.bytes == pytest.approx(150.0)
    assert rpo.seconds == pytest.approx(0.2)


def test_nothing_lost_is_zero_everywhere() -> None:
    """Every acknowledged write survived: 0 lost, 0 s; bytes 0 whatever the branch."""
    rpo = rpo_reading(LEDGER, {1, 2, 3, 4, 5, 7}, baseline_timeline=2, branch=None)
    assert (rpo.lost_writes, rpo.seconds, rpo.bytes) == (0, 0.0, 0.0)


def test_lost_writes_without_a_branch_point_leave_bytes_unknown() -> None:
    """A primary that came back without promotion has no branch point: bytes are unknown."""
    rpo = rpo_reading(LEDGER, {1, 2, 7}, baseline_timeline=2, branch=None)
    assert rpo.lost_writes == 2
    assert rpo.bytes is None


def test_durations_count_from_the_fault_or_the_outage_and_skip_what_was_not_seen() -> None:
    """Detection and RTO from the fault (observe: the outage), promotion from detection."""
    stamps: dict[str, float | None] = {
        "fault_injected": 100.0,
        "detected": 100.9,
        "promoted": 101.2,
        "first_write_acked": 101.35,
    }
    assert durations(stamps) == {
        "detection_seconds": 0.9,
        "promotion_seconds": 0.3,
        "rto_seconds": 1.35,
    }
    observed = {"outage_began": 50.0, "detected": 50.4, "promoted": None}
    assert durations(observed) == {"detection_seconds": 0.4}
    # A promotion seen before the detection (probe resolution) is 0, never negative.
    assert durations({"detected": 10.2, "promoted": 10.1}) == {"promotion_seconds": 0.0}
