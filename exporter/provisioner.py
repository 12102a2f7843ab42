"""Settings -> connectors, probes, bridge, cache and periodic jobs, as one bundle per deployment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry.trace import Tracer

from exporter._cleanup import shielded
from exporter.bridge import KafkaIngestBridge
from exporter.cache import RedisCache
from exporter.config import DeploymentSettings, IngestSettings, build_redactor
from exporter.connectors import KafkaConnector, RedisConnector, TimescaleConnector
from exporter.errors import ExporterError
from exporter.events import CallbackBus, EventBus, IngestEvent
from exporter.manifest import SupervisionView, build_manifest, failover_metadata
from exporter.probes.base import ConnectivityReport, Probe
from exporter.probes.kafka import KafkaProbe
from exporter.probes.operator import load_operator_probes
from exporter.probes.redis import RedisProbe
from exporter.probes.runner import ProbeRunner, merge_probes
from exporter.probes.timescale import TimescaleProbe
from exporter.publisher import ManifestPublisher
from exporter.redaction import Redactor
from exporter.scheduler import IngestJob, ProbeScheduler, periodic
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat, RestartPolicy, TaskSupervisor
from exporter.telemetry.tracing import probe_span_attributes

if TYPE_CHECKING:
    from exporter.drills.report import FailoverDrillSnapshot

__all__ = ["InstitutionalIngestProvisioner", "InstitutionalIngestServices"]

_log = structlog.get_logger(__name__)


async def _observe_only(event: IngestEvent) -> None:
    """Accept an event without doing anything with it (the daemon's default bus)."""


@dataclass(frozen=True, slots=True)
class _Job:
    """A background task of the bundle: what runs, how it restarts, which connector it serves."""

    name: str
    connector: str
    factory: Callable[[Heartbeat], Awaitable[None]]
    restart: RestartPolicy
    hang_timeout: float | None


class InstitutionalIngestServices:
    """The supervised bundle of one deployment: connectors, probes, bridge, cache, publisher.

    Every background job runs under the shared :class:`TaskSupervisor`, named
    ``<job>:<deployment>``: ``probe-loop`` always, ``kafka-bridge`` when ingest topics are
    configured, ``cache`` unless the cache policy is ``disabled``, ``manifest`` unless
    publishing is switched off, ``ingest`` when an operator ingest job is given.
    """

    def __init__(
        self,
        settings: IngestSettings,
        deployment: DeploymentSettings,
        *,
        supervisor: TaskSupervisor,
        state: ExporterState,
        redactor: Redactor,
        probes: Sequence[Probe] = (),
        ingest: IngestJob | None = None,
        event_bus: EventBus | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self.supervisor = supervisor
        self.state = state
        self.redactor = redactor
        self.tracer = tracer
        timeout = settings.probes.timeout_seconds
        self.timescale = TimescaleConnector(deployment.timescale, connect_timeout=timeout)
        self.redis = RedisConnector(deployment.redis, timeout=timeout)
        self.kafka = KafkaConnector(deployment.kafka, timeout=timeout)
        # Built once: they keep clients and history across cycles (closed in stop()).
        self._kafka_probe = KafkaProbe(self.kafka)
        self._builtin: list[Probe] = [
            TimescaleProbe(self.timescale, dimensions=settings.dimensions),
            RedisProbe(self.redis),
            self._kafka_probe,
        ]
        self.runner = ProbeRunner(
            default_timeout=timeout,
            redact=redactor,
            tracer=tracer,
            span_attributes=probe_span_attributes(deployment),
        )
        self.scheduler = ProbeScheduler(
            self,
            interval=settings.probes.interval_seconds,
            log_lines=settings.history.log_lines_per_cycle,
        )
        self.event_bus: EventBus = event_bus or CallbackBus(_observe_only)
        self.cache: RedisCache | None = None
        if deployment.redis.cache.enabled:
            # Refreshed at the probe cadence: after a Redis outage the cache series come
            # back with the probes instead of a fixed 15 s later.
            self.cache = RedisCache(
                self.redis,
                deployment.redis.cache,
                deployment=self.name,
                interval=settings.probes.interval_seconds,
                on_change=state.touch,
            )
        self.bridge: KafkaIngestBridge | None = None
        if deployment.kafka.ingest_topics:
            self.bridge = KafkaIngestBridge(
                deployment.kafka,
                settings.dimensions,
                self.event_bus,
                deployment=self.name,
                connector=self.kafka,
                on_change=state.touch,
            )
        self.publisher: ManifestPublisher | None = None
        if deployment.kafka.manifest_publish:
            self.publisher = ManifestPublisher(
                self.kafka,
                deployment=self.name,
                topic=deployment.kafka.manifest_topic,
                interval=deployment.kafka.manifest_interval_seconds,
                snapshot=self.manifest_snapshot,
                redact=redactor,
                on_change=state.touch,
            )
        self._extra_probes = list(probes)
        self._jobs = self._plan_jobs(ingest)
        self._started = False
        self._stopped = False
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        """Return the deployment name."""
        return self.deployment.name

    def _plan_jobs(self, ingest: IngestJob | None) -> list[_Job]:
        probes = self.settings.probes
        limits = self.settings.supervisor

        def policy(
            *, reset_after: float, restart_on_success: bool = False, limited: bool = True
        ) -> RestartPolicy:
            return RestartPolicy(
                max_restarts=limits.max_restarts if limited else None,
                backoff_initial=min(limits.backoff_initial_seconds, limits.backoff_max_seconds),
                backoff_max=limits.backoff_max_seconds,
                reset_after=reset_after,
                restart_on_success=restart_on_success,
            )

        # A cycle takes at most the probe timeout; three missed cycles is a hang.
        hang = 3 * (probes.interval_seconds + probes.timeout_seconds)
        jobs = [
            _Job(
                f"probe-loop:{self.name}",
                "timescale",
                self.scheduler.run,
                # Never given up on: without it every metric would silently go stale.
                policy(reset_after=hang, limited=False),
                hang,
            )
        ]
        if self.bridge is not None:
            # No hang timeout: the bridge waits on the bus (backpressure), which is not a hang;
            # a dead broker is detected by the bridge itself and raised.
            bridge_policy = policy(reset_after=120.0)
            jobs.append(
                _Job(f"kafka-bridge:{self.name}", "kafka", self.bridge.run, bridge_policy, None)
            )
        if self.cache is not None:
            jobs.append(
                _Job(
                    f"cache:{self.name}",
                    "redis",
                    self.cache.run,
                    policy(reset_after=120.0, restart_on_success=True),
                    3 * (self.cache.interval + probes.timeout_seconds),
                )
            )
        if self.publisher is not None:
            publisher = self.publisher
            jobs.append(
                _Job(
                    f"manifest:{self.name}",
                    "kafka",
                    publisher.run,
                    policy(reset_after=300.0),
                    publisher.check_interval + 3 * publisher.deadline,
                )
            )
        if ingest is not None:
            interval = probes.interval_seconds
            jobs.append(
                _Job(
                    f"ingest:{self.name}",
                    "timescale",
                    periodic(ingest, interval),
                    policy(reset_after=10 * interval),
                    None,
                )
            )
        return jobs

    async def start(self, *, supervise: bool = True) -> None:
        """Start the connectors and (unless ``supervise`` is false) the background jobs.

        Idempotent. Nothing here needs a service to answer: a dependency that is down at
        start shows up as a failing probe and a job in backoff, never as a start failure.

        Raises:
            ExporterError: the bundle was stopped; like an aiokafka client it is not
                restarted (its probe threads are released): provision a new one.
        """
        async with self._lock:
            if self._stopped:
                raise ExporterError(f"services of {self.name!r} were stopped; provision anew")
            if self._started:
                return
            # Set first: if a connector fails to start, stop() still closes the others.
            self._started = True
            for connector in (self.timescale, self.redis, self.kafka):
                await connector.start()
            if not supervise:
                return
            for source in (self.cache, self.bridge, self.publisher):
                if source is not None:
                    self.state.add_source(source)
            for job in self._jobs:
                self.supervisor.create(
                    job.factory, name=job.name, restart=job.restart, hang_timeout=job.hang_timeout
                )
            _log.info("services_started", deployment=self.name, jobs=[j.name for j in self._jobs])

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop jobs (the bridge commits its offsets), probes and connectors within ``timeout``.

        Idempotent.
        """
        async with self._lock:
            if not self._started:
                return
            self._started, self._stopped = False, True
            deadline = time.monotonic() + timeout
            names = [job.name for job in self._jobs]
            # Half the budget for the jobs: the bridge's final commit happens in there.
            clean = await self.supervisor.cancel(*names, timeout=timeout / 2)
            # Bounded too: closing may wait for clients abandoned while bootstrapping.
            await shielded(
                self._kafka_probe.aclose(),
                timeout=max(0.1, deadline - time.monotonic()),
                event="kafka_probe_close",
                deployment=self.name,
            )
            for connector in (self.kafka, self.redis, self.timescale):
                await connector.stop(max(0.1, deadline - time.monotonic()))
            self.runner.close()
            _log.info("services_stopped", deployment=self.name, jobs_clean=clean)

    async def connectivity_report(self, probes: Iterable[Probe] = ()) -> ConnectivityReport:
        """Run built-in, configured and given probes concurrently; never raises for a probe."""
        merged = merge_probes(merge_probes(self._builtin, self._extra_probes), probes)
        return await self.runner.run(merged, deployment=self.name)

    def supervision(self) -> dict[str, list[SupervisionView]]:
        """Return, per connector, the views of the supervised jobs that serve it."""
        views: dict[str, list[SupervisionView]] = {"timescale": [], "redis": [], "kafka": []}
        probe_view: SupervisionView | None = None
        for job in self._jobs:
            info = self.supervisor.get(job.name)
            if info is None:
                continue
            view = SupervisionView(
                task=info.name,
                state=info.state.value,
                restarts=info.restarts,
                last_error_type=info.last_error_type,
                last_error_message=info.last_error_message,
            )
            if job.name.startswith("probe-loop:"):
                probe_view = view
            else:
                views[job.connector].append(view)
        # The probe loop serves every connector.
        if probe_view is not None:
            for connector_views in views.values():
                connector_views.insert(0, probe_view)
        return views

    def managed_manifest(self) -> dict[str, Any]:
        """Return the redaction-safe manifest of this deployment's connectors."""
        live = {"redis": self.cache.live_metadata()} if self.cache is not None else None
        manifest = build_manifest(
            self.settings, self.deployment, supervision=self.supervision(), live=live
        )
        return manifest.model_dump(mode="json")

    def manifest_snapshot(self) -> dict[str, Any]:
        """Return what the manifest publisher sends: the manifest and the failover metadata."""
        return {"manifest": self.managed_manifest(), "failover": self.failover_metadata()}

    def failover_metadata(self) -> dict[str, Any] | None:
        """Return the failover-drill settings as JSON data, or ``None`` when drills are off."""
        return failover_metadata(self.settings)

    async def run_failover_drill(
        self,
        scenario: str = "fallback",
        *,
        dimensions: Sequence[str] = (),
        initiator: str = "api",
        on_phase: Callable[[str], None] | None = None,
    ) -> FailoverDrillSnapshot:
        """Run one failover drill of this deployment (lock taken, record stored in Redis).

        The bundle must be started (``start(supervise=False)`` is enough). See
        :func:`exporter.drills.execute_failover_drill`.

        Raises:
            DrillRefused: drills are off, or the request cannot run as asked.
            DrillBusy: a drill with the same label runs, here or on another exporter.
        """
        from exporter.drills.plan import plan_failover_drill
        from exporter.drills.service import run_failover_drill

        plan = plan_failover_drill(
            self.settings,
            scenario=scenario,
            deployment=self.name,
            dimensions=dimensions,
            initiator=initiator,
        )
        return await run_failover_drill(self, plan, tracer=self.tracer, on_phase=on_phase)


class InstitutionalIngestProvisioner:
    """Build the services bundle of each configured deployment."""

    def __init__(
        self,
        config: IngestSettings,
        *,
        redactor: Redactor | None = None,
        probes: Sequence[Probe] = (),
        tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self.tracer = tracer
        self.redactor = redactor or build_redactor(config)
        # Import errors surface here, before anything starts (exit code 2 from the CLI).
        self.probes: list[Probe] = [*load_operator_probes(config.probes.operator), *probes]

    def provision(
        self,
        ingest: IngestJob | None = None,
        event_bus: EventBus | None = None,
        supervisor: TaskSupervisor | None = None,
        *,
        deployment: str | None = None,
        state: ExporterState | None = None,
    ) -> InstitutionalIngestServices:
        """Return the (not yet started) services bundle of one deployment.

        Args:
            ingest: An operator coroutine run once per probe interval, supervised.
            event_bus: Where the Kafka ingest bridge delivers decoded events; by default
                events are only observed (counted, their timestamps tracked) and committed.
            supervisor: The supervisor of every background job (a new one by default).
            deployment: The deployment's name; the first configured one by default.
            state: The snapshot the probes and jobs write (a new one by default).
        """
        return InstitutionalIngestServices(
            self.config,
            self.config.deployment(deployment),
            supervisor=supervisor or TaskSupervisor(redact=self.redactor),
            state=state or ExporterState(),
            redactor=self.redactor,
            probes=self.probes,
            ingest=ingest,
            event_bus=event_bus,
            tracer=self.tracer,
        )
