"""The status pages' HTTP side: routes, content negotiation and the security headers.

``/``, ``/probes`` and ``/probes/{id}`` answer HTML, or JSON when the client asks for
``application/json`` first; ``/api/v1/status``, ``/api/v1/probes`` and ``/api/v1/probes/{id}``
always answer JSON. Every route answers HEAD too; authentication and TLS come from the
application's middlewares like on every other path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web

from exporter import __version__
from exporter.history import ProbeCycle
from exporter.telemetry._html import CONTENT_SECURITY_POLICY, esc, page
from exporter.telemetry.drill_pages import drills_view, render_drill, render_drills
from exporter.telemetry.status_page import render_cycle, render_probes, render_status
from exporter.telemetry.status_view import StatusView

__all__ = ["StatusPages", "wants_json"]

_MEDIA_RANGE = re.compile(r"^\s*([^;\s]+)\s*(.*)$")
_Q = re.compile(r";\s*q\s*=\s*([^;\s]*)")
_CYCLE_ID = re.compile(r"^[0-9]{1,18}$")
_DRILL_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_MAX_REFRESH = 3_600

_HTML_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    hdrs.VARY: "Accept",
}


def wants_json(accept: str | None) -> bool:
    """Tell whether an ``Accept`` header prefers ``application/json`` to ``text/html``.

    Only an explicit ``application/json`` counts (a browser's ``*/*`` gets HTML); at equal
    quality HTML wins unless JSON is the only one named.
    """
    best: dict[str, float] = {}
    for part in (accept or "").split(","):
        match = _MEDIA_RANGE.match(part)
        if match is None:
            continue
        media = match.group(1).lower()
        q = _Q.search(match.group(2))
        try:
            quality = float(q.group(1)) if q else 1.0
        except ValueError:
            quality = 0.0
        if not 0.0 <= quality <= 1.0:  # NaN too: an unreadable weight asks for nothing
            quality = 0.0
        best[media] = max(best.get(media, 0.0), quality)
    json_q = best.get("application/json", 0.0)
    html_q = max(best.get("text/html", 0.0), best.get("application/xhtml+xml", 0.0))
    return json_q > 0 and json_q > html_q


def _refresh(request: web.Request, default: int) -> int:
    """Return the auto-refresh period the URL asks for (``?refresh=0`` pauses it)."""
    raw = request.query.get("refresh")
    if raw is None or not raw.isdigit():
        return default
    return min(int(raw), _MAX_REFRESH)


def _json(data: Any, status: int = 200) -> web.Response:
    response = web.Response(
        text=json.dumps(data, indent=2, default=str) + "\n",
        content_type="application/json",
        status=status,
    )
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    response.headers[hdrs.VARY] = "Accept"
    return response


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, content_type="text/html", status=status, headers=_HTML_HEADERS)


class StatusPages:
    """Serve the status pages from a :class:`StatusView` (memory only, never a service)."""

    def __init__(self, view: StatusView, *, cycle_metrics: Callable[[ProbeCycle], str]) -> None:
        self.view = view
        self._cycle_metrics = cycle_metrics
        # Never faster than once a second, never slower than a minute by default.
        self.default_refresh = max(1, min(60, round(view.refresh_seconds)))

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the HTML routes and their ``/api/v1`` JSON twins (GET and HEAD)."""
        router.add_get("/", self.index)
        router.add_get("/probes", self.probes)
        router.add_get("/probes/{cycle}", self.cycle)
        router.add_get("/api/v1/status", self.index)
        router.add_get("/api/v1/probes", self.probes)
        router.add_get("/api/v1/probes/{cycle}", self.cycle)
        # The drills' JSON twins are the drills room's own /api/v1/drills routes.
        router.add_get("/drills", self.drills)
        router.add_get("/drills/{drill_id}", self.drill)

    @staticmethod
    def _json_wanted(request: web.Request) -> bool:
        return request.path.startswith("/api/") or wants_json(request.headers.get(hdrs.ACCEPT))

    async def index(self, request: web.Request) -> web.Response:
        """Serve the status page: connectors, checks, recent cycles, tasks, manifest."""
        view = self.view.status()
        if self._json_wanted(request):
            return _json(view)
        return _html(render_status(view, refresh=_refresh(request, self.default_refresh)))

    async def probes(self, request: web.Request) -> web.Response:
        """Serve the stored probe cycles of every deployment, newest first."""
        view = self.view.probes()
        if self._json_wanted(request):
            return _json(view)
        refresh = _refresh(request, self.default_refresh)
        return _html(render_probes(view, refresh=refresh, version=__version__))

    async def drills(self, request: web.Request) -> web.Response:
        """Serve the kept drills (every replica's): verdict, RTO/RPO against objectives."""
        view = drills_view(self.view.drills)
        if self._json_wanted(request):
            return _json(view)
        refresh = _refresh(request, self.default_refresh)
        now = self.view.clock()
        return _html(render_drills(view, now=now, refresh=refresh, version=__version__))

    async def drill(self, request: web.Request) -> web.Response:
        """Serve one drill's report as HTML (its record as JSON); 404 once it is not kept."""
        drill_id = request.match_info["drill_id"]
        source = self.view.drills
        record = source.get(drill_id) if source is not None and _DRILL_ID.match(drill_id) else None
        if record is None:
            message = "no such drill among the kept ones"
            if self._json_wanted(request):
                return _json({"error": message}, status=404)
            return self._not_found(f'<p>{message}. <a href="/drills">All drills</a>.</p>')
        if self._json_wanted(request):
            return _json(record.model_dump(mode="json"))
        return _html(render_drill(record, now=self.view.clock(), version=__version__))

    def _not_found(self, body: str) -> web.Response:
        text = page(
            "not found · ingest-exporter", body, version=__version__, generated_at=self.view.clock()
        )
        return _html(text, status=404)

    async def cycle(self, request: web.Request) -> web.Response:
        """Serve one cycle: its checks, log lines, metrics and trace id (404 once forgotten)."""
        raw = request.match_info["cycle"]
        view = self.view.cycle(int(raw), self._cycle_metrics) if _CYCLE_ID.match(raw) else None
        json_wanted = self._json_wanted(request)
        if view is None:
            message = "no such probe cycle (ids count up; old ones are forgotten)"
            if json_wanted:
                return _json({"error": message}, status=404)
            shown = esc(raw) if _CYCLE_ID.match(raw) else "?"
            return self._not_found(
                f'<p>Probe cycle #{shown}: {message}. <a href="/probes">All cycles</a>.</p>'
            )
        if json_wanted:
            return _json(view)
        return _html(render_cycle(view, version=__version__))
