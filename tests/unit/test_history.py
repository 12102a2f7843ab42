from __future__ import annotations

import pytest

from exporter.history import SPARKLINE_POINTS, ProbeHistory
from exporter.probes.base import ConnectivityReport, ProbeResult, Status
from exporter.reasons import Reason


def _report(
    at: float,
    *,
    redis: Status = Status.OK,
    reason: Reason | None = None,
    deployment: str = "eu",
    latency: float = 0.002,
) -> ConnectivityReport:
    results = (
        ProbeResult("timescale", "connect", Status.OK, None, latency, "", at),
        ProbeResult("redis", "ping", redis, reason, latency, "", at + 0.001),
        ProbeResult("redis", "memory", Status.OK, None, latency / 2, "", at + 0.001),
    )
    return ConnectivityReport(deployment, at, 0.01, results, connectors=("timescale", "redis"))


def test_keeps_the_newest_cycles_newest_first_with_increasing_ids() -> None:
    """Only the newest `cycles` are kept per deployment, listed newest first."""
    history = ProbeHistory(cycles=3, failed_cycles=0)
    stored = [history.add(_report(float(i))) for i in range(5)]
    assert [c.id for c in stored] == [1, 2, 3, 4, 5]
    assert [c.id for c in history.cycles("eu")] == [5, 4, 3]
    assert history.get(2) is None
    assert history.get(3) is stored[2]
    assert [c.id for c in history.recent("eu", 2)] == [5, 4]


def test_failed_cycles_outlive_successful_ones() -> None:
    """A failed cycle stays listed after more healthy cycles than the window holds."""
    history = ProbeHistory(cycles=3, failed_cycles=2)
    failed = history.add(_report(0.0, redis=Status.DOWN, reason=Reason.REFUSED))
    for i in range(1, 10):
        history.add(_report(float(i)))
    assert [c.id for c in history.cycles("eu")] == [10, 9, 8, failed.id]
    assert history.get(failed.id) is failed
    assert history.get(2) is None
    # Two newer failures push the first one out of the failed window too.
    history.add(_report(10.0, redis=Status.DOWN, reason=Reason.REFUSED))
    history.add(_report(11.0, redis=Status.DOWN, reason=Reason.TIMEOUT))
    assert history.get(failed.id) is None
    assert [c.ok for c in history.cycles("eu")] == [False, False, True]


def test_deployments_are_kept_apart() -> None:
    """Each deployment has its own window; ids are unique across deployments."""
    history = ProbeHistory(cycles=2)
    eu = history.add(_report(0.0))
    us = history.add(_report(0.0, deployment="us"))
    history.add(_report(1.0))
    history.add(_report(2.0))
    assert history.deployments == ["eu", "us"]
    assert [c.id for c in history.cycles("us")] == [us.id]
    assert history.get(eu.id) is None
    assert history.cycles("nowhere") == []


def test_since_moves_only_when_the_status_changes() -> None:
    """`since` is when the status was first seen; a new reason for the same status keeps it."""
    history = ProbeHistory()
    history.add(_report(100.0))
    history.add(_report(110.0))
    redis = history.since("eu", "redis")
    assert redis is not None
    assert (redis.status, redis.since, redis.initial) == (Status.OK, 100.001, True)
    history.add(_report(120.0, redis=Status.DOWN, reason=Reason.REFUSED))
    history.add(_report(130.0, redis=Status.DOWN, reason=Reason.TIMEOUT))
    redis = history.since("eu", "redis")
    ping = history.since("eu", "redis", "ping")
    memory = history.since("eu", "redis", "memory")
    assert redis is not None
    assert ping is not None
    assert memory is not None
    assert (redis.status, redis.reason, redis.since) == (Status.DOWN, Reason.TIMEOUT, 120.001)
    assert redis.initial is False
    assert ping.since == 120.001
    assert memory.since == 100.001  # the memory check never changed
    assert memory.initial is True
    history.add(_report(140.0))
    back = history.since("eu", "redis")
    assert back is not None
    assert (back.status, back.reason, back.since) == (Status.OK, None, 140.001)
    assert history.since("eu", "kafka") is None


def test_latency_points_are_the_slowest_check_and_bounded() -> None:
    """Each cycle adds one point per connector (its slowest check), at most SPARKLINE_POINTS."""
    history = ProbeHistory()
    for i in range(SPARKLINE_POINTS + 5):
        down = i == SPARKLINE_POINTS + 4
        redis = Status.DOWN if down else Status.OK
        history.add(_report(float(i), redis=redis, latency=0.001 * (i + 1)))
    points = history.latencies("eu", "redis")
    assert len(points) == SPARKLINE_POINTS
    assert points[-1].latency_seconds == pytest.approx(0.001 * (SPARKLINE_POINTS + 5))
    assert points[-1].up is False
    assert all(p.up for p in points[:-1])
    assert [p.cycle for p in points] == sorted(p.cycle for p in points)


def test_limits_are_validated() -> None:
    """A window of no cycles at all is refused."""
    with pytest.raises(ValueError, match="cycles"):
        ProbeHistory(cycles=0)
