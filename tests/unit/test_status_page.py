from __future__ import annotations

import base64
import hashlib
import html
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bcrypt
import pytest
from aiohttp import test_utils, web
from prometheus_client import CollectorRegistry

from exporter.config import build_institutional_ingest_config, explain_configuration
from exporter.history import ProbeHistory
from exporter.probes.base import ConnectivityReport, Measurement, ProbeResult, Status
from exporter.reasons import Reason
from exporter.state import ConnectorInfo, ExporterState
from exporter.supervisor import TaskInfo, TaskState
from exporter.telemetry._html import CONTENT_SECURITY_POLICY, STYLESHEET, age, duration
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer
from exporter.telemetry.status_routes import wants_json
from exporter.telemetry.status_view import config_warnings
from exporter.telemetry.web import WebApp, build_app
from exporter.telemetry.webconfig import WebConfig

Client = test_utils.TestClient[web.Request, web.Application]
CONNECTORS = ("timescale", "redis", "kafka")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _report(at: float, *, down: bool = False, detail: str = "") -> ConnectivityReport:
    results = tuple(
        ProbeResult(
            connector=c,
            check="ping",
            status=Status.DOWN if down and c == "redis" else Status.OK,
            reason=Reason.REFUSED if down and c == "redis" else None,
            latency_seconds=0.0015,
            detail=detail if c == "redis" else "",
            checked_at=at,
            measurements=(
                Measurement("ingest_redis_memory_used_bytes", 1024.0),
                Measurement("ingest_redis_evicted_keys", 3.0),
            )
            if c == "redis" and not down
            else (),
        )
        for c in CONNECTORS
    )
    return ConnectivityReport("eu", at, 0.004, results, trace_id=TRACE, connectors=CONNECTORS)


def _state() -> ExporterState:
    state = ExporterState()
    state.set_connectors(
        tuple(ConnectorInfo("eu", c, c, f"{c}://user:***@db.internal") for c in CONNECTORS)
    )
    return state


TASKS = [
    TaskInfo("probe-loop:eu", TaskState.RUNNING, ready=True, started_at=1_000.0),
    TaskInfo(
        "kafka-bridge:eu",
        TaskState.BACKOFF,
        restarts=3,
        last_error_type="KafkaConnectionError",
        last_error_message="Unable to bootstrap from [('127.0.0.1', 1)]",
    ),
]


@asynccontextmanager
async def serve(
    state: ExporterState,
    *,
    web_config: WebConfig | None = None,
    warnings: list[dict[str, Any]] | None = None,
) -> AsyncIterator[Client]:
    """Serve the app over ``state`` with two tasks and a manifest; yield a client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(state))
    handlers = WebApp(
        state,
        MetricsRenderer(registry, state),
        manifests=lambda: [{"deployment": "eu", "connectors": [{"name": "redis"}]}],
        tasks=lambda: TASKS,
        refresh_seconds=5.0,
        config_warnings=warnings or (),
    )
    app = build_app(handlers, web_config=web_config)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


def _row(page: str, css: str, **attrs: str) -> str:
    """Return the first ``<tr class=css ...>`` row whose data attributes match."""
    for match in re.finditer(rf'<tr class="{css}"[^>]*>.*?</tr>', page):
        row = match.group(0)
        if all(f'data-{k}="{v}"' in row for k, v in attrs.items()):
            return row
    raise AssertionError(f"no {css} row with {attrs}")


async def test_status_page_shows_status_reason_since_and_sparkline() -> None:
    """A connector row has status, reason, latency, since (UTC and age) and a latency sparkline."""
    state = _state()
    now = time.time()
    state.record(_report(now - 30))
    state.record(_report(now - 20, down=True, detail="Error 111 connecting"))
    state.record(_report(now - 10, down=True, detail="Error 111 connecting"))
    async with serve(state) as client:
        response = await client.get("/")
        page = await response.text()
    assert response.status == 200
    assert response.content_type == "text/html"
    redis = _row(page, "connector", connector="redis")
    assert 'data-status="down"' in redis
    assert '<td class="reason" data-label="reason">refused</td>' in redis
    since = re.search(r'<time datetime="([^"]+)">([^<]+)</time>', redis)
    assert since is not None
    assert since.group(2).endswith(" UTC")
    assert time.strftime("%H:%M:%S", time.gmtime(now - 20)) in since.group(2)
    assert "(20 s ago)" in redis or "(21 s ago)" in redis
    assert "first probe" not in redis  # it went down after the first cycle
    assert "first probe" in _row(page, "connector", connector="kafka")
    assert redis.count("<polyline") == 1
    assert redis.count("<circle") == 2  # the two cycles it was down
    assert "redis://user:***@db.internal" in redis
    check = _row(page, "check", connector="redis", check="ping")
    assert "Error 111 connecting" in check
    assert 'data-status="ok"' in _row(page, "connector", connector="kafka")
    cycles = re.findall(r'<tr class="cycle" data-cycle="(\d+)" data-result="(\w+)"', page)
    assert cycles == [("3", "failed"), ("2", "failed"), ("1", "ok")]
    assert 'href="/probes/3"' in page
    assert "Readiness" in page
    assert "redis not ok" in page.split("</title>")[0]


async def test_status_page_shows_tasks_manifest_links_and_readiness() -> None:
    """Tasks (state, restarts, last error), the manifest and the endpoint links are shown."""
    state = _state()
    async with serve(state) as client:
        waiting = await (await client.get("/")).text()
        state.record(_report(time.time()))
        page = await (await client.get("/")).text()
    assert "not ready" in waiting
    assert "Waiting for the first probe cycle." in waiting
    assert "not ready" not in page
    bridge = _row(page, "task", task="kafka-bridge:eu")
    assert 'data-state="backoff"' in bridge
    assert '<td class="num" data-label="restarts">3</td>' in bridge
    assert "KafkaConnectionError: Unable to bootstrap from [(&#x27;127.0.0.1&#x27;, 1)]" in bridge
    assert "&quot;deployment&quot;: &quot;eu&quot;" in page  # the manifest, escaped
    for path in ("/metrics", "/probes", "/api/v1/status", "/api/v1/manifest", "/-/ready"):
        assert f'href="{path}"' in page


async def test_status_page_repeats_the_configuration_warnings_of_the_start() -> None:
    """A typo'd variable, an endpoint left at its default and an exposed secret file are shown."""
    environ = {"REDIS_URLS": "redis://cache:6379/0"}
    settings = build_institutional_ingest_config(environ=environ)
    report = explain_configuration(settings, environ=environ)
    warnings = config_warnings(report, ["REDIS_URL_FILE"])
    async with serve(_state(), warnings=warnings) as client:
        page = await (await client.get("/")).text()
        view = await (await client.get("/api/v1/status")).json()
        async with serve(_state()) as quiet:
            calm = await (await quiet.get("/")).text()
    assert view["config_warnings"] == warnings
    unknown = {"kind": "unknown_variable", "subject": "REDIS_URLS", "closest": "REDIS_URL"}
    assert unknown.items() <= warnings[0].items()
    shown = re.findall(r'<li class="config-warning" data-kind="([a-z_]+)">(.*?)</li>', page)
    assert [kind for kind, _ in shown] == [
        "unknown_variable",
        "default_endpoint",
        "default_endpoint",
        "default_endpoint",
        "secret_file_world_readable",
    ]
    assert "<code>REDIS_URLS</code>: unknown variable, ignored; did you mean REDIS_URL?" in page
    assert "<code>local.kafka</code>: 127.0.0.1:59092 is the embedded" in page
    # The default PostgreSQL URL carries the local stack's password: shown masked only.
    assert "<code>local.timescale</code>: postgresql://ingest:***@127.0.0.1:55432/" in page
    assert "local-dev-pw" not in page
    assert "Configuration warnings" not in calm


async def test_pages_are_strict_csp_without_script_or_external_asset() -> None:
    """Every HTML page carries the CSP; the one inline style matches its hash; no script at all."""
    state = _state()
    state.record(_report(time.time(), down=True))
    digest = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    async with serve(state) as client:
        for path in ("/", "/probes", "/probes/1", "/probes/999"):
            response = await client.get(path)
            page = await response.text()
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "<script" not in page
            assert re.findall(r"<style>(.*?)</style>", page, re.S) == [STYLESHEET]
            assert " style=" not in page  # inline style attributes would need 'unsafe-inline'
            assert not re.search(r'(src|href)="(https?:)?//', page), path


async def test_auto_refresh_can_be_paused() -> None:
    """`/` refreshes itself by default; `?refresh=0` leaves the refresh out and offers resume."""
    state = _state()
    async with serve(state) as client:
        live = await (await client.get("/")).text()
        paused = await (await client.get("/?refresh=0")).text()
        custom = await (await client.get("/?refresh=2")).text()
        junk = await (await client.get("/?refresh=x")).text()
    assert '<meta http-equiv="refresh" content="5">' in live
    assert 'href="/?refresh=0">pause</a>' in live
    assert 'http-equiv="refresh"' not in paused
    assert 'href="/">resume</a>' in paused
    assert '<meta http-equiv="refresh" content="2">' in custom
    assert '<meta http-equiv="refresh" content="5">' in junk


async def test_probe_cycles_newest_first_and_failed_kept_longer() -> None:
    """/probes lists each stored cycle newest first, with UTC times, durations and results."""
    state = ExporterState(ProbeHistory(cycles=2, failed_cycles=5))
    now = time.time()
    state.record(_report(now - 40, down=True))
    for i in range(3):
        state.record(_report(now - 30 + i))
    async with serve(state) as client:
        page = await (await client.get("/probes")).text()
        data = await (await client.get("/api/v1/probes")).json()
    rows = re.findall(r'<tr class="cycle" data-cycle="(\d+)" data-result="(\w+)"', page)
    assert rows == [("4", "ok"), ("3", "ok"), ("1", "failed")]
    assert " UTC</time>" in page
    assert "4.00 ms" in page
    (deployment,) = data["deployments"]
    assert [c["id"] for c in deployment["cycles"]] == [4, 3, 1]
    assert deployment["cycles"][2] == {
        "id": 1,
        "deployment": "eu",
        "started_at": pytest.approx(now - 40),
        "duration_seconds": 0.004,
        "ok": False,
        "trace_id": TRACE,
        "failed_checks": 1,
    }


async def test_cycle_page_shows_checks_log_lines_metrics_and_trace() -> None:
    """/probes/{id} shows the cycle's results, its log lines, its series and its trace id."""
    state = _state()
    lines = [
        {"timestamp": "2026-01-02T03:04:05.678Z", "level": "warning", "event": "probe_completed",
         "connector": "redis", "reason": "refused", "detail": None},
    ]  # fmt: skip
    state.record(_report(time.time(), down=True, detail="<b>refused</b>"), lines, dropped=4)
    state.record(_report(time.time()))
    async with serve(state) as client:
        failed = await (await client.get("/probes/1")).text()
        healthy = await (await client.get("/probes/2")).text()
        data = await (await client.get("/api/v1/probes/1")).json()
        fine = await (await client.get("/api/v1/probes/2")).json()
    row = _row(failed, "result", connector="redis", check="ping")
    assert 'data-status="down"' in row
    assert "&lt;b&gt;refused&lt;/b&gt;" in row  # escaped, never markup
    log = _row(failed, "log-line", level="warning")
    assert "03:04:05.678" in log
    assert "probe_completed" in log
    assert "connector=redis reason=refused" in log
    assert "detail=" not in log  # empty fields are left out
    assert "4 more line(s) not kept" in failed
    assert f'<code class="trace-id">{TRACE}</code>' in failed
    metrics = html.unescape(failed.split('<pre class="metrics">')[1])
    assert 'ingest_connector_up{connector="redis",deployment="eu"} 0.0' in metrics
    assert 'ingest_probe_success{deployment="eu"} 0.0' in metrics
    assert "ingest_redis_memory_used_bytes" in healthy
    assert "This cycle logged nothing." in healthy
    assert data["cycle"]["id"] == 1
    assert data["cycle"]["log_lines"] == lines
    assert data["cycle"]["log_lines_dropped"] == 4
    assert data["cycle"]["connectors"]["redis"]["checks"][0]["reason"] == "refused"
    assert "ingest_probe_success" in data["metrics"]
    # Sample names as scraped (a counter's _total), as in /api/v1/connectivity.
    samples = fine["cycle"]["connectors"]["redis"]["checks"][0]["measurements"]
    assert {m["name"] for m in samples} == {
        "ingest_redis_memory_used_bytes",
        "ingest_redis_evicted_keys_total",
    }


@pytest.mark.parametrize("path", ["/probes/999", "/probes/abc", "/api/v1/probes/0"])
async def test_unknown_cycles_answer_404(path: str) -> None:
    """A cycle id that is not stored (or not a number) answers 404, never echoing odd input."""
    async with serve(_state()) as client:
        response = await client.get(path, headers={"Accept": "text/html"})
        text = await response.text()
    assert response.status == 404
    assert "abc" not in text


@pytest.mark.parametrize("path", ["/", "/probes", "/probes/1"])
async def test_every_page_answers_json_and_head(path: str) -> None:
    """`Accept: application/json` gets the JSON view; HEAD answers with no body."""
    state = _state()
    state.record(_report(time.time()))
    async with serve(state) as client:
        as_json = await client.get(path, headers={"Accept": "application/json"})
        twin = await client.get("/api/v1/status" if path == "/" else f"/api/v1{path}")
        head = await client.head(path)
        body = await head.read()
        data: Any = await as_json.json()
        twin_data: Any = await twin.json()
    assert as_json.content_type == twin.content_type == "application/json"
    assert data.keys() == twin_data.keys()
    assert head.status == 200
    assert head.content_type == "text/html"
    assert body == b""


async def test_status_json_has_what_the_page_shows() -> None:
    """The JSON of `/` carries connectors with since and latency history, tasks and manifest."""
    state = _state()
    now = time.time()
    state.record(_report(now - 5))
    state.record(_report(now, down=True))
    async with serve(state) as client:
        data = await (await client.get("/api/v1/status")).json()
    (eu,) = data["deployments"]
    redis = next(c for c in eu["connectors"] if c["name"] == "redis")
    assert (redis["status"], redis["reason"], redis["up"]) == ("down", "refused", False)
    assert redis["since"] == pytest.approx(now)
    assert redis["since_first_probe"] is False
    assert [p["up"] for p in redis["latency_history"]] == [True, False]
    assert redis["checks"][0]["name"] == "ping"
    assert [t["name"] for t in data["tasks"]] == ["probe-loop:eu", "kafka-bridge:eu"]
    assert data["manifests"][0]["deployment"] == "eu"
    assert data["ready"] is True
    assert eu["last_cycle"]["id"] == 2


async def test_basic_auth_protects_the_pages() -> None:
    """With basic auth configured every status page answers 401 without credentials."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    config = WebConfig.model_validate({"basic_auth_users": {"alice": hashed}})
    good = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    async with serve(_state(), web_config=config) as client:
        for path in ("/", "/probes", "/probes/1", "/api/v1/status", "/api/v1/probes"):
            assert (await client.get(path)).status == 401, path
        assert (await client.get("/", headers={"Authorization": good})).status == 200


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", True),
        ("application/json, */*;q=0.5", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("text/html;q=0.5, application/json", True),
        ("text/html, application/json", False),
        ("application/json;q=0", False),
        ("application/json;q=abc", False),
        ("application/json;q=nan", False),
    ],
)
def test_json_is_chosen_only_when_asked_for_first(accept: str | None, expected: bool) -> None:
    """Only an explicit application/json that outranks HTML selects JSON."""
    assert wants_json(accept) is expected


def test_ages_and_durations_read_naturally() -> None:
    """Ages and latencies are short and human: seconds, minutes, hours, days; ms under 1 s."""
    assert [age(s) for s in (0, 42, 185, 7_800, 360_000)] == [
        "0 s", "42 s", "3 min 5 s", "2 h 10 min", "4 d 4 h",
    ]  # fmt: skip
    assert [duration(s) for s in (None, 0.0008, 0.312, 2.049)] == [
        "-", "0.80 ms", "312 ms", "2.05 s",
    ]  # fmt: skip
