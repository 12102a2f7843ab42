"""Check transitions log once per change; summaries are debug; repeats are throttled."""

from __future__ import annotations

from structlog.testing import capture_logs

from exporter.checklog import CheckLog, Throttle
from exporter.probes.base import ConnectivityReport, ProbeResult, Reason, Status


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        """Return the current time."""
        return self.now


def _report(status: Status, reason: Reason | None = None) -> ConnectivityReport:
    result = ProbeResult("redis", "ping", status, reason, 0.001, "", 0.0, span_id="ab")
    return ConnectivityReport("eu", 0.0, 0.01, (result,), trace_id="cd")


def test_healthy_cycles_log_nothing_above_debug() -> None:
    """A hundred ok cycles log no info or warning line, and one summary per interval."""
    clock = Clock()
    log = CheckLog(summary_interval=60.0, clock=clock)
    with capture_logs() as logs:
        for _ in range(100):
            log.observe(_report(Status.OK))
            clock.now += 1.0
    assert {e["log_level"] for e in logs} == {"debug"}
    summaries = [e for e in logs if e["event"] == "probe_summary"]
    assert [(e["cycles"], e["ok"], e["down"]) for e in summaries] == [(1, 1, 0), (60, 1, 0)]


def test_failure_then_recovery_is_one_warning_and_one_info_with_the_outage_length() -> None:
    """A check going ok, down five times, ok logs check_failed once, then check_recovered."""
    clock = Clock()
    log = CheckLog(clock=clock)
    with capture_logs() as logs:
        log.observe(_report(Status.OK))
        for _ in range(5):
            clock.now += 2.0
            log.observe(_report(Status.DOWN, Reason.REFUSED))
        clock.now += 2.0
        log.observe(_report(Status.OK))
    changes = [e for e in logs if e["log_level"] != "debug"]
    assert [(e["event"], e["log_level"]) for e in changes] == [
        ("check_failed", "warning"),
        ("check_recovered", "info"),
    ]
    assert (changes[0]["reason"], changes[0]["status"], changes[0]["trace_id"]) == (
        "refused",
        "down",
        "cd",
    )
    assert changes[1]["outage_seconds"] == 10.0
    assert changes[1]["previous_reason"] == "refused"


def test_a_new_reason_while_failing_is_logged_but_keeps_the_outage_start() -> None:
    """down/refused -> down/timeout is a second warning; recovery counts from the first."""
    clock = Clock()
    log = CheckLog(clock=clock)
    with capture_logs() as logs:
        log.observe(_report(Status.DOWN, Reason.REFUSED))
        clock.now += 3.0
        log.observe(_report(Status.DOWN, Reason.TIMEOUT))
        clock.now += 3.0
        log.observe(_report(Status.OK))
    changes = [(e["event"], e.get("reason")) for e in logs if e["log_level"] != "debug"]
    assert changes == [
        ("check_failed", "refused"),
        ("check_failed", "timeout"),
        ("check_recovered", None),
    ]
    assert next(e for e in logs if e["event"] == "check_recovered")["outage_seconds"] == 6.0


def test_throttle_passes_once_per_period_and_counts_what_it_held() -> None:
    """Repeats within the period are held and counted; the next pass reports the count."""
    clock = Clock()
    throttle = Throttle(period=60.0, clock=clock)
    assert throttle.allow("k") == 0
    assert [throttle.allow("k") for _ in range(3)] == [None, None, None]
    assert throttle.allow("other") == 0
    clock.now += 60.0
    assert throttle.allow("k") == 3
