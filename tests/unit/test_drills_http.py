"""The drills' HTTP API: tokens, 401/403/409/202, records as JSON and markdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import test_utils, web
from redis.exceptions import ConnectionError as RedisConnectionError

from exporter.config import IngestSettings
from exporter.drills.http import DrillRoutes
from exporter.drills.plan import DrillPlan, plan_failover_drill
from exporter.drills.report import FailoverDrillSnapshot
from exporter.drills.service import FailoverDrills
from exporter.errors import ConnectorError, DrillBusy, DrillRefused
from exporter.reasons import Reason

from .drill_samples import fallback_snapshot, kill_snapshot, settings

Client = test_utils.TestClient[web.Request, web.Application]
TOKEN = "tok-Canary-88"


@dataclass
class FakeStore:
    """Drill records in memory."""

    records_: list[FailoverDrillSnapshot] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    broken: bool = False

    def _check(self) -> None:
        if self.broken:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")

    async def running(self) -> list[dict[str, Any]]:
        """Return the running markers."""
        self._check()
        return self.markers

    async def records(self) -> list[FailoverDrillSnapshot]:
        """Return the records."""
        self._check()
        return self.records_

    async def get(self, drill_id: str) -> FailoverDrillSnapshot | None:
        """Return one record."""
        self._check()
        return next((r for r in self.records_ if r.drill_id == drill_id), None)

    async def running_one(self, drill_id: str) -> dict[str, Any] | None:
        """Return one marker."""
        return next((m for m in self.markers if m["drill_id"] == drill_id), None)


@dataclass
class FakeDrills:
    """The daemon's drills, answering ``start`` with ``failure`` or a plan."""

    settings: IngestSettings
    store: FakeStore = field(default_factory=FakeStore)
    failure: Exception | None = None
    started: list[dict[str, Any]] = field(default_factory=list)

    def stores(self) -> list[FakeStore]:
        """Return the one store."""
        return [self.store]

    async def start(
        self, *, scenario: str, dimensions: Sequence[str], deployment: str | None, initiator: str
    ) -> DrillPlan:
        """Record the request; fail or plan it."""
        self.started.append({"scenario": scenario, "dimensions": list(dimensions)})
        if self.failure is not None:
            raise self.failure
        return plan_failover_drill(
            self.settings, scenario=scenario, dimensions=dimensions, initiator=initiator
        )


@asynccontextmanager
async def _client(drills: FakeDrills) -> AsyncIterator[Client]:
    app = web.Application()
    DrillRoutes(cast(FailoverDrills, drills), timeout=2.0).add_to(app)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


def _drills(tmp_path: Path, **changes: Any) -> FakeDrills:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return FakeDrills(settings(token_file=str(token)), **changes)


async def test_post_needs_the_token_from_the_file(tmp_path: Path) -> None:
    """No token or a wrong one: 401 with a Bearer challenge; nothing is started."""
    drills = _drills(tmp_path)
    async with _client(drills) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
            response = await client.post("/api/v1/drills", headers=headers)
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")
            assert TOKEN not in await response.text()
    assert drills.started == []


async def test_post_without_a_token_file_is_forbidden(tmp_path: Path) -> None:
    """With no failover_drill.token_file nothing can start a drill over HTTP: 403."""
    drills = FakeDrills(settings())
    async with _client(drills) as client:
        response = await client.post("/api/v1/drills", headers={"Authorization": "Bearer x"})
        assert response.status == 403
        assert "token_file" in await response.text()


async def test_a_valid_token_starts_a_drill_with_202_and_its_location(tmp_path: Path) -> None:
    """Bearer or X-Drill-Token: 202, the id, and where to read the record."""
    drills = _drills(tmp_path)
    async with _client(drills) as client:
        response = await client.post(
            "/api/v1/drills?scenario=fallback&dimension=trades",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        body = await response.json()
        other = await client.post("/api/v1/drills", headers={"X-Drill-Token": TOKEN})
    assert response.status == 202
    assert body["scenario"] == "fallback"
    assert response.headers["Location"] == body["location"] == f"/api/v1/drills/{body['drill_id']}"
    assert other.status == 202
    assert drills.started[0] == {"scenario": "fallback", "dimensions": ["trades"]}


async def test_busy_refused_and_unknown_parameters_answer_409_400_403_503(tmp_path: Path) -> None:
    """A running label is 409; a refused request 400; drills off 403; no Redis 503."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        (DrillBusy("q4-dr"), 409),
        (DrillRefused("scenario", "expected one of fallback, ..."), 400),
        (DrillRefused("failover_drill.enabled", "failover drills are disabled"), 403),
        (ConnectorError("redis", Reason.REFUSED, "cannot take the drill lock"), 503),
    ]
    for failure, status in cases:
        async with _client(_drills(tmp_path, failure=failure)) as client:
            response = await client.post("/api/v1/drills", headers=headers)
            assert response.status == status, failure
    async with _client(_drills(tmp_path)) as client:
        response = await client.post("/api/v1/drills?password=x", headers=headers)
        assert response.status == 400


async def test_records_are_served_as_json_and_markdown(tmp_path: Path) -> None:
    """The list, one record, its markdown and a running drill's marker; unknown ids 404."""
    store = FakeStore(
        records_=[fallback_snapshot(), kill_snapshot()],
        markers=[{"drill_id": "20261204T160000Z-00000001", "scenario": "observe", "phase": "arm"}],
    )
    async with _client(_drills(tmp_path, store=store)) as client:
        listing = await (await client.get("/api/v1/drills")).json()
        table = await (await client.get("/api/v1/drills?format=markdown")).text()
        record = await (await client.get("/api/v1/drills/20261204T153000Z-0a1b2c3d")).json()
        markdown = await client.get("/api/v1/drills/20261204T153000Z-0a1b2c3d?format=markdown")
        report = await markdown.text()
        running = await (await client.get("/api/v1/drills/20261204T160000Z-00000001")).json()
        unknown = await client.get("/api/v1/drills/20261204T160000Z-99999999")
        odd = await client.get("/api/v1/drills/..%2Fetc")
    # Newest first: the kill record started a second before the fallback one.
    assert [d["drill_id"] for d in listing["drills"]] == [
        "20261204T153000Z-ffeeddcc",
        "20261204T153000Z-0a1b2c3d",
    ]
    assert listing["running"][0]["phase"] == "arm"
    assert "| 20261204T160000Z-00000001 | observe | running (arm) |" in table
    assert "lost_writes 3 > objective 0" in table
    assert record["measured"]["rpo"]["lost_writes"] == 3
    assert markdown.content_type == "text/markdown"
    assert report.startswith("# Failover drill `20261204T153000Z-0a1b2c3d`")
    assert running["phase"] == "arm"
    assert unknown.status == odd.status == 404


async def test_an_unreachable_store_answers_503(tmp_path: Path) -> None:
    """Redis down: the records cannot be read, 503, and the error text is not echoed."""
    async with _client(_drills(tmp_path, store=FakeStore(broken=True))) as client:
        response = await client.get("/api/v1/drills")
        assert response.status == 503
        assert "127.0.0.1" not in await response.text()
