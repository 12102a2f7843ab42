"""The drill verdict: components against objectives, every miss named, aborted kept apart."""

from __future__ import annotations

import time

from exporter.drills.inject import InjectionOutcome
from exporter.drills.plan import Scenario
from exporter.drills.record import (
    ComponentStatus,
    DimensionReading,
    DrillResult,
    FallbackReading,
    JobsReading,
    Measured,
    RpoReading,
)
from exporter.drills.verdict import judge, worst
from exporter.probes.base import ProbeResult, Reason, Status

from .drill_samples import evidence


def _statuses(verdict: object) -> dict[str, str]:
    return {c.name: c.status.value for c in verdict.components}  # type: ignore[attr-defined]


def test_a_clean_kill_is_ok_with_every_component_judged() -> None:
    """Every number within its objective: ok, and only the fallback is skipped (off)."""
    verdict = judge(evidence())
    assert verdict.result is DrillResult.OK
    assert verdict.failed_objectives == ()
    assert _statuses(verdict) == {
        "health": "ok",
        "failover": "ok",
        "fallback": "skipped",
        "rto": "ok",
        "rpo": "ok",
        "jobs": "ok",
    }


def test_every_missed_objective_is_named_with_value_and_target() -> None:
    """Detection, RTO, lost writes and RPO seconds over their objectives: all four named."""
    measured = Measured(
        detection_seconds=6.25,
        rto_seconds=41.2,
        rpo=RpoReading(lost_writes=5, bytes=9000.0, seconds=1.5),
    )
    verdict = judge(evidence(measured=measured))
    assert verdict.result is DrillResult.FAIL
    assert verdict.failed_objectives == (
        "detection 6.25s > objective 5s",
        "rto 41.20s > objective 10s",
        "lost_writes 5 > objective 0",
        "rpo 1.50s > objective 1s",
    )
    assert _statuses(verdict)["failover"] == "fail"
    assert _statuses(verdict)["rto"] == "fail"
    assert _statuses(verdict)["rpo"] == "fail"


def test_health_counts_in_the_verdict() -> None:
    """A degraded check warns, a check down fails, a stale dimension after failover fails."""
    degraded = ProbeResult(
        "timescale", "connections", Status.DEGRADED, Reason.CAPACITY, 0.0, "", time.time()
    )
    assert judge(evidence(health_pre=[degraded])).result is DrillResult.WARN
    down = ProbeResult("timescale", "connect", Status.DOWN, Reason.REFUSED, 0.0, "", time.time())
    verdict = judge(evidence(health_post=[down]))
    assert verdict.result is DrillResult.FAIL
    assert "post-check: connect down (refused)" in verdict.components[0].summary
    stale = DimensionReading(
        dimension="trades", server="new_primary", present=True, age_seconds=90, sla_seconds=60
    )
    verdict = judge(evidence(dimensions_after=[stale]))
    assert verdict.components[0].summary == "after failover: trades 90.0s old > SLA 60s"


def test_aborted_before_the_fault_judges_only_what_was_measured() -> None:
    """A stop condition at pre-check: aborted, and nothing unexercised is judged or named."""
    verdict = judge(
        evidence(exercised=False, measured=Measured(), detected=False, promoted=False, jobs=None),
        aborted="dimension trades not fresh at pre-check",
    )
    assert verdict.result is DrillResult.ABORTED
    assert verdict.failed_objectives == ()
    statuses = _statuses(verdict)
    assert statuses["health"] == "ok"
    for name in ("failover", "rto", "rpo", "jobs"):
        assert statuses[name] == "skipped"
    assert verdict.components[1].summary == "aborted: dimension trades not fresh at pre-check"


def test_a_failed_injection_without_an_outage_fails_failover_only() -> None:
    """Exit 3 and no outage: failover fails with the command's line; rto and rpo unjudged."""
    outcome = InjectionOutcome(("patronictl",), 1.0, 2.0, 3, "error: no such cluster\n")
    verdict = judge(evidence(injection=outcome, detected=False, promoted=False))
    statuses = _statuses(verdict)
    assert statuses["failover"] == "fail"
    assert verdict.components[1].summary == (
        "inject command exited 3 after 1.00s: error: no such cluster"
    )
    assert statuses["rto"] == statuses["rpo"] == "skipped"
    assert verdict.result is DrillResult.FAIL


def test_a_primary_back_without_promotion_warns() -> None:
    """Writes resumed on the old timeline: the failover warns that nothing was promoted."""
    verdict = judge(evidence(promoted=False, came_back=True))
    assert _statuses(verdict)["failover"] == "warn"
    assert verdict.result is DrillResult.WARN


def test_fallback_fails_on_rpo_exposure_and_on_a_stale_replica() -> None:
    """Fallback: seconds behind over the objective fail rpo; a stale replica fails fallback."""
    fresh = DimensionReading(
        dimension="trades", server="replica", present=True, age_seconds=3, sla_seconds=60
    )
    reading = FallbackReading(replica_endpoint="r", streaming=True, dimensions=[fresh])
    measured = Measured(rpo=RpoReading(bytes=2048.0, seconds=2.5))
    verdict = judge(evidence(scenario=Scenario.FALLBACK, fallback=reading, measured=measured))
    assert verdict.failed_objectives == ("rpo 2.50s > objective 1s",)
    assert _statuses(verdict) == {
        "health": "ok",
        "failover": "skipped",
        "fallback": "ok",
        "rto": "skipped",
        "rpo": "fail",
        "jobs": "skipped",
    }
    stale = fresh.model_copy(update={"age_seconds": 75.0})
    reading = reading.model_copy(update={"dimensions": [stale]})
    verdict = judge(evidence(scenario=Scenario.FALLBACK, fallback=reading, measured=Measured()))
    assert verdict.components[2].summary == "trades: 75.0s old > SLA 60s"
    assert _statuses(verdict)["rpo"] == "warn"  # the exposure could not be measured


def test_stuck_jobs_fail_and_an_unreached_post_check_fails_jobs() -> None:
    """A job left at -infinity fails jobs; a post-check cut off by the deadline too."""
    stuck = JobsReading(checked=True, scheduled=3, stuck=1, detail="1 of 3 stuck")
    assert _statuses(judge(evidence(jobs=stuck)))["jobs"] == "fail"
    cut = judge(evidence(jobs=None, unreached=["recover", "post_check"]))
    assert _statuses(cut)["jobs"] == "fail"
    assert cut.components[5].summary == "post-check not reached"


def test_worst_ignores_skipped() -> None:
    """The overall status is the worst judged one; skipped counts for nothing."""
    ok, warn, fail, skipped = (
        ComponentStatus.OK,
        ComponentStatus.WARN,
        ComponentStatus.FAIL,
        ComponentStatus.SKIPPED,
    )
    assert worst([skipped, skipped]) is ok
    assert worst([ok, skipped, warn]) is warn
    assert worst([warn, fail, ok]) is fail
