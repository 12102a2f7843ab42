"""Drills for the daemon and the CLI: the lock, the record, the running marker, the schedule.

:func:`run_failover_drill` is one guarded drill (lock taken first, record stored last).
:class:`FailoverDrills` is the daemon's side: it starts drills for ``POST /api/v1/drills``
(answering at once with the id), runs the optional ``fallback`` schedule, publishes the
gauges of the last drills (refreshed from Redis, so every replica shows the same), and ends
running drills ``aborted`` when the daemon stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from opentelemetry.trace import Tracer
from redis.exceptions import RedisError

from exporter._cleanup import shielded
from exporter.connectors.redis import RedisConnector
from exporter.drills.lock import DrillLock
from exporter.drills.metrics import DrillMetrics
from exporter.drills.plan import DrillPlan, DrillTarget, Scenario, plan_failover_drill
from exporter.drills.recent import RecentDrills
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.runner import execute_failover_drill
from exporter.drills.store import DrillStore
from exporter.errors import ConnectorError, DrillBusy, DrillRefused
from exporter.reasons import classify

if TYPE_CHECKING:
    from exporter.config import IngestSettings
    from exporter.state import ExporterState
    from exporter.supervisor import Heartbeat, TaskSupervisor

__all__ = ["DrillBundle", "FailoverDrills", "run_failover_drill"]

_log = structlog.get_logger(__name__)


class DrillBundle(DrillTarget, Protocol):
    """A deployment's services bundle (``InstitutionalIngestServices``) as drills use it."""

    @property
    def name(self) -> str:
        """Return the deployment's name."""

    @property
    def redis(self) -> RedisConnector:
        """Return the deployment's Redis connector (drill lock and records)."""


async def run_failover_drill(
    services: DrillBundle,
    plan: DrillPlan,
    *,
    tracer: Tracer | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_finished: Callable[[FailoverDrillSnapshot], None] | None = None,
) -> FailoverDrillSnapshot:
    """Take the label's lock, run the drill, store its record, give the lock back.

    ``on_finished`` gets the record however the drill ends, a cancelled one included.

    Raises:
        DrillBusy: a drill with this label runs (here or on another exporter).
        ConnectorError: Redis, which holds the lock, cannot be reached (nothing ran).
    """
    lock = await take_lock(services, plan)
    return await run_locked(
        services, plan, lock, tracer=tracer, on_phase=on_phase, on_finished=on_finished
    )


async def take_lock(services: DrillBundle, plan: DrillPlan) -> DrillLock:
    """Take the drill label's lock in the deployment's Redis."""
    lock = DrillLock(services.redis.client, label=plan.label, ttl=plan.lock_ttl)
    try:
        await lock.acquire()
    except (RedisError, OSError) as exc:
        raise ConnectorError("redis", classify(exc), "cannot take the drill lock") from None
    return lock


async def run_locked(
    services: DrillBundle,
    plan: DrillPlan,
    lock: DrillLock,
    *,
    tracer: Tracer | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_finished: Callable[[FailoverDrillSnapshot], None] | None = None,
) -> FailoverDrillSnapshot:
    """Run a drill whose lock is held; release the lock however it ends."""
    store = DrillStore(services.redis.client)
    marker: dict[str, Any] = {
        "drill_id": plan.drill_id,
        "label": plan.label,
        "deployment": plan.deployment,
        "scenario": plan.scenario.value,
        "initiator": plan.initiator,
        "state": "running",
        "phase": "starting",
        "started": time.time(),
        "fencing_token": lock.token,
    }
    pending: set[asyncio.Task[None]] = set()

    def phase(name: str) -> None:
        marker["phase"] = name
        task = asyncio.create_task(_quietly(store.mark_running(dict(marker), ttl=plan.lock_ttl)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if on_phase is not None:
            on_phase(name)

    async def record(snapshot: FailoverDrillSnapshot) -> None:
        if on_finished is not None:
            on_finished(snapshot)
        await store.add(snapshot)

    try:
        await _quietly(store.mark_running(dict(marker), ttl=plan.lock_ttl))
        return await execute_failover_drill(
            services, plan, tracer=tracer, lock=lock, record=record, on_phase=phase
        )
    finally:
        await asyncio.gather(*pending, return_exceptions=True)
        await shielded(lock.release(), timeout=2.0, event="drill_lock_release", label=plan.label)


async def _quietly(step: Any) -> None:
    """Await a Redis bookkeeping step; an unreachable Redis is logged, not raised."""
    try:
        await step
    except (RedisError, OSError) as exc:
        _log.warning("drill_bookkeeping_failed", error_type=type(exc).__name__)


class FailoverDrills:
    """The daemon's drills: HTTP-started runs, the schedule, the gauges, the stop."""

    def __init__(
        self,
        settings: IngestSettings,
        services: Mapping[str, DrillBundle],
        *,
        state: ExporterState,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.tracer = tracer
        self.metrics = DrillMetrics(settings, on_change=state.touch)
        state.add_source(self.metrics)
        # What the status page shows: it reads memory, never Redis.
        self.recent = RecentDrills(enabled=settings.failover_drill.enabled)
        self._running: dict[str, asyncio.Task[FailoverDrillSnapshot]] = {}

    def _bundle(self, deployment: str | None) -> DrillBundle:
        name = deployment or self.settings.deployments[0].name
        if name not in self.services:
            known = ", ".join(self.services)
            raise DrillRefused("deployment", f"expected one of {known}")
        return self.services[name]

    def stores(self) -> list[DrillStore]:
        """Return the drill store of each deployment's Redis."""
        return [DrillStore(s.redis.client) for s in self.services.values()]

    async def start(
        self,
        *,
        scenario: str,
        dimensions: Sequence[str] = (),
        deployment: str | None = None,
        initiator: str,
    ) -> DrillPlan:
        """Take the lock and start a drill in the background; return its plan at once.

        Raises:
            DrillRefused: the request cannot run (unknown scenario or dimension, drills off).
            DrillBusy: a drill with this label runs.
            ConnectorError: Redis, which holds the lock, cannot be reached.
        """
        bundle = self._bundle(deployment)
        plan = plan_failover_drill(
            self.settings,
            scenario=scenario,
            deployment=bundle.name,
            dimensions=dimensions,
            initiator=initiator,
        )
        lock = await take_lock(bundle, plan)
        task = asyncio.create_task(self._run(bundle, plan, lock), name=f"drill:{plan.drill_id}")
        self._running[plan.drill_id] = task
        task.add_done_callback(lambda _: self._running.pop(plan.drill_id, None))
        return plan

    async def _run(
        self, bundle: DrillBundle, plan: DrillPlan, lock: DrillLock
    ) -> FailoverDrillSnapshot:
        snapshot = await run_locked(bundle, plan, lock, tracer=self.tracer)
        self._observe(snapshot)
        return snapshot

    def _observe(self, snapshot: FailoverDrillSnapshot) -> None:
        self.metrics.observe(snapshot)
        self.recent.observe(snapshot)

    def start_jobs(self, supervisor: TaskSupervisor) -> None:
        """Start the supervised jobs (drills on): the gauges' refresh, the optional schedule."""
        from exporter.supervisor import RestartPolicy

        if not self.settings.failover_drill.enabled:
            return
        limits = self.settings.supervisor
        policy = RestartPolicy(
            max_restarts=limits.max_restarts,
            backoff_initial=min(limits.backoff_initial_seconds, limits.backoff_max_seconds),
            backoff_max=limits.backoff_max_seconds,
            reset_after=120.0,
        )
        supervisor.create(self.refresh, name="drills:refresh", restart=policy)
        if self.settings.failover_drill.schedule_seconds is not None:
            supervisor.create(self.schedule, name="drills:schedule", restart=policy)

    async def schedule(self, heartbeat: Heartbeat) -> None:
        """Run the ``fallback`` scenario every ``schedule_seconds`` (a supervised job).

        Every replica runs this loop; before each run the newest record in Redis is read,
        so a drill another replica ran recently counts and the fleet drills once a period.
        """
        period = self.settings.failover_drill.schedule_seconds
        if period is None:
            return
        label = self.settings.failover_drill.label
        while True:
            for name, bundle in self.services.items():
                store = DrillStore(bundle.redis.client)
                latest = await store.latest(deployment=name, label=label, scenario="fallback")
                due = latest is None or latest.timestamps.started + period <= time.time()
                if due and not self._running:
                    await self._scheduled(name)
            heartbeat.ready()
            await asyncio.sleep(min(period, 60.0))

    async def _scheduled(self, deployment: str) -> None:
        try:
            await self.start(
                scenario=Scenario.FALLBACK.value, deployment=deployment, initiator="schedule"
            )
        except DrillBusy as exc:
            _log.debug("drill_schedule_skipped", deployment=deployment, label=exc.label)
        except (DrillRefused, ConnectorError) as exc:
            _log.warning("drill_schedule_refused", deployment=deployment, reason=str(exc))

    async def refresh(self, heartbeat: Heartbeat) -> None:
        """Publish every replica's last drills (gauges, status page): read Redis each interval."""
        interval = self.settings.probes.interval_seconds
        while True:
            markers = []
            for store in self.stores():
                for record in reversed(await store.records()):
                    self._observe(record)
                markers += await store.running()
            self.recent.set_running(markers)
            heartbeat.ready()
            await asyncio.sleep(interval)

    async def stop(self, timeout: float) -> None:
        """Cancel running drills; each ends ``aborted`` and stores its record within ``timeout``."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
