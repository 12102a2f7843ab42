"""The work of each drill phase; :mod:`exporter.drills.runner` orders, times and records them.

Each step returns ``(ok, summary)`` and leaves what it saw in :attr:`Steps.evidence` and the
timestamps. A failed pre-check raises :class:`StopCondition` (the drill ends ``aborted``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from exporter.drills.inject import Injection, InjectionOutcome
from exporter.drills.measure import (
    branch_position,
    connect,
    durations,
    measure_fallback,
    read_dimensions,
    read_jobs,
    replica_state,
    rpo_reading,
)
from exporter.drills.plan import DrillPlan, DrillTarget, Scenario, pin_host
from exporter.drills.record import Measured, Timestamps
from exporter.drills.verdict import Evidence
from exporter.drills.watch import Watcher, read_server
from exporter.drills.writer import DB_ERRORS, Ack, WriteGenerator, close_quietly, seq_ranges
from exporter.probes._timescale_sql import brief
from exporter.probes.base import Status
from exporter.reasons import classify
from exporter.redaction import redact_url

__all__ = ["Steps", "StopCondition"]

#: After a failed injection, how many probe intervals to wait for an outage it may have caused.
_FAILED_INJECTION_GRACE = 3


class StopCondition(Exception):
    """A steady-state check failed before the fault: the drill ends aborted."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Steps:
    """The phases' work for one drill, and what it saw."""

    def __init__(self, target: DrillTarget, plan: DrillPlan) -> None:
        self.target = target
        self.plan = plan
        self.redactor = target.redactor
        self.evidence = Evidence(plan.scenario, plan.objectives, Measured())
        if not plan.measure_fallback:
            why = "no replica configured" if plan.replica_url is None else "run_fallback is off"
            self.evidence.fallback_reason = why
        self._stamps: dict[str, float | None] = {"started": time.time()}
        self._write_url = plan.write_url.get_secret_value()
        self._replica_url = plan.replica_url.get_secret_value() if plan.replica_url else None
        self._primary_url = self._write_url
        self._timeout = plan.probe_timeout
        self.baseline: int | None = None
        self.writer: WriteGenerator | None = None
        self.watcher: Watcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._injection: Injection | None = None
        self.injection_failed_without_fault = False
        self._first_ack = asyncio.Event()
        self._resumed = asyncio.Event()
        self._came_back = asyncio.Event()
        self._measured: dict[str, Any] = {}

    # The steps run in order; each of these is set by an earlier one.

    @property
    def _baseline(self) -> int:
        if self.baseline is None:
            raise RuntimeError("pre-check did not read the primary's timeline")
        return self.baseline

    @property
    def _replica(self) -> str:
        if self._replica_url is None:
            raise RuntimeError("no replica configured")
        return self._replica_url

    @property
    def _watcher(self) -> Watcher:
        if self.watcher is None:
            raise RuntimeError("the drill is not armed")
        return self.watcher

    @property
    def _writer(self) -> WriteGenerator:
        if self.writer is None:
            raise RuntimeError("the drill is not armed")
        return self.writer

    # -- pre-check ------------------------------------------------------------------------

    async def pre_check(self) -> tuple[bool, str]:
        """Check the steady state: connector up, dimensions fresh, a primary, replica streaming."""
        report = await self.target.connectivity_report()
        timescale = [r for r in report.results if r.connector == "timescale"]
        self.evidence.health_pre = timescale
        if not report.connector_up("timescale"):
            down = next((r for r in timescale if r.status is Status.DOWN), None)
            why = f"{down.check}: {down.detail}" if down is not None else "no check passed"
            raise StopCondition(f"timescale connector not up at pre-check ({why})")
        for dim in self.plan.dimensions:
            check = next((r for r in timescale if r.check == f"dimension:{dim.name}"), None)
            if check is None or check.status is not Status.OK:
                detail = check.detail if check is not None else "not probed"
                raise StopCondition(f"dimension {dim.name} not fresh at pre-check ({detail})")
        primary = await self._read_write_endpoint()
        fresh = f"{len(self.plan.dimensions)} dimension(s) fresh"
        parts = [f"primary on timeline {primary.timeline}", fresh]
        if self._replica_url is not None:
            parts.append(await self._check_replica())
        if self.plan.measure_fallback and self.plan.scenario is not Scenario.FALLBACK:
            # Read before the fault: the fallback path as it stood when the primary was lost.
            self.evidence.fallback = await self._fallback()
            parts.append("fallback read")
        return True, "; ".join(parts)

    async def _read_write_endpoint(self) -> Any:
        try:
            conn = await connect(self._write_url, self._timeout)
            try:
                state = await read_server(conn, self._timeout)
            finally:
                await close_quietly(conn, self._timeout)
        except DB_ERRORS as exc:
            raise StopCondition(f"write endpoint unusable: {classify(exc).value}") from None
        if state.in_recovery:
            raise StopCondition("the write endpoint answers from a standby, not a primary")
        self.baseline = state.timeline
        self._measured["timeline_before"] = state.timeline
        if state.address and state.port:
            # Watch this very server: its first failed probe is the detection time.
            self._primary_url = pin_host(self._write_url, state.address, state.port)
        return state

    async def _check_replica(self) -> str:
        try:
            state = await replica_state(self._replica, self._timeout)
        except DB_ERRORS as exc:
            raise StopCondition(f"replica unreachable: {classify(exc).value}") from None
        if not state["in_recovery"]:
            raise StopCondition("the replica is not in recovery (promoted already?)")
        if state["receivers"] == 0:
            raise StopCondition("the replica is not streaming (no WAL receiver)")
        return "replica streaming" + (" (replay paused)" if state["paused"] else "")

    async def _fallback(self) -> Any:
        return await measure_fallback(
            primary_url=self._primary_url,
            replica_url=self._replica,
            replica_endpoint=redact_url(self._replica, mask_hosts=self.plan.mask_hosts),
            dimensions=self.plan.dimensions,
            timeout=self._timeout,
        )

    # -- fallback scenario ----------------------------------------------------------------

    async def measure_fallback(self) -> tuple[bool, str]:
        """Read every dimension from the replica and measure the exposure now."""
        reading = await self._fallback()
        self.evidence.fallback = reading
        behind = [d.behind_seconds for d in reading.dimensions if d.behind_seconds is not None]
        self._measured["rpo"] = {
            "bytes": reading.lag_bytes,
            "seconds": max(behind) if behind else None,
        }
        if reading.error is not None:
            return False, reading.error
        fresh = sum(d.fresh for d in reading.dimensions)
        lag = f"{reading.lag_bytes:,.0f}" if reading.lag_bytes is not None else "?"
        return fresh == len(reading.dimensions), (
            f"{fresh}/{len(reading.dimensions)} dimensions fresh on the replica; {lag} bytes behind"
        )

    # -- game day ---------------------------------------------------------------------------

    async def arm(self) -> tuple[bool, str]:
        """Create the drill's table, start the writes and the watchers, wait for both to see ok."""
        baseline = self._baseline
        plan = self.plan
        self.writer = WriteGenerator(
            self._write_url,
            table=plan.table,
            drill_id=plan.drill_id,
            interval=plan.write_interval,
            timeout=self._timeout,
            on_ack=self._on_ack,
        )
        try:
            await self.writer.ensure_table()
        except DB_ERRORS as exc:
            raise StopCondition(f"cannot create {plan.table}: {brief(exc)}") from None
        self.watcher = Watcher(
            primary_url=self._primary_url,
            replica_url=self._replica_url,
            write_url=self._write_url,
            baseline_timeline=baseline,
            interval=plan.probe_interval,
            timeout=self._timeout,
        )
        self._tasks = [
            asyncio.create_task(self.writer.run(), name=f"drill-writes:{plan.drill_id}"),
            asyncio.create_task(self.watcher.run(), name=f"drill-watch:{plan.drill_id}"),
        ]
        budget = max(5.0, 10 * self._timeout)
        try:
            async with asyncio.timeout(budget):
                await asyncio.gather(self._first_ack.wait(), self.watcher.primary_ok.wait())
        except TimeoutError:
            error = self.writer.ledger.last_error or "no answer"
            raise StopCondition(f"not armed within {budget:g}s (writes: {error})") from None
        self._stamps["armed"] = time.time()
        return (
            True,
            f"writing every {plan.write_interval:g}s, probing every {plan.probe_interval:g}s",
        )

    def _on_ack(self, ack: Ack) -> None:
        self._first_ack.set()
        watcher = self.watcher
        if watcher is None:
            return
        watcher.note_ack(ack)
        detected = watcher.detected_at
        if detected is not None and ack.acked_at > detected and not self._resumed.is_set():
            self._stamps["first_write_acked"] = ack.acked_at
            self._resumed.set()
            if ack.timeline == self.baseline:
                self._came_back.set()

    async def inject(self) -> tuple[bool, str]:
        """Run the injection command; a failure is recorded, not raised."""
        watcher = self._watcher
        self._injection = Injection(
            self.plan.inject_command, timeout=self.plan.inject_timeout, redactor=self.redactor
        )
        self._stamps["fault_injected"] = time.time()
        self.evidence.exercised = True
        outcome = await self._injection.run()
        self._stamps["fault_injected"] = outcome.started_at
        if outcome.ok:
            return True, outcome.summary
        grace = _FAILED_INJECTION_GRACE * self.plan.probe_interval
        try:
            async with asyncio.timeout(grace):
                await watcher.detected.wait()
        except TimeoutError:
            self.injection_failed_without_fault = True
        return False, outcome.summary

    async def await_outage(self) -> tuple[bool, str]:
        """Observe: wait (until the deadline) for the primary's first failed probe."""
        watcher = self._watcher
        await watcher.detected.wait()
        self.evidence.exercised = True
        self._stamps["outage_began"] = watcher.last_ok_at or self._stamps.get("armed")
        self._stamps["detected"] = watcher.detected_at
        return True, f"outage seen ({watcher.detected_reason})"

    async def detect(self) -> tuple[bool, str]:
        """Wait for the primary's first failed probe."""
        watcher = self._watcher
        await watcher.detected.wait()
        self._stamps["detected"] = watcher.detected_at
        return True, f"first failed probe of the primary: {watcher.detected_reason}"

    async def promote(self) -> tuple[bool, str]:
        """Wait for a promotion, or for writes to resume on the old timeline (no promotion)."""
        watcher = self._watcher
        waits = [
            asyncio.ensure_future(watcher.promoted.wait()),
            asyncio.ensure_future(self._came_back.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if watcher.promoted.is_set():
            self._stamps["promoted"] = watcher.promoted_at
            return True, f"timeline {watcher.new_timeline}: {watcher.promoted_by}"
        return False, "writes resumed on the old timeline: nothing was promoted"

    async def measure(self) -> tuple[bool, str]:
        """Wait for the first write after the outage, stop writing, count what survived."""
        writer, baseline = self._writer, self._baseline
        await self._resumed.wait()
        await self._stop_tasks()
        conn = await connect(self._write_url, self._timeout)
        try:
            survivors = await writer.survivors(conn)
            branch = await branch_position(conn, self._timeout)
        finally:
            await close_quietly(conn, self._timeout)
        rpo = rpo_reading(writer.ledger, survivors, baseline_timeline=baseline, branch=branch)
        self._measured["rpo"] = rpo.model_dump()
        return True, f"{rpo.lost_writes} acknowledged write(s) lost"

    async def recover(self) -> tuple[bool, str]:
        """Wait until every Timescale check is ok and each dimension is fresh on the new primary."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            report = await self.target.connectivity_report()
            healthy = all(r.ok for r in report.results if r.connector == "timescale")
            readings = await self._dimensions_now()
            self.evidence.dimensions_after = readings
            if healthy and all(r.fresh for r in readings):
                self._stamps["recovered"] = time.time()
                return True, "all timescale checks ok; dimensions fresh on the new primary"
            await asyncio.sleep(max(0.0, started + self.plan.probe_interval - loop.time()))

    async def _dimensions_now(self) -> list[Any]:
        try:
            conn = await connect(self._write_url, self._timeout)
            try:
                return await read_dimensions(
                    conn, self.plan.dimensions, server="new_primary", timeout=self._timeout
                )
            finally:
                await close_quietly(conn, self._timeout)
        except DB_ERRORS:
            return list(self.evidence.dimensions_after)

    async def post_check(self) -> tuple[bool, str]:
        """Probe once more and read the TimescaleDB jobs on the new primary."""
        report = await self.target.connectivity_report()
        self.evidence.health_post = [r for r in report.results if r.connector == "timescale"]
        healthy = report.connector_up("timescale")
        try:
            conn = await connect(self._write_url, self._timeout)
            try:
                jobs = self.evidence.jobs = await read_jobs(conn, self._timeout)
            finally:
                await close_quietly(conn, self._timeout)
        except DB_ERRORS as exc:
            return False, f"new primary unreachable: {classify(exc).value}"
        return healthy, f"timescale {'up' if healthy else 'not up'}; {jobs.detail}"

    # -- the end ----------------------------------------------------------------------------

    @property
    def injection_outcome(self) -> InjectionOutcome | None:
        """Return how the injection command ended (``None`` when none ran)."""
        return self._injection.outcome if self._injection is not None else None

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Stop the writes and the watchers (the runner calls it however the drill ends)."""
        await self._stop_tasks()

    def timestamps(self) -> Timestamps:
        """Return the recorded timestamps, ``finished`` set now."""
        self._stamps.setdefault("finished", time.time())
        return Timestamps.model_validate(self._stamps)

    def finish_evidence(self) -> Evidence:
        """Derive the numbers from the timestamps and the ledger; return the evidence."""
        e, stamps, w = self.evidence, self._stamps, self.watcher
        m = {**self._measured, **durations(stamps)}
        if w is not None:
            m["timeline_after"] = w.new_timeline if w.new_timeline is not None else None
            m["promoted_by"] = w.promoted_by
            e.detected = w.detected_at is not None
            e.promoted = w.promoted.is_set()
        if self.writer is not None:
            ledger = self.writer.ledger
            m["writes_acknowledged"] = len(ledger.acks)
            m["writes_failed"] = ledger.failures
            m["acknowledged_seqs"] = seq_ranges(ledger.acked_seqs())
        e.came_back = self._came_back.is_set()
        e.resumed = self._resumed.is_set()
        e.injection = self.injection_outcome
        e.measured = Measured.model_validate(m)
        return e
