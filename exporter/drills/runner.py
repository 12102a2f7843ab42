"""``execute_failover_drill``: the phases in order, each timed, traced and logged once.

pre-check (steady state; a failure is a stop condition: ``aborted``) -> arm (write generator
and watchers running) -> inject (switchover, kill) or await (observe) -> detect -> promote
-> measure (RTO, RPO) -> recover (all checks ok again) -> post-check (health, jobs). The
``fallback`` scenario is pre-check -> measure. One span covers the drill, with an event per
phase; each phase logs one ``drill_phase_finished`` event. The overall deadline, a cancel
(SIGTERM) or a lost lock end the drill early; the record is still built and stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from exporter._cleanup import shielded
from exporter.drills._steps import Steps, StopCondition
from exporter.drills.lock import DrillLock
from exporter.drills.plan import DrillPlan, DrillTarget, Scenario
from exporter.drills.record import ComponentStatus, DrillResult, InjectionRecord, Phase
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.verdict import judge
from exporter.probes._timescale_sql import brief

__all__ = ["PHASES", "DrillTarget", "execute_failover_drill"]

_log = structlog.get_logger(__name__)

#: The phases of each scenario, in order.
PHASES: dict[Scenario, tuple[str, ...]] = {
    Scenario.FALLBACK: ("pre_check", "measure"),
    Scenario.SWITCHOVER: (
        "pre_check", "arm", "inject", "detect", "promote", "measure", "recover", "post_check",
    ),
    Scenario.KILL: (
        "pre_check", "arm", "inject", "detect", "promote", "measure", "recover", "post_check",
    ),
    Scenario.OBSERVE: ("pre_check", "arm", "await", "promote", "measure", "recover", "post_check"),
}  # fmt: skip
#: Longest wait for the drill record to be stored once the drill ended (cancelled or not).
RECORD_TIMEOUT = 3.0


async def execute_failover_drill(
    target: DrillTarget,
    plan: DrillPlan,
    *,
    tracer: Tracer | None = None,
    lock: DrillLock | None = None,
    record: Callable[[FailoverDrillSnapshot], Awaitable[None]] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> FailoverDrillSnapshot:
    """Run one failover drill and return its record; store it through ``record`` first.

    The caller holds ``lock`` (taken with its fencing token); the drill keeps it renewed and
    ends ``aborted`` if it is lost. On cancellation the drill ends ``aborted``, its record is
    stored (bounded by :data:`RECORD_TIMEOUT`) and the cancellation goes on.
    """
    tracer = tracer or trace.NoOpTracer()
    steps = Steps(target, plan)
    attributes = {
        "ingest.drill.id": plan.drill_id,
        "ingest.drill.scenario": plan.scenario.value,
        "ingest.drill.label": plan.label,
        "ingest.deployment": plan.deployment,
        "ingest.drill.initiator": plan.initiator,
    }
    with tracer.start_as_current_span(
        "failover_drill", attributes=attributes, record_exception=False
    ) as span:
        run = _Run(steps, plan, span, on_phase)
        _log.info("drill_started", drill_id=plan.drill_id, scenario=plan.scenario.value)
        try:
            await run.execute(lock)
        except asyncio.CancelledError:
            run.abort(f"cancelled during {run.current or 'start'} (the exporter is stopping)")
            raise
        finally:
            snapshot = run.snapshot(lock)
            _end_span(span, snapshot)
            await _store(record, snapshot)
    return snapshot


class _Run:
    """One drill in progress: its phases, its stop reason, its steps' evidence."""

    def __init__(
        self,
        steps: Steps,
        plan: DrillPlan,
        span: Span,
        on_phase: Callable[[str], None] | None,
    ) -> None:
        self.steps = steps
        self.plan = plan
        self.span = span
        self.on_phase = on_phase
        self.phases: list[Phase] = []
        self.current: str | None = None
        self.aborted: str | None = None
        self._lock_lost = False
        self._deadline: asyncio.Timeout | None = None

    def abort(self, reason: str) -> None:
        """End the drill as aborted (the first reason wins)."""
        self.aborted = self.aborted or reason

    async def execute(self, lock: DrillLock | None) -> None:
        """Run the phases under the deadline; a lost lock cancels them."""
        phases = asyncio.create_task(self._timed(), name=f"drill:{self.plan.drill_id}")
        keeper = asyncio.create_task(self._keep(lock, phases)) if lock is not None else None
        try:
            await phases
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._lock_lost or (current is not None and current.cancelling()):
                raise
            self.abort(f"lock lost during {self.current}: another exporter may drill this label")
        finally:
            if keeper is not None:
                keeper.cancel()
                [kept] = await asyncio.gather(keeper, return_exceptions=True)
                if isinstance(kept, Exception):
                    # The lock was held to the end or lost (handled); anything else is a bug.
                    error = type(kept).__name__
                    _log.error("drill_lock_keeper_failed", drill_id=self.plan.drill_id, error=error)
            await self.steps.stop()

    async def _keep(self, lock: DrillLock, phases: asyncio.Task[None]) -> None:
        await lock.keep()
        self._lock_lost = True
        phases.cancel()

    async def _timed(self) -> None:
        try:
            async with asyncio.timeout(self.plan.deadline) as deadline:
                self._deadline = deadline
                await self._phases()
        except TimeoutError:
            if not deadline.expired():
                raise
            self._deadline_passed()
        except StopCondition as stop:
            self.abort(stop.reason)
        except Exception as exc:  # noqa: BLE001 - a drill ends with a record, never a crash
            error = brief(exc)
            _log.error("drill_error", drill_id=self.plan.drill_id, phase=self.current, error=error)
            self.abort(f"drill error during {self.current}: {self.steps.redactor(error)}")

    def _deadline_passed(self) -> None:
        limit = f"{self.plan.deadline:g}s"
        if not self.steps.evidence.exercised:
            if self.current == "await":
                self.abort(f"deadline {limit}: no outage happened")
            else:
                self.abort(f"deadline {limit} passed during {self.current}")
            return
        # The fault happened: what the deadline cut short is a failure, not an abort.
        done = {p.name for p in self.phases}
        self.steps.evidence.unreached = [p for p in PHASES[self.plan.scenario] if p not in done]

    async def _phases(self) -> None:
        s = self.steps
        await self._phase("pre_check", s.pre_check)
        if self.plan.scenario is Scenario.FALLBACK:
            await self._phase("measure", s.measure_fallback)
            return
        await self._phase("arm", s.arm)
        if self.plan.injects:
            await self._phase("inject", s.inject)
            if s.injection_failed_without_fault:
                await self._phase("post_check", s.post_check)
                return
            await self._phase("detect", s.detect)
        else:
            await self._phase("await", s.await_outage)
        await self._phase("promote", s.promote)
        await self._phase("measure", s.measure)
        await self._phase("recover", s.recover)
        await self._phase("post_check", s.post_check)

    async def _phase(self, name: str, step: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        self.current = name
        if self.on_phase is not None:
            self.on_phase(name)
        started = time.time()
        status, summary = ComponentStatus.FAIL, "not finished"
        try:
            ok, summary = await step()
            status = ComponentStatus.OK if ok else ComponentStatus.FAIL
        except StopCondition as stop:
            summary = f"stop condition: {stop.reason}"
            raise
        except asyncio.CancelledError:
            # The deadline cancels the step too; it becomes a TimeoutError further out.
            expired = self._deadline is not None and self._deadline.expired()
            summary = "the drill's deadline passed" if expired else "cancelled"
            raise
        finally:
            self._record_phase(Phase(
                name=name, status=status, started_at=started, finished_at=time.time(),
                summary=summary,
            ))  # fmt: skip

    def _record_phase(self, phase: Phase) -> None:
        self.phases.append(phase)
        took = round((phase.finished_at or 0) - (phase.started_at or 0), 3)
        self.span.add_event(
            f"phase {phase.name}",
            {
                "ingest.drill.phase": phase.name,
                "ingest.drill.phase.status": phase.status.value,
                "ingest.drill.phase.summary": phase.summary,
                "ingest.drill.phase.duration_seconds": took,
            },
        )
        level = "info" if phase.status is ComponentStatus.OK else "warning"
        getattr(_log, level)(
            "drill_phase_finished",
            drill_id=self.plan.drill_id,
            phase=phase.name,
            status=phase.status.value,
            duration_seconds=took,
            summary=phase.summary,
        )

    def snapshot(self, lock: DrillLock | None) -> FailoverDrillSnapshot:
        """Judge the evidence and build the record."""
        s, plan = self.steps, self.plan
        evidence = s.finish_evidence()
        verdict = judge(evidence, aborted=self.aborted)
        done = {p.name for p in self.phases}
        unreached = "not reached" if self.aborted is None else f"not reached: {self.aborted}"
        phases = self.phases + [
            Phase(name=name, status=ComponentStatus.SKIPPED, summary=unreached)
            for name in PHASES[plan.scenario]
            if name not in done
        ]
        stamps = s.timestamps()
        injection = s.injection_outcome
        trace_id = self.span.get_span_context()
        snapshot = FailoverDrillSnapshot(
            drill_id=plan.drill_id,
            label=plan.label,
            deployment=plan.deployment,
            scenario=plan.scenario.value,
            initiator=plan.initiator,
            dimensions=[d.name for d in plan.dimensions],
            fencing_token=lock.token if lock is not None else None,
            settings=plan.settings_used(s.redactor),
            result=verdict.result,
            aborted_reason=self.aborted,
            failed_objectives=list(verdict.failed_objectives),
            duration_seconds=round((stamps.finished or time.time()) - stamps.started, 3),
            timestamps=stamps,
            measured=evidence.measured,
            fallback=evidence.fallback,
            dimensions_after=list(evidence.dimensions_after),
            jobs=evidence.jobs,
            injection=None if injection is None else InjectionRecord(
                argv=list(injection.argv), exit_code=injection.exit_code,
                started_at=injection.started_at, finished_at=injection.finished_at,
                timed_out=injection.timed_out, cancelled=injection.cancelled,
                error=injection.error, output=injection.output,
            ),
            phases=phases,
            components=list(verdict.components),
            trace_id=trace.format_trace_id(trace_id.trace_id) if trace_id.is_valid else None,
        )  # fmt: skip
        log = _log.info if snapshot.result is DrillResult.OK else _log.warning
        log(
            "drill_finished",
            drill_id=plan.drill_id,
            scenario=plan.scenario.value,
            result=snapshot.result.value,
            failed_objectives=snapshot.failed_objectives,
            aborted_reason=snapshot.aborted_reason,
            duration_seconds=snapshot.duration_seconds,
        )
        return snapshot


def _end_span(span: Span, snapshot: FailoverDrillSnapshot) -> None:
    span.set_attribute("ingest.drill.result", snapshot.result.value)
    if snapshot.result in (DrillResult.FAIL, DrillResult.ABORTED):
        reason = snapshot.aborted_reason or "; ".join(snapshot.failed_objectives) or "failed"
        span.set_status(
            trace.Status(trace.StatusCode.ERROR, f"{snapshot.result.value}: {reason}"[:120])
        )


async def _store(
    record: Callable[[FailoverDrillSnapshot], Awaitable[None]] | None,
    snapshot: FailoverDrillSnapshot,
) -> None:
    """Store the record, through a cancel and bounded; a failure is logged, not raised."""
    if record is not None:
        await shielded(
            record(snapshot),
            timeout=RECORD_TIMEOUT,
            event="drill_record",
            drill_id=snapshot.drill_id,
        )
