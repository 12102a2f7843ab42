"""The drills' HTTP API: list and read drill records, start a drill with a bearer token.

* ``GET /api/v1/drills``: the running drills and the last finished ones (every replica's,
  from Redis); ``?format=markdown`` for a table.
* ``GET /api/v1/drills/{id}``: one record as JSON, or ``?format=markdown`` for the report;
  a running drill answers its marker (phase, start).
* ``POST /api/v1/drills?scenario=S&dimension=D&deployment=NAME``: start a drill. The bearer
  token is read from ``failover_drill.token_file`` at each request (so it can be rotated):
  ``Authorization: Bearer <token>``, or ``X-Drill-Token: <token>`` when the listener's basic
  auth already uses the ``Authorization`` header. 401 without a valid token (403 when no
  token file is configured), 409 while a drill with the label runs, 202 with the drill id.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from pathlib import Path
from typing import Any

import structlog
from aiohttp import hdrs, web
from redis.exceptions import RedisError

from exporter.drills.service import FailoverDrills
from exporter.errors import ConnectorError, DrillBusy, DrillRefused

__all__ = ["TOKEN_HEADER", "DrillRoutes"]

#: The token header for listeners whose basic auth takes the ``Authorization`` header.
TOKEN_HEADER = "X-Drill-Token"  # noqa: S105 - a header name, not a credential

_log = structlog.get_logger(__name__)
_ID_CHARS = frozenset("0123456789abcdefTZ-")


class DrillRoutes:
    """Handlers of ``/api/v1/drills``; :meth:`add_to` puts them on an application."""

    def __init__(self, drills: FailoverDrills, *, timeout: float) -> None:
        self._drills = drills
        self._timeout = timeout
        self._token_file = drills.settings.failover_drill.token_file

    def add_to(self, app: web.Application) -> None:
        """Add the routes (before the application starts)."""
        app.router.add_get("/api/v1/drills", self.index)
        app.router.add_post("/api/v1/drills", self.create)
        app.router.add_get("/api/v1/drills/{drill_id}", self.read)

    async def index(self, request: web.Request) -> web.Response:
        """Answer the running drills and the last finished ones, newest first."""
        try:
            async with asyncio.timeout(self._timeout):
                running, records = await self._everything()
        except (RedisError, OSError, TimeoutError) as exc:
            return _unavailable(exc)
        if request.query.get("format") == "markdown":
            lines = ["| drill | scenario | result | started | duration | failed objectives |"]
            lines.append("|---|---|---|---|---|---|")
            lines += [
                f"| {m['drill_id']} | {m['scenario']} | running ({m['phase']}) | - | - | - |"
                for m in running
            ]
            for r in records:
                failed = "; ".join(r.failed_objectives) or r.aborted_reason or "-"
                lines.append(
                    f"| {r.drill_id} | {r.scenario} | {r.result.value} | "
                    f"{r.timestamps.started:.0f} | {r.duration_seconds:.1f} s | {failed} |"
                )
            return web.Response(text="\n".join(lines) + "\n", content_type="text/markdown")
        return _json({"running": running, "drills": [r.summary() for r in records]})

    async def _everything(self) -> tuple[list[dict[str, Any]], list[Any]]:
        running: list[dict[str, Any]] = []
        records: list[Any] = []
        for store in self._drills.stores():
            running += await store.running()
            records += await store.records()
        records.sort(key=lambda r: r.timestamps.started, reverse=True)
        return running, records

    async def read(self, request: web.Request) -> web.Response:
        """Answer one drill: its record, or its running marker; 404 when unknown."""
        drill_id = request.match_info["drill_id"]
        if len(drill_id) > 64 or not set(drill_id) <= _ID_CHARS:
            return web.Response(status=404, text="no such drill\n")
        markdown = request.query.get("format") == "markdown"
        try:
            async with asyncio.timeout(self._timeout):
                for store in self._drills.stores():
                    record = await store.get(drill_id)
                    if record is not None:
                        if markdown:
                            return web.Response(
                                text=record.to_markdown(), content_type="text/markdown"
                            )
                        return _json(record.model_dump(mode="json"))
                    marker = await store.running_one(drill_id)
                    if marker is not None:
                        if markdown:
                            text = f"Drill `{drill_id}` is running (phase {marker['phase']}).\n"
                            return web.Response(text=text, content_type="text/markdown")
                        return _json(marker)
        except (RedisError, OSError, TimeoutError) as exc:
            return _unavailable(exc)
        return web.Response(status=404, text="no such drill\n")

    async def create(self, request: web.Request) -> web.Response:
        """Start a drill: 202 with its id, 401/403 without a valid token, 409 when busy."""
        denied = await self._authorize(request)
        if denied is not None:
            return denied
        query = request.query
        unknown = set(query) - {"scenario", "dimension", "deployment"}
        if unknown:
            return web.Response(
                status=400, text="accepted parameters: scenario, dimension, deployment\n"
            )
        try:
            plan = await self._drills.start(
                scenario=query.get("scenario", "fallback"),
                dimensions=query.getall("dimension", []),
                deployment=query.get("deployment"),
                initiator=f"http:{request.remote or 'unknown'}",
            )
        except DrillBusy as exc:
            return web.Response(status=409, text=f"{exc}\n")
        except DrillRefused as exc:
            status = 403 if exc.key == "failover_drill.enabled" else 400
            return web.Response(status=status, text=f"{exc}\n")
        except ConnectorError as exc:
            return web.Response(status=503, text=f"{exc}\n")
        location = f"/api/v1/drills/{plan.drill_id}"
        body = {
            "drill_id": plan.drill_id,
            "label": plan.label,
            "scenario": plan.scenario.value,
            "location": location,
        }
        return _json(body, status=202, headers={hdrs.LOCATION: location})

    async def _authorize(self, request: web.Request) -> web.Response | None:
        if self._token_file is None:
            return web.Response(
                status=403, text="starting drills over HTTP needs failover_drill.token_file\n"
            )
        try:
            expected = (await asyncio.to_thread(_read_token, self._token_file)).encode()
        except OSError as exc:
            _log.error("drill_token_unreadable", error_type=type(exc).__name__)
            return web.Response(status=503, text="the drill token file cannot be read\n")
        given = request.headers.get(TOKEN_HEADER, "")
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if not given and scheme.lower() == "bearer":
            given = credentials.strip()
        if not expected or not hmac.compare_digest(given.encode(), expected):
            return web.Response(
                status=401,
                text="a valid drill token is required\n",
                headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="ingest-exporter drills"'},
            )
        return None


def _read_token(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2) + "\n",
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _unavailable(exc: BaseException) -> web.Response:
    _log.warning("drill_store_unavailable", error_type=type(exc).__name__)
    return web.Response(status=503, text="the drill records (Redis) cannot be read\n")
