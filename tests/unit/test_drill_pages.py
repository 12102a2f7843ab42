from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import test_utils, web
from prometheus_client import CollectorRegistry

from exporter.drills.recent import RecentDrills
from exporter.drills.record import DrillResult, Measured, RpoReading, Timestamps
from exporter.state import ExporterState
from exporter.telemetry._html import CONTENT_SECURITY_POLICY
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer
from exporter.telemetry.web import WebApp, build_app

from .drill_samples import T0, fallback_snapshot, kill_snapshot

Client = test_utils.TestClient[web.Request, web.Application]
KILL_ID = "20261204T153000Z-0a1b2c3d"
FALLBACK_ID = "20261204T153000Z-ffeeddcc"


@asynccontextmanager
async def serve(drills: RecentDrills | None) -> AsyncIterator[Client]:
    """Serve the pages with ``drills`` as the in-memory drill history; yield a client."""
    state = ExporterState()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(state))
    handlers = WebApp(state, MetricsRenderer(registry, state), manifests=list, drills=drills)
    async with test_utils.TestClient(test_utils.TestServer(build_app(handlers))) as client:
        yield client


def _recent() -> RecentDrills:
    drills = RecentDrills(enabled=True)
    drills.observe(kill_snapshot())
    drills.observe(fallback_snapshot(timestamps=Timestamps(started=T0 + 60)))
    return drills


def test_recent_drills_keep_the_newest_and_drop_finished_markers() -> None:
    """Newest first, bounded, a record seen again replaces itself; markers of ended drills go."""
    drills = RecentDrills(enabled=True, keep=2)
    for i in range(3):
        drills.observe(kill_snapshot(drill_id=f"d-{i}", timestamps=Timestamps(started=T0 + i)))
    drills.observe(kill_snapshot(drill_id="d-2", timestamps=Timestamps(started=T0 + 2)))
    assert [r.drill_id for r in drills.records()] == ["d-2", "d-1"]
    assert drills.get("d-0") is None
    drills.set_running([{"drill_id": "d-2", "phase": "post"}, {"drill_id": "d-9", "phase": "x"}])
    assert drills.running() == [{"drill_id": "d-9", "phase": "x"}]


async def test_status_page_lists_drills_with_rto_and_rpo_against_objectives() -> None:
    """`/` shows the newest drills: result, measured numbers vs objectives, why it failed."""
    drills = _recent()
    drills.set_running(
        [{"drill_id": "d-run", "scenario": "switchover", "deployment": "eu", "phase": "detect",
          "started": T0 + 90}]
    )  # fmt: skip
    async with serve(drills) as client:
        page = await (await client.get("/")).text()
        data = await (await client.get("/api/v1/status")).json()
    rows = re.findall(r'<tr class="drill" data-drill="([^"]+)" data-result="(\w+)"', page)
    assert rows == [(FALLBACK_ID, "ok"), (KILL_ID, "fail")]
    kill = page.split(f'data-drill="{KILL_ID}"')[1].split("</tr>")[0]
    assert '<td class="num" data-label="rto">1.30 s / 10 s</td>' in kill
    assert '<span class="over">3</span> / 0' in kill  # lost writes over the objective
    assert "lost_writes 3 &gt; objective 0" in kill
    assert f'href="/drills/{KILL_ID}"' in kill
    assert "d-run: switchover on eu, phase detect" in page
    assert data["drills"]["enabled"] is True
    assert [d["drill_id"] for d in data["drills"]["drills"]] == [FALLBACK_ID, KILL_ID]
    assert data["drills"]["drills"][1]["rpo_lost_writes"] == 3
    assert data["drills"]["drills"][1]["objectives"]["rto_seconds"] == 10.0


async def test_drill_report_page_renders_the_markdown_report() -> None:
    """/drills/{id} is the drill's markdown report as HTML, escaped, under the strict CSP."""
    hostile = kill_snapshot(aborted_reason="<script>alert(1)</script>")
    drills = RecentDrills(enabled=True)
    drills.observe(hostile)
    async with serve(drills) as client:
        response = await client.get(f"/drills/{KILL_ID}")
        page = await response.text()
        as_json: Any = await (
            await client.get(f"/drills/{KILL_ID}", headers={"Accept": "application/json"})
        ).json()
    assert response.status == 200
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert f"<h2>Failover drill <code>{KILL_ID}</code>: <strong>FAIL</strong></h2>" in page
    assert "<h3>Measurements</h3>" in page
    assert "<td>RPO: lost writes</td><td>3</td><td>0</td>" in page
    assert "<h3>Timeline</h3>" in page
    assert "Successfully failed over" in page  # the injection's output, in a pre block
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert f'href="/api/v1/drills/{KILL_ID}?format=markdown"' in page
    assert as_json["drill_id"] == KILL_ID
    assert as_json["result"] == "fail"


async def test_drills_page_lists_every_kept_drill_and_answers_json() -> None:
    """/drills lists the kept drills newest first; JSON on request; unknown ids 404."""
    drills = _recent()
    drills.observe(
        kill_snapshot(
            drill_id="20261204T160000Z-aborted1",
            result=DrillResult.ABORTED,
            failed_objectives=[],
            aborted_reason="pre-check: replica not streaming",
            timestamps=Timestamps(started=T0 + 120),
            measured=Measured(rpo=RpoReading()),
        )
    )
    async with serve(drills) as client:
        page = await (await client.get("/drills")).text()
        data: Any = await (
            await client.get("/drills", headers={"Accept": "application/json"})
        ).json()
        missing = await client.get("/drills/20991231T000000Z-00000000")
        odd = await client.get("/drills/%3Cb%3E")
        odd_text = await odd.text()
    ids = re.findall(r'<tr class="drill" data-drill="([^"]+)"', page)
    assert ids == ["20261204T160000Z-aborted1", FALLBACK_ID, KILL_ID]
    assert "pre-check: replica not streaming" in page
    assert [d["result"] for d in data["drills"]] == ["aborted", "ok", "fail"]
    assert missing.status == 404
    assert odd.status == 404
    assert "<b>" not in odd_text


@pytest.mark.parametrize("drills", [None, RecentDrills(enabled=False)])
async def test_drills_off_say_so(drills: RecentDrills | None) -> None:
    """With drills off the pages say so instead of showing an empty history."""
    async with serve(drills) as client:
        index = await (await client.get("/")).text()
        listing = await (await client.get("/drills")).text()
    for page in (index, listing):
        assert "Failover drills are off (failover_drill.enabled)." in page
