"""The HTTP API: metrics, health, readiness and JSON views of the snapshot (aiohttp)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from exporter import __version__
from exporter.state import ExporterState
from exporter.telemetry.metrics import MetricsRenderer

__all__ = ["WebApp", "build_app"]

_LINKS = (
    ("/metrics", "Prometheus metrics"),
    ("/-/healthy", "liveness"),
    ("/-/ready", "readiness (first probe cycle done)"),
    ("/api/v1/manifest", "connector manifest (redacted)"),
    ("/api/v1/connectivity", "last connectivity report"),
    ("/api/v1/failover", "failover-drill settings and last result"),
)

APP_KEY = web.AppKey("ingest_web", object)


class WebApp:
    """Handlers over the shared state; nothing here touches a dependency."""

    def __init__(
        self,
        state: ExporterState,
        renderer: MetricsRenderer,
        *,
        manifests: Callable[[], Sequence[Mapping[str, Any]]],
    ) -> None:
        self.state = state
        self.renderer = renderer
        self.manifests = manifests

    async def metrics(self, request: web.Request) -> web.Response:
        """Serve the cached exposition in the format the scraper asked for."""
        body, content_type = self.renderer.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        # content_type must carry its parameters verbatim (version, charset, escaping).
        response.headers["Content-Type"] = content_type
        return response

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
        reports = [r.as_dict() for _, r in sorted(self.state.reports.items())]
        return _json({"reports": reports})

    async def failover(self, request: web.Request) -> web.Response:
        """Serve the failover-drill settings and the last drill result."""
        return _json(
            {
                "enabled": self.state.failover is not None,
                "settings": self.state.failover,
                "last_result": self.state.extra.get("last_drill"),
            }
        )

    async def landing(self, request: web.Request) -> web.Response:
        """Serve a small page linking the endpoints."""
        items = "".join(
            f'<li><a href="{html.escape(href)}">{html.escape(href)}</a> {html.escape(text)}</li>'
            for href, text in _LINKS
        )
        page = (
            "<!doctype html><html><head><title>ingest-exporter</title></head><body>"
            f"<h1>ingest-exporter {html.escape(__version__)}</h1><ul>{items}</ul></body></html>"
        )
        return web.Response(text=page, content_type="text/html")


def _json(data: Any) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, default=str) + "\n", content_type="application/json"
    )


def build_app(handlers: WebApp, *, max_body: int = 65_536) -> web.Application:
    """Return the aiohttp application (GET routes; other methods get 405, others 404)."""
    app = web.Application(client_max_size=max_body)
    app[APP_KEY] = handlers
    app.router.add_get("/", handlers.landing)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/-/healthy", handlers.healthy)
    app.router.add_get("/-/ready", handlers.ready)
    app.router.add_get("/api/v1/manifest", handlers.manifest)
    app.router.add_get("/api/v1/connectivity", handlers.connectivity)
    app.router.add_get("/api/v1/failover", handlers.failover)
    return app
