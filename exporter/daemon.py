"""The daemon's lifecycle: provision -> listen -> start -> wait for a signal -> graceful stop."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter._cleanup import shielded
from exporter.config import IngestSettings, build_redactor
from exporter.drills.http import DrillRoutes
from exporter.drills.service import FailoverDrills
from exporter.errors import ListenError
from exporter.history import ProbeHistory
from exporter.manifest import connector_infos
from exporter.probes.base import Probe
from exporter.provisioner import InstitutionalIngestProvisioner, InstitutionalIngestServices
from exporter.redaction import Redactor
from exporter.state import ExporterState
from exporter.supervisor import TaskSupervisor
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer, runtime_registry
from exporter.telemetry.tracing import configure_tracing, shutdown_tracing, tracer_for
from exporter.telemetry.web import WebApp, build_app
from exporter.telemetry.webconfig import WebConfig, load_web_config

__all__ = ["Daemon"]

_log = structlog.get_logger(__name__)

#: Upper bound on a graceful stop (listener, jobs, connectors, span export).
SHUTDOWN_TIMEOUT = 10.0
#: Share of the stop budget for the listener: in-flight requests get this long to finish,
#: then they are cancelled (an on-demand probe must not outlive the connectors it uses).
_WEB_SHARE = 0.25
#: Longest wait for the unread rest of a refused request body, in seconds.
_LINGER = 1.0
#: Share for running drills to stop their injection command and store their record.
_DRILL_SHARE = 0.35
#: The stop bounds each of its steps; the cleanup helper's own bound is only a backstop.
_STOP_SLACK = 1.0


class Daemon:
    """Own every long-lived object of one exporter process."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        redactor: Redactor | None = None,
        probes: Sequence[Probe] = (),
        config_warnings: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.settings = settings
        #: What the CLI warned about at start, shown on the status page.
        self.config_warnings = config_warnings
        # Read first: a bad web config fails before anything is built (exit 2 from the CLI).
        config_file = settings.web.config_file
        self.web_config = load_web_config(config_file) if config_file else WebConfig()
        self.redactor = redactor or build_redactor(settings)
        history = settings.history
        self.state = ExporterState(
            ProbeHistory(cycles=history.cycles, failed_cycles=history.failed_cycles)
        )
        self.supervisor = TaskSupervisor(redact=self.redactor, on_change=self.state.touch)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(IngestCollector(self.state, tasks=self.supervisor.describe))
        # process_* and python_*: the daemon's own, rendered fresh on each scrape.
        self.runtime_registry = runtime_registry()
        self.renderer = MetricsRenderer(self.registry, self.state, live=self.runtime_registry)
        # From the OTEL_* variables; None (a no-op tracer) when OTEL_SDK_DISABLED=true.
        self.tracer_provider = configure_tracing(redactor=self.redactor)
        self.provisioner = InstitutionalIngestProvisioner(
            settings,
            redactor=self.redactor,
            probes=probes,
            tracer=tracer_for(self.tracer_provider),
        )
        self.services: list[InstitutionalIngestServices] = [
            self.provisioner.provision(
                supervisor=self.supervisor, deployment=d.name, state=self.state
            )
            for d in settings.deployments
        ]
        self.drills = FailoverDrills(
            settings,
            {services.name: services for services in self.services},
            state=self.state,
            tracer=self.provisioner.tracer,
        )
        self.stop_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def manifests(self) -> list[dict[str, Any]]:
        """Return every deployment's manifest."""
        return [services.managed_manifest() for services in self.services]

    async def start(self) -> None:
        """Bind the listener first (so a bad address fails fast), then start the services."""
        self.state.set_connectors(connector_infos(self.settings))
        self.state.set_failover(self.services[0].failover_metadata())
        handlers = WebApp(
            self.state,
            self.renderer,
            manifests=self.manifests,
            targets={services.name: services for services in self.services},
            probe_timeout=self.settings.probes.timeout_seconds,
            tasks=self.supervisor.describe,
            refresh_seconds=self.settings.probes.interval_seconds,
            drills=self.drills.recent,
            config_warnings=self.config_warnings,
        )
        app = build_app(
            handlers,
            max_body=self.settings.web.max_request_body_bytes,
            web_config=self.web_config,
            read_timeout=self.settings.web.read_header_timeout_seconds,
        )
        DrillRoutes(self.drills, timeout=self.settings.probes.timeout_seconds).add_to(app)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            # aiohttp arms this timer when a connection opens and after each response, and it
            # closes the connection if no complete request head arrived by then: it is the
            # header read timeout (a client sending a byte a second is not held), and idle
            # keep-alive connections get the same bound.
            keepalive_timeout=self.settings.web.read_header_timeout_seconds,
            # After an answer to a request whose body was not read (408, 413), aiohttp reads
            # and drops the rest for this long (default 10 s) so the client sees the answer.
            lingering_time=min(_LINGER, self.settings.web.read_header_timeout_seconds),
            # Below the stop's share for the listener, so the cleanup hooks still run.
            shutdown_timeout=SHUTDOWN_TIMEOUT * _WEB_SHARE * 0.8,
        )
        await self._runner.setup()
        web_settings = self.settings.web
        site = web.TCPSite(
            self._runner,
            web_settings.host,
            web_settings.port,
            reuse_address=True,
            ssl_context=self.web_config.ssl_context(),
        )
        try:
            await site.start()
        except OSError as exc:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            raise ListenError(web_settings.listen_address, exc.strerror or str(exc)) from None
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or ()
        self.port = sockets[0].getsockname()[1] if sockets else web_settings.port
        for services in self.services:
            await services.start()
        self.drills.start_jobs(self.supervisor)
        _log.info(
            "exporter_started",
            version=__version__,
            listen_address=f"{web_settings.host}:{self.port}",
            tls=self.web_config.tls_server_config.enabled,
            basic_auth=bool(self.web_config.basic_auth_users),
            deployments=[s.name for s in self.services],
        )

    async def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop the listener, tasks and services, all within ``timeout``.

        The listener goes first: a request served after the connectors closed (an on-demand
        ``/probe``) would open new clients that nothing closes any more.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await shielded(
                runner.cleanup(), timeout=max(0.1, timeout * _WEB_SHARE), event="web_stop"
            )
        # A running drill ends aborted and stores its record while Redis is still open.
        await self.drills.stop(timeout=timeout * _DRILL_SHARE)
        clean = await self.supervisor.cancel_all(timeout=max(0.1, deadline - time.monotonic()) / 2)
        # Concurrently, each with the whole remaining budget; one failing stop skips no other.
        remaining = max(0.1, deadline - time.monotonic())
        stops = await asyncio.gather(
            *(services.stop(remaining) for services in self.services), return_exceptions=True
        )
        for services, outcome in zip(self.services, stops, strict=True):
            if isinstance(outcome, Exception):
                error_type = type(outcome).__name__
                _log.error("services_stop_failed", deployment=services.name, error_type=error_type)
        # Last, so the spans of the final (cancelled) cycle are flushed too.
        provider, self.tracer_provider = self.tracer_provider, None
        await shutdown_tracing(provider, timeout=max(0.1, deadline - time.monotonic()))
        _log.info(
            "exporter_stopped",
            duration_seconds=round(time.monotonic() - t0, 3),
            tasks_clean=clean,
        )

    async def run(
        self, *, install_signals: bool = True, force_exit: Callable[[], object] | None = None
    ) -> None:
        """Start, serve until SIGTERM/SIGINT (or ``stop_event``), then stop gracefully.

        Args:
            install_signals: Route SIGTERM and SIGINT to :attr:`stop_event`.
            force_exit: Called on a second SIGINT while the stop runs; it must end the
                process at once (the CLI exits with 130). Without it a second SIGINT is
                only logged: an embedding program decides how it exits.
        """
        loop = asyncio.get_running_loop()
        if install_signals:
            self._install_signals(loop, force_exit)
        try:
            await self.start()
            await self.stop_event.wait()
            _log.info("exporter_stopping")
        finally:
            # Finished even if run() is cancelled (then re-raised); stop() bounds itself.
            await shielded(
                self.stop(), timeout=SHUTDOWN_TIMEOUT + _STOP_SLACK, event="exporter_stop"
            )
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    def _install_signals(
        self, loop: asyncio.AbstractEventLoop, force_exit: Callable[[], object] | None
    ) -> None:
        def on_signal(sig: signal.Signals) -> None:
            repeated = self.stop_event.is_set()
            # State first: logging may fail (a closed stderr) and must not lose the stop.
            self.stop_event.set()
            if repeated and sig is signal.SIGINT and force_exit is not None:
                # A second Ctrl-C means "now": skip the graceful path. Raising here instead
                # would unwind through asyncio.run, which waits for every task to end.
                _log.warning("exporter_forced_exit")
                force_exit()
            _log.info("signal_received", signal=sig.name)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
