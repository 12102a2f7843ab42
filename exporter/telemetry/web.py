"""The HTTP API: metrics, health, readiness, JSON views and ``/probe`` (aiohttp).

Every handler reads the shared snapshot except ``/probe``, which runs one deployment's
probes on demand (the blackbox-exporter pattern: one scrape job, one target per deployment).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import hdrs, web
from aiohttp.web import ContentCoding
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from exporter.history import ProbeCycle
from exporter.metricspec import MetricSpec, family, spec
from exporter.probes.base import ConnectivityReport, ProbeResult, Status
from exporter.reasons import Reason
from exporter.state import ExporterState
from exporter.telemetry._exposition import negotiate
from exporter.telemetry.drill_pages import DrillSource
from exporter.telemetry.metrics import EXPOSED_NAMES, MEASUREMENTS, IngestCollector, MetricsRenderer
from exporter.telemetry.status_routes import StatusPages
from exporter.telemetry.status_view import StatusView
from exporter.telemetry.webconfig import AUTH_REALM, BasicAuth, WebConfig

__all__ = [
    "PROBE_METRICS",
    "SCRAPE_TIMEOUT_HEADER",
    "SCRAPE_TIMEOUT_MARGIN",
    "ProbeTarget",
    "WebApp",
    "build_app",
    "scrape_budget",
]

#: The header Prometheus sends with every scrape: the scrape timeout in seconds.
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
#: Seconds kept back from that timeout to render and send the answer.
SCRAPE_TIMEOUT_MARGIN = 0.5

#: Families only ``/probe`` publishes (as the blackbox exporter's ``probe_*``).
PROBE_METRICS: tuple[MetricSpec, ...] = (
    spec("ingest_probe_success", "gauge", "deployment", "1 when every check of this probe passed."),
    spec(
        "ingest_probe_target_duration_seconds",
        "gauge",
        "deployment",
        "Wall time of this on-demand probe of the deployment.",
    ),
)
# The collector families that describe one probe (counters since start would be wrong here).
_PROBE_FAMILIES = frozenset(
    {
        "ingest_connector",
        "ingest_connector_up",
        "ingest_check_up",
        "ingest_check_status",
        "ingest_check_reason",
    }
    | set(MEASUREMENTS)
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ProbeTarget(Protocol):
    """One deployment ``/probe`` can probe (an ``InstitutionalIngestServices``)."""

    def connectivity_report(self) -> Awaitable[ConnectivityReport]:
        """Run the deployment's probes now and return the report."""
        ...


def scrape_budget(header: str | None, default: float) -> float:
    """Return the seconds a probe may take: the scrape timeout minus a margin, or ``default``."""
    try:
        timeout = float(header) if header is not None else math.nan
    except ValueError:
        timeout = math.nan
    if not math.isfinite(timeout) or timeout <= 0:
        return default
    # A short timeout keeps at least half of itself rather than going to zero.
    return max(timeout - SCRAPE_TIMEOUT_MARGIN, timeout / 2)


class WebApp:
    """Handlers over the shared state; only ``/probe`` touches a dependency."""

    def __init__(
        self,
        state: ExporterState,
        renderer: MetricsRenderer,
        *,
        manifests: Callable[[], Sequence[Mapping[str, Any]]],
        targets: Mapping[str, ProbeTarget] | None = None,
        probe_timeout: float = 5.0,
        tasks: Callable[[], Iterable[Any]] = tuple,
        refresh_seconds: float = 15.0,
        drills: DrillSource | None = None,
        config_warnings: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.state = state
        self.renderer = renderer
        self.manifests = manifests
        self.targets: Mapping[str, ProbeTarget] = targets or {}
        self.probe_timeout = probe_timeout
        view = StatusView(
            state,
            manifests=manifests,
            tasks=tasks,
            targets=self.targets,
            refresh_seconds=refresh_seconds,
            drills=drills,
            warnings=config_warnings,
        )
        self.pages = StatusPages(view, cycle_metrics=self._cycle_metrics)
        # One probe run per target at a time: concurrent scrapes share it.
        self._inflight: dict[str, asyncio.Task[ConnectivityReport]] = {}

    async def metrics(self, request: web.Request) -> web.Response:
        """Serve the cached exposition in the format the scraper asked for."""
        body, content_type = self.renderer.render(request.headers.get(hdrs.ACCEPT))
        return _exposition(request, body, content_type)

    async def healthy(self, request: web.Request) -> web.Response:
        """Answer liveness: the process serves HTTP (dependencies are not consulted)."""
        return web.Response(text="Healthy.\n")

    async def ready(self, request: web.Request) -> web.Response:
        """Answer readiness: 200 once every deployment finished a probe cycle, else 503."""
        if self.state.ready:
            return web.Response(text="Ready.\n")
        return web.Response(status=503, text="Not ready: first probe cycle not finished.\n")

    async def manifest(self, request: web.Request) -> web.Response:
        """Serve the redaction-safe manifest of every deployment."""
        return _json({"deployments": list(self.manifests())})

    async def connectivity(self, request: web.Request) -> web.Response:
        """Serve the last connectivity report of every deployment."""
        reports = [r.as_dict(EXPOSED_NAMES) for _, r in sorted(self.state.reports.items())]
        return _json({"reports": reports})

    async def failover(self, request: web.Request) -> web.Response:
        """Serve the failover-drill settings (what a drill tool needs; none runs here)."""
        return _json({"enabled": self.state.failover is not None, "settings": self.state.failover})

    async def probe(self, request: web.Request) -> web.Response:
        """Probe the deployment named by ``?target=`` now; answer only its series.

        Credentials come from the configuration by deployment name; the URL carries nothing
        else, so any other query parameter is refused rather than silently ignored.
        """
        known = ", ".join(sorted(self.targets)) or "none configured"
        if set(request.query) - {"target"}:
            return _bad(f"only the target parameter is accepted; known targets: {known}")
        names = request.query.getall("target", [])
        if len(names) != 1 or not names[0]:
            return _bad(f"expected exactly one ?target=NAME; known targets: {known}")
        name = names[0]
        target = self.targets.get(name)
        if target is None:
            shown = f" {name!r}" if _NAME.match(name) else ""  # never echo odd input
            return _bad(f"unknown target{shown}; known targets: {known}")
        default = self.probe_timeout + SCRAPE_TIMEOUT_MARGIN
        budget = scrape_budget(request.headers.get(SCRAPE_TIMEOUT_HEADER), default)
        report = await self._probe_within(name, target, budget)
        registry = CollectorRegistry(auto_describe=False)
        connectors = tuple(c for c in self.state.connectors if c.deployment == name)
        registry.register(_ProbeCollector(report, connectors))
        encoder, content_type = negotiate(request.headers.get(hdrs.ACCEPT))
        return _exposition(request, encoder(registry), content_type)

    async def _probe_within(
        self, name: str, target: ProbeTarget, budget: float
    ) -> ConnectivityReport:
        started, t0 = time.time(), time.perf_counter()
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(_report(target), name=f"probe-target:{name}")
            self._inflight[name] = task
            task.add_done_callback(lambda done: self._finished(name, done))
        try:
            async with asyncio.timeout(budget):
                # Shielded: a timed-out scrape leaves the run to finish for the next one.
                return await asyncio.shield(task)
        except TimeoutError:
            return self._timed_out(name, budget, started, time.perf_counter() - t0)

    def _finished(self, name: str, task: asyncio.Task[ConnectivityReport]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    def _timed_out(
        self, name: str, budget: float, started: float, elapsed: float
    ) -> ConnectivityReport:
        names = tuple(c.connector for c in self.state.connectors if c.deployment == name)
        result = [
            ProbeResult(
                connector=connector,
                check="probe",
                status=Status.DOWN,
                reason=Reason.TIMEOUT,
                latency_seconds=elapsed,
                detail=f"no answer within the scrape budget of {budget:g}s",
                checked_at=time.time(),
            )
            for connector in names
        ]
        return ConnectivityReport(name, started, elapsed, tuple(result), connectors=names)

    async def close(self, app: web.Application) -> None:
        """Cancel on-demand probes still running (an ``on_cleanup`` hook)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _cycle_metrics(self, cycle: ProbeCycle) -> str:
        """Return the series one stored cycle produced, as ``/probe`` would have served them."""
        registry = CollectorRegistry(auto_describe=False)
        deployment = cycle.report.deployment
        connectors = tuple(c for c in self.state.connectors if c.deployment == deployment)
        registry.register(_ProbeCollector(cycle.report, connectors))
        return generate_latest(registry).decode()


async def _report(target: ProbeTarget) -> ConnectivityReport:
    return await target.connectivity_report()


class _ProbeCollector(Collector):
    """The series of one on-demand probe: the snapshot families of it, plus success/duration."""

    def __init__(self, report: ConnectivityReport, connectors: Sequence[Any]) -> None:
        self._state = ExporterState()
        self._state.set_connectors(tuple(connectors))
        self._state.record(report)
        self._report = report

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for collected in IngestCollector(self._state).collect():
            if collected.name in _PROBE_FAMILIES and collected.samples:
                yield collected
        success, duration = (family(s) for s in PROBE_METRICS)
        deployment = self._report.deployment
        ok = self._report.ok and bool(self._report.results)
        success.add_metric([deployment], 1.0 if ok else 0.0)
        duration.add_metric([deployment], self._report.duration_seconds)
        yield success
        yield duration


def _exposition(request: web.Request, body: bytes, content_type: str) -> web.Response:
    response = web.Response(body=body)
    # Prometheus scrapes with "Accept-Encoding: gzip". Only gzip, never deflate (aiohttp's
    # own pick when a client offers both), and not when the client says gzip;q=0.
    accepted = request.headers.get(hdrs.ACCEPT_ENCODING, "").lower().replace(" ", "")
    offers = {part.split(";")[0]: part for part in accepted.split(",")}
    if "gzip" in offers and not offers["gzip"].endswith(("q=0", "q=0.0", "q=0.00", "q=0.000")):
        response.enable_compression(ContentCoding.gzip)
    # content_type must carry its parameters verbatim (version, charset, escaping).
    response.headers[hdrs.CONTENT_TYPE] = content_type
    return response


def _json(data: Any) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, default=str) + "\n", content_type="application/json"
    )


def _bad(message: str) -> web.Response:
    return web.Response(status=400, text=message + "\n")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _headers_middleware(headers: Mapping[str, str]) -> Any:
    @web.middleware
    async def add_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(headers)
            raise
        response.headers.update(headers)
        return response

    return add_headers


def _body_limit_middleware(max_body: int, read_timeout: float) -> Any:
    @web.middleware
    async def bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        # No route takes a body; one is read (and dropped) only up to the limit and within
        # the read timeout, so a client cannot make the server buffer or wait for more.
        if request.body_exists:
            length = request.content_length
            if length is not None and length > max_body:
                raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=length)
            size = 0
            try:
                async with asyncio.timeout(read_timeout):
                    while chunk := await request.content.readany():
                        size += len(chunk)
                        if size > max_body:
                            raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=size)
            except TimeoutError:
                raise web.HTTPRequestTimeout(headers={hdrs.CONNECTION: "close"}) from None
        return await handler(request)

    return bounded_body


def _auth_middleware(auth: BasicAuth) -> Any:
    challenge = f'Basic realm="{AUTH_REALM}"'

    @web.middleware
    async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Every path is protected, /-/healthy included, as in exporter-toolkit.
        if not await auth.verify(request.headers.get(hdrs.AUTHORIZATION)):
            return web.Response(
                status=401, text="Unauthorized.\n", headers={hdrs.WWW_AUTHENTICATE: challenge}
            )
        return await handler(request)

    return basic_auth


def build_app(
    handlers: WebApp,
    *,
    max_body: int = 65_536,
    web_config: WebConfig | None = None,
    read_timeout: float = 10.0,
) -> web.Application:
    """Return the aiohttp application (GET/HEAD routes; other methods 405, other paths 404).

    A request body not read in full within ``read_timeout`` seconds answers 408.
    """
    config = web_config or WebConfig()
    middlewares = [_body_limit_middleware(max_body, read_timeout)]
    if config.http_server_config.headers:
        middlewares.insert(0, _headers_middleware(config.http_server_config.headers))
    auth = config.basic_auth()
    if auth is not None:
        middlewares.append(_auth_middleware(auth))
    app = web.Application(client_max_size=max(max_body, 1), middlewares=middlewares)
    app.on_cleanup.append(handlers.close)
    handlers.pages.add_routes(app.router)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/-/healthy", handlers.healthy)
    app.router.add_get("/-/ready", handlers.ready)
    app.router.add_get("/api/v1/manifest", handlers.manifest)
    app.router.add_get("/api/v1/connectivity", handlers.connectivity)
    app.router.add_get("/api/v1/failover", handlers.failover)
    app.router.add_get("/probe", handlers.probe)
    return app
