"""Log what changed, not what held: check transitions, a periodic summary, throttled repeats.

An on-call engineer reads one ``check_failed`` warning when a check leaves ``ok`` (or moves to
another failing status or reason), one ``check_recovered`` info line with the outage's length
when it comes back, and nothing while it holds. Every cycle still logs each check's
``probe_completed`` at debug (with its trace and span ids) and a ``probe_summary`` at debug
once a minute. :class:`Throttle` keeps any other repeated warning to one line per period.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import structlog

from exporter.probes.base import ConnectivityReport, ProbeResult, Status

__all__ = ["SUMMARY_INTERVAL", "CheckLog", "Throttle"]

_log = structlog.get_logger("exporter.scheduler")

#: Seconds between two ``probe_summary`` debug lines.
SUMMARY_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class _Seen:
    """A check's last state and when it last left ``ok`` (``None`` while ok)."""

    status: Status
    reason: str | None
    failing_since: float | None


class CheckLog:
    """Turn each probe cycle into transition lines; remembers each check's last state."""

    def __init__(
        self,
        *,
        summary_interval: float = SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seen: dict[tuple[str, str, str], _Seen] = {}
        self._clock = clock
        self._summary_interval = summary_interval
        self._next_summary = -math.inf
        self._cycles = 0

    def observe(self, report: ConnectivityReport) -> None:
        """Log the cycle's transitions (and, once per interval, the summary)."""
        now = self._clock()
        for result in report.results:
            self._transition(report, result, now)
            _log.debug("probe_completed", **_fields(report, result))
        self._cycles += 1
        if now >= self._next_summary:
            statuses = Counter(r.status.value for r in report.results)
            _log.debug(
                "probe_summary",
                deployment=report.deployment,
                cycles=self._cycles,
                checks=len(report.results),
                **{status.value: statuses.get(status.value, 0) for status in Status},
                trace_id=report.trace_id,
            )
            self._cycles = 0
            self._next_summary = now + self._summary_interval

    def _transition(self, report: ConnectivityReport, result: ProbeResult, now: float) -> None:
        key = (report.deployment, result.connector, result.check)
        reason = result.reason.value if result.reason is not None else None
        before = self._seen.get(key)
        if result.ok:
            self._seen[key] = _Seen(result.status, reason, None)
            if before is not None and before.failing_since is not None:
                _log.info(
                    "check_recovered",
                    **_fields(report, result),
                    outage_seconds=round(now - before.failing_since, 3),
                    previous_status=before.status.value,
                    previous_reason=before.reason,
                )
            return
        since = now if before is None or before.failing_since is None else before.failing_since
        self._seen[key] = _Seen(result.status, reason, since)
        if before is None or (before.status, before.reason) != (result.status, reason):
            _log.warning("check_failed", **_fields(report, result))


def _fields(report: ConnectivityReport, result: ProbeResult) -> dict[str, object]:
    return {
        "deployment": report.deployment,
        "connector": result.connector,
        "check": result.check,
        "status": result.status.value,
        "reason": result.reason.value if result.reason is not None else None,
        "duration_seconds": round(result.latency_seconds, 6),
        "detail": result.detail or None,
        "trace_id": report.trace_id,
        "span_id": result.span_id,
    }


class Throttle:
    """Let a repeated event through once per ``period`` per key; count what it held back.

    Use: ``if (held := throttle.allow(key)) is not None: log.warning(..., suppressed=held)``.
    Keys must come from a bounded set (a topic, a reason), never from message content.
    """

    def __init__(self, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period
        self._clock = clock
        self._last: dict[Hashable, tuple[float, int]] = {}

    def allow(self, key: Hashable) -> int | None:
        """Return how many repeats were held back since the last pass, or None to hold this one."""
        now = self._clock()
        last, held = self._last.get(key, (-math.inf, 0))
        if now - last < self._period:
            self._last[key] = (last, held + 1)
            return None
        if len(self._last) > 1_000:  # bounded keys; this only guards pathological callers
            self._last.clear()
        self._last[key] = (now, 0)
        return held
