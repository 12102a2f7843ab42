"""Settings -> connectors, probes and the periodic job, as one services bundle per deployment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import structlog

from exporter.config import DeploymentSettings, IngestSettings
from exporter.connectors import KafkaConnector, RedisConnector, TimescaleConnector
from exporter.manifest import SupervisionView, build_manifest
from exporter.probes.base import ConnectivityReport, Probe
from exporter.probes.kafka import KafkaProbe
from exporter.probes.operator import load_operator_probes
from exporter.probes.redis import RedisProbe
from exporter.probes.runner import ProbeRunner, merge_probes
from exporter.probes.timescale import TimescaleProbe
from exporter.redaction import Redactor
from exporter.state import ExporterState
from exporter.supervisor import Heartbeat, RestartPolicy, TaskSupervisor

__all__ = ["InstitutionalIngestProvisioner", "InstitutionalIngestServices", "ProbeScheduler"]

_log = structlog.get_logger(__name__)

IngestJob = Callable[[], Awaitable[None]]


def secrets_of(settings: IngestSettings) -> list[str]:
    """Return every configured secret value, so redaction knows them by heart."""
    values: list[str] = []
    for deployment in settings.deployments:
        values.append(deployment.timescale.url.get_secret_value())
        values.append(deployment.redis.url.get_secret_value())
        if deployment.kafka.sasl_password is not None:
            values.append(deployment.kafka.sasl_password.get_secret_value())
        if deployment.kafka.sasl_username:
            values.append(deployment.kafka.sasl_username)
    # The URLs' own passwords too: a library may print them without the rest of the URL.
    from urllib.parse import unquote, urlsplit

    for url in list(values):
        if "://" in url:
            userinfo = urlsplit(url).netloc.rpartition("@")[0]
            password = userinfo.partition(":")[2]
            values += [password, unquote(password)]
    return [v for v in values if v]


class ProbeScheduler:
    """The periodic job: one probe cycle per interval, stored in the snapshot."""

    def __init__(self, services: InstitutionalIngestServices, *, interval: float) -> None:
        self._services = services
        self.interval = interval
        self.cycles = 0

    async def run(self, heartbeat: Heartbeat) -> None:
        """Probe forever, one cycle per interval (a slow cycle delays, never overlaps)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            heartbeat.beat()
            report = await self._services.connectivity_report()
            self._services.state.record(report)
            self.cycles += 1
            self._log(report)
            heartbeat.ready()
            next_at = max(next_at + self.interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    def _log(self, report: ConnectivityReport) -> None:
        for result in report.results:
            _log.info(
                "probe_completed",
                deployment=report.deployment,
                connector=result.connector,
                check=result.check,
                status=result.status.value,
                reason=result.reason.value if result.reason else None,
                duration_seconds=round(result.latency_seconds, 6),
                detail=result.detail or None,
                trace_id=report.trace_id,
            )


class InstitutionalIngestServices:
    """The supervised bundle of one deployment: connectors, probes, scheduler."""

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
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self.supervisor = supervisor
        self.state = state
        self.redactor = redactor
        timeout = settings.probes.timeout_seconds
        self.timescale = TimescaleConnector(deployment.timescale, connect_timeout=timeout)
        self.redis = RedisConnector(deployment.redis, timeout=timeout)
        self.kafka = KafkaConnector(deployment.kafka, timeout=timeout)
        self.runner = ProbeRunner(default_timeout=timeout, redact=redactor)
        self.scheduler = ProbeScheduler(self, interval=settings.probes.interval_seconds)
        self._extra_probes = list(probes)
        self._ingest = ingest
        self._tasks: list[str] = []
        self._started = False
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        """Return the deployment name."""
        return self.deployment.name

    def builtin_probes(self) -> list[Probe]:
        """Return the built-in probes of the three connectors."""
        return [TimescaleProbe(self.timescale), RedisProbe(self.redis), KafkaProbe(self.kafka)]

    async def start(self, *, supervise: bool = True) -> None:
        """Start the connectors and (unless ``supervise`` is false) the periodic job; idempotent."""
        async with self._lock:
            if self._started:
                return
            for connector in (self.timescale, self.redis, self.kafka):
                await connector.start()
            self._started = True
            if not supervise:
                return
            probes = self.settings.probes
            # A cycle takes at most the longest probe timeout; three missed cycles is a hang.
            hang = 3 * (probes.interval_seconds + probes.timeout_seconds)
            name = f"probe-loop:{self.name}"
            self.supervisor.create(
                self.scheduler.run,
                name=name,
                restart=RestartPolicy(backoff_initial=1.0, backoff_max=30.0, reset_after=hang),
                hang_timeout=hang,
            )
            self._tasks.append(name)
            if self._ingest is not None:
                self._start_ingest(self._ingest)
            _log.info("services_started", deployment=self.name)

    def _start_ingest(self, job: IngestJob) -> None:
        interval = self.settings.probes.interval_seconds

        async def run(heartbeat: Heartbeat) -> None:
            while True:
                await job()
                heartbeat.ready()
                await asyncio.sleep(interval)

        name = f"ingest:{self.name}"
        self.supervisor.create(run, name=name, restart=RestartPolicy(backoff_max=60.0))
        self._tasks.append(name)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the connectors within ``timeout``; idempotent (tasks belong to the supervisor)."""
        async with self._lock:
            if not self._started:
                return
            self._started = False
            deadline = time.monotonic() + timeout
            for connector in (self.kafka, self.redis, self.timescale):
                await connector.stop(max(0.1, deadline - time.monotonic()))
            self.runner.close()
            _log.info("services_stopped", deployment=self.name)

    async def connectivity_report(self, probes: Iterable[Probe] = ()) -> ConnectivityReport:
        """Run built-in, configured and given probes concurrently; never raises for a probe."""
        merged = merge_probes(merge_probes(self.builtin_probes(), self._extra_probes), probes)
        return await self.runner.run(merged, deployment=self.name)

    def supervision(self) -> dict[str, list[SupervisionView]]:
        """Return, per connector, the views of the supervised tasks that serve it."""
        views = []
        for name in self._tasks:
            info = self.supervisor.get(name)
            if info is not None:
                views.append(
                    SupervisionView(
                        task=info.name,
                        state=info.state.value,
                        restarts=info.restarts,
                        last_error_type=info.last_error_type,
                        last_error_message=info.last_error_message,
                    )
                )
        probe_views = [v for v in views if v.task.startswith("probe-loop:")]
        return {"timescale": probe_views, "redis": probe_views, "kafka": probe_views}

    def managed_manifest(self) -> dict[str, Any]:
        """Return the redaction-safe manifest of this deployment's connectors."""
        manifest = build_manifest(self.settings, self.deployment, supervision=self.supervision())
        return manifest.model_dump(mode="json")

    def failover_metadata(self) -> dict[str, Any] | None:
        """Return the failover-drill settings as JSON data, or ``None`` when drills are off."""
        drill = self.settings.failover_drill
        return drill.model_dump(mode="json") if drill.enabled else None


class InstitutionalIngestProvisioner:
    """Build the services bundle of each configured deployment."""

    def __init__(
        self,
        config: IngestSettings,
        *,
        redactor: Redactor | None = None,
        probes: Sequence[Probe] = (),
    ) -> None:
        self.config = config
        self.redactor = redactor or Redactor()
        self.redactor.add(*secrets_of(config))
        # Import errors surface here, before anything starts (exit code 2 from the CLI).
        self.probes: list[Probe] = [*load_operator_probes(config.probes.operator), *probes]

    def provision(
        self,
        ingest: IngestJob | None = None,
        event_bus: Any = None,
        supervisor: TaskSupervisor | None = None,
        *,
        deployment: str | None = None,
        state: ExporterState | None = None,
    ) -> InstitutionalIngestServices:
        """Return the (not yet started) services bundle of one deployment."""
        del event_bus  # consumed by the ingest bridge (provisioned with it)
        return InstitutionalIngestServices(
            self.config,
            self.config.deployment(deployment),
            supervisor=supervisor or TaskSupervisor(redact=self.redactor),
            state=state or ExporterState(),
            redactor=self.redactor,
            probes=self.probes,
            ingest=ingest,
        )
