"""Judge a drill: six components against the objectives, the worst one is the result.

Components (each ``ok | warn | fail | skipped`` with one line):

* ``health``: the Timescale checks at pre-check and post-check, and the drill dimensions on
  the new primary once ingest resumed; health counts (the system this replaces left it out);
* ``failover``: the injection ran, the primary's loss was detected and a replica promoted,
  detection within its objective;
* ``fallback``: the replica has each dimension, fresh within its SLA;
* ``rto``: the first write acknowledged after the outage, within its objective;
* ``rpo``: lost writes and seconds of writes lost (fault scenarios) or the replica's
  exposure now (``fallback``), within their objectives;
* ``jobs``: no TimescaleDB job left with ``next_start = -infinity`` on the new primary.

Every objective missed is named, with value and target: ``rto 41.20s > objective 30s``.
A stop condition (a failed pre-check, the deadline before any fault, a cancel) makes the
result ``aborted`` instead: the system was not exercised, so it did not fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.config import DrillObjectives
from exporter.drills.inject import InjectionOutcome
from exporter.drills.plan import Scenario
from exporter.drills.record import (
    Component,
    ComponentStatus,
    DimensionReading,
    DrillResult,
    FallbackReading,
    JobsReading,
    Measured,
)
from exporter.probes.base import ProbeResult, Status

__all__ = ["Evidence", "Verdict", "judge", "worst"]

_ORDER = (ComponentStatus.OK, ComponentStatus.WARN, ComponentStatus.FAIL)


def worst(statuses: Sequence[ComponentStatus]) -> ComponentStatus:
    """Return the worst judged status (``skipped`` counts for nothing; none judged: ok)."""
    judged = [s for s in statuses if s is not ComponentStatus.SKIPPED]
    return max(judged, key=_ORDER.index, default=ComponentStatus.OK)


@dataclass(slots=True)
class Evidence:
    """What the drill saw, gathered by the runner for the judge."""

    scenario: Scenario
    objectives: DrillObjectives
    measured: Measured
    health_pre: Sequence[ProbeResult] = ()
    health_post: Sequence[ProbeResult] = ()
    dimensions_after: Sequence[DimensionReading] = ()
    fallback: FallbackReading | None = None
    fallback_reason: str = "run_fallback is off"
    injection: InjectionOutcome | None = None
    detected: bool = False
    promoted: bool = False
    came_back: bool = False
    resumed: bool = False
    jobs: JobsReading | None = None
    #: Whether the system was exercised: a fault injected, or an outage seen (observe).
    exercised: bool = False
    #: Phases the deadline left unreached, by name.
    unreached: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judged components, every objective missed, and the overall result."""

    components: tuple[Component, ...]
    failed_objectives: tuple[str, ...]
    result: DrillResult


def judge(evidence: Evidence, *, aborted: str | None = None) -> Verdict:
    """Judge ``evidence``; ``aborted`` (a stop condition's reason) makes the result aborted."""
    missed: list[str] = []
    e = evidence
    # Aborted before the fault: what was never exercised is not judged.
    unjudged = f"aborted: {aborted}" if aborted is not None and not e.exercised else None

    # The injection failed and nothing went down: there is no outage to time or count.
    no_outage = e.injection is not None and not e.injection.ok and not e.detected

    def faulted(name: str, judged: Callable[[], Component]) -> Component:
        if unjudged is not None:
            return _skip(name, unjudged)
        if e.scenario is Scenario.FALLBACK:
            return _skip(name, "no fault in the fallback scenario")
        if no_outage and name in ("rto", "rpo"):
            return _skip(name, "no outage: the injection failed")
        return judged()

    def rpo() -> Component:
        if e.scenario is not Scenario.FALLBACK:
            return faulted("rpo", lambda: _rpo(e, missed))
        return _rpo(e, missed) if e.fallback is not None else _skip("rpo", unjudged or "not read")

    components = [
        _health(e),
        faulted("failover", lambda: _failover(e, missed)),
        _fallback(e),
        faulted("rto", lambda: _rto(e, missed)),
        rpo(),
        faulted("jobs", lambda: _jobs(e)),
    ]
    if aborted is not None:
        result = DrillResult.ABORTED
    else:
        result = DrillResult(worst([c.status for c in components]).value)
    return Verdict(tuple(components), tuple(missed), result)


def _component(name: str, status: ComponentStatus, summary: str) -> Component:
    return Component(name=name, status=status, summary=summary)


def _skip(name: str, why: str) -> Component:
    return _component(name, ComponentStatus.SKIPPED, why)


def _objective(missed: list[str], name: str, value: float, target: float) -> str | None:
    if value <= target:
        return None
    text = f"{name} {value:.2f}s > objective {target:g}s"
    missed.append(text)
    return text


def _health(e: Evidence) -> Component:
    problems: list[tuple[ComponentStatus, str]] = []
    for when, results in (("pre-check", e.health_pre), ("post-check", e.health_post)):
        for r in results:
            if r.status is Status.OK:
                continue
            bad = ComponentStatus.FAIL if r.status is Status.DOWN else ComponentStatus.WARN
            reason = f" ({r.reason.value})" if r.reason else ""
            problems.append((bad, f"{when}: {r.check} {r.status.value}{reason}"))
    for d in e.dimensions_after:
        if not d.fresh:
            state = d.error or (
                f"{d.age_seconds:.1f}s old > SLA {d.sla_seconds:g}s" if d.present else "no rows"
            )
            problems.append((ComponentStatus.FAIL, f"after failover: {d.dimension} {state}"))
    if problems:
        status = worst([s for s, _ in problems])
        return _component("health", status, "; ".join(text for _, text in problems[:4]))
    checked = len(e.health_pre) + len(e.health_post)
    fresh = ", ".join(d.dimension for d in e.dimensions_after)
    tail = f"; {fresh} fresh on the new primary" if fresh else ""
    return _component("health", ComponentStatus.OK, f"{checked} timescale checks ok{tail}")


def _failover(e: Evidence, missed: list[str]) -> Component:
    m = e.measured
    if e.injection is not None and not e.injection.ok:
        return _component("failover", ComponentStatus.FAIL, e.injection.summary)
    if not e.detected:
        return _component("failover", ComponentStatus.FAIL, "no failed probe of the primary")
    if m.detection_seconds is not None:
        over = _objective(missed, "detection", m.detection_seconds, e.objectives.detection_seconds)
        if over is not None:
            return _component("failover", ComponentStatus.FAIL, over)
    if e.came_back and not e.promoted:
        summary = f"the primary came back on timeline {m.timeline_before}; nothing was promoted"
        return _component("failover", ComponentStatus.WARN, summary)
    if not e.promoted:
        return _component("failover", ComponentStatus.FAIL, "no replica was promoted")
    summary = (
        f"detected {m.detection_seconds or 0:.2f}s after the fault, promoted "
        f"{m.promotion_seconds or 0:.2f}s later ({m.promoted_by}); "
        f"timeline {m.timeline_before} -> {m.timeline_after}"
    )
    return _component("failover", ComponentStatus.OK, summary)


def _fallback(e: Evidence) -> Component:
    f = e.fallback
    if f is None:
        return _skip("fallback", e.fallback_reason)
    if f.error is not None:
        return _component("fallback", ComponentStatus.FAIL, f"replica unreadable: {f.error}")
    problems = []
    for d in f.dimensions:
        if not d.present:
            problems.append(f"{d.dimension}: {d.error or 'no rows'} on the replica")
        elif not d.fresh:
            problems.append(f"{d.dimension}: {d.age_seconds:.1f}s old > SLA {d.sla_seconds:g}s")
    if problems:
        return _component("fallback", ComponentStatus.FAIL, "; ".join(problems))
    if f.streaming is False:
        return _component("fallback", ComponentStatus.WARN, "dimensions fresh, but not streaming")
    ages = ", ".join(f"{d.dimension} {d.age_seconds or 0:.1f}s old" for d in f.dimensions)
    return _component("fallback", ComponentStatus.OK, f"fresh on the replica: {ages}")


def _rto(e: Evidence, missed: list[str]) -> Component:
    rto = e.measured.rto_seconds
    if rto is None:
        return _component("rto", ComponentStatus.FAIL, "no write acknowledged after the outage")
    over = _objective(missed, "rto", rto, e.objectives.rto_seconds)
    if over is not None:
        return _component("rto", ComponentStatus.FAIL, over)
    return _component("rto", ComponentStatus.OK, f"rto {rto:.2f}s <= {e.objectives.rto_seconds:g}s")


def _rpo(e: Evidence, missed: list[str]) -> Component:
    rpo, o = e.measured.rpo, e.objectives
    size = f"{rpo.bytes:,.0f} WAL bytes" if rpo.bytes is not None else "WAL bytes unknown"
    if e.scenario is Scenario.FALLBACK:
        if rpo.seconds is None:
            return _component("rpo", ComponentStatus.WARN, f"exposure not measured; {size}")
        over = _objective(missed, "rpo", rpo.seconds, o.rpo_seconds)
        status = ComponentStatus.FAIL if over else ComponentStatus.OK
        return _component("rpo", status, f"{over or f'rpo {rpo.seconds:.2f}s'}; {size} behind")
    if rpo.lost_writes is None:
        return _component("rpo", ComponentStatus.FAIL, "lost writes not measured")
    problems = []
    if rpo.lost_writes > o.lost_writes:
        text = f"lost_writes {rpo.lost_writes} > objective {o.lost_writes}"
        missed.append(text)
        problems.append(text)
    if rpo.seconds is not None:
        over = _objective(missed, "rpo", rpo.seconds, o.rpo_seconds)
        problems += [over] if over else []
    if problems:
        return _component("rpo", ComponentStatus.FAIL, f"{'; '.join(problems)}; {size}")
    return _component("rpo", ComponentStatus.OK, f"{rpo.lost_writes} lost writes; {size}")


def _jobs(e: Evidence) -> Component:
    j = e.jobs
    if j is None:
        if e.unreached:
            return _component("jobs", ComponentStatus.FAIL, "post-check not reached")
        return _skip("jobs", "not checked")
    if not j.checked:
        return _skip("jobs", j.detail)
    return _component("jobs", ComponentStatus.FAIL if j.stuck else ComponentStatus.OK, j.detail)
