from __future__ import annotations

import asyncio
import base64
import gzip
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import bcrypt
import pytest
from aiohttp import test_utils, web
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.probes.base import ConnectivityReport, ProbeResult, Reason, Status
from exporter.state import ConnectorInfo, ExporterState
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer, runtime_registry
from exporter.telemetry.web import WebApp, build_app, scrape_budget
from exporter.telemetry.webconfig import WebConfig

Client = test_utils.TestClient[web.Request, web.Application]
CONNECTORS = ("timescale", "redis", "kafka")
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


def _report(deployment: str, *, down: str | None = None) -> ConnectivityReport:
    results = tuple(
        ProbeResult(
            connector=c,
            check="ping",
            status=Status.DOWN if c == down else Status.OK,
            reason=Reason.REFUSED if c == down else None,
            latency_seconds=0.002,
            detail="",
            checked_at=time.time(),
        )
        for c in CONNECTORS
    )
    return ConnectivityReport(deployment, time.time(), 0.003, results, connectors=CONNECTORS)


@dataclass
class FakeTarget:
    """A deployment whose probes answer ``report`` after ``delay`` seconds."""

    report: ConnectivityReport
    delay: float = 0.0
    calls: int = 0

    async def connectivity_report(self) -> ConnectivityReport:
        """Count the call and answer after the delay."""
        self.calls += 1
        # Not a wait: a dependency this slow is what the handler must cope with.
        await asyncio.sleep(self.delay)
        return self.report


def _state(*deployments: str) -> ExporterState:
    state = ExporterState()
    state.set_connectors(
        tuple(ConnectorInfo(d, c, c, f"{c}://host") for d in deployments for c in CONNECTORS)
    )
    return state


@asynccontextmanager
async def serve(
    state: ExporterState | None = None,
    *,
    targets: dict[str, FakeTarget] | None = None,
    web_config: WebConfig | None = None,
    max_body: int = 1024,
) -> AsyncIterator[Client]:
    """Serve the app on a loopback port and yield a client for it."""
    state = state or _state("eu", "us")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(state))
    handlers = WebApp(
        state,
        MetricsRenderer(registry, state, live=runtime_registry()),
        manifests=lambda: [{"deployment": "eu"}],
        targets=targets,
        probe_timeout=2.0,
    )
    app = build_app(handlers, max_body=max_body, web_config=web_config)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


def _samples(text: str, deployment: str | None = None) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if deployment is None or s.labels.get("deployment") == deployment:
                out[(s.name, s.labels.get("connector", ""))] = float(s.value)
    return out


async def test_every_route_answers_get() -> None:
    """Every documented GET route answers 200 with its content type once probes ran."""
    state = _state("eu")
    state.record(_report("eu"))
    async with serve(state, targets={"eu": FakeTarget(_report("eu"))}) as client:
        for path, kind in [
            ("/", "text/html"),
            ("/metrics", "text/plain"),
            ("/-/healthy", "text/plain"),
            ("/-/ready", "text/plain"),
            ("/api/v1/manifest", "application/json"),
            ("/api/v1/connectivity", "application/json"),
            ("/api/v1/failover", "application/json"),
            ("/probe?target=eu", "text/plain"),
        ]:
            response = await client.get(path)
            assert response.status == 200, path
            assert response.content_type == kind, path
        landing = await (await client.get("/")).text()
        assert "/probe?target=eu" in landing


async def test_json_views_serve_the_snapshot() -> None:
    """/api/v1/failover shows the drill settings (or disabled); /api/v1/connectivity the reports."""
    state = _state("eu")
    async with serve(state) as client:
        assert await (await client.get("/api/v1/failover")).json() == {
            "enabled": False,
            "settings": None,
        }
        state.set_failover({"label": "q4-dr", "dimensions": ["trades"]})
        state.record(_report("eu", down="redis"))
        failover = await (await client.get("/api/v1/failover")).json()
        reports = (await (await client.get("/api/v1/connectivity")).json())["reports"]
    assert failover == {"enabled": True, "settings": {"label": "q4-dr", "dimensions": ["trades"]}}
    assert [r["deployment"] for r in reports] == ["eu"]
    assert reports[0]["connectors"]["redis"]["up"] is False


async def test_unknown_path_is_404_and_wrong_method_is_405() -> None:
    """Unknown paths answer 404; a POST to a GET route answers 405 with an Allow header."""
    async with serve() as client:
        assert (await client.get("/nope")).status == 404
        response = await client.post("/metrics")
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert (await client.delete("/-/healthy")).status == 405


async def test_request_bodies_are_bounded() -> None:
    """A GET with a body over the limit answers 413 (declared or chunked); a small one is fine."""
    async with serve(max_body=1024) as client:
        assert (await client.get("/-/healthy", data=b"x" * 100)).status == 200
        assert (await client.get("/-/healthy", data=b"x" * 10_000)).status == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 512

        assert (await client.get("/metrics", data=chunks())).status == 413


async def test_ready_is_503_until_every_deployment_finished_a_cycle() -> None:
    """/-/ready answers 503 until each configured deployment recorded a report, then 200."""
    state = _state("eu", "us")
    async with serve(state) as client:
        assert (await client.get("/-/ready")).status == 503
        state.record(_report("eu"))
        assert (await client.get("/-/ready")).status == 503
        state.record(_report("us"))
        assert (await client.get("/-/ready")).status == 200


async def test_health_and_metrics_never_probe() -> None:
    """/-/healthy and /metrics answer from memory: no target's probes run."""
    target = FakeTarget(_report("eu"), delay=5.0)
    async with serve(targets={"eu": target}) as client:
        for path in ("/-/healthy", "/metrics", "/api/v1/connectivity"):
            assert (await client.get(path)).status == 200
    assert target.calls == 0


async def test_probe_returns_only_the_target_series() -> None:
    """/probe?target=us runs us's probes and answers us's series only, with success/duration."""
    state = _state("eu", "us")
    state.record(_report("eu"))
    targets = {"eu": FakeTarget(_report("eu")), "us": FakeTarget(_report("us", down="redis"))}
    async with serve(state, targets=targets) as client:
        text = await (await client.get("/probe", params={"target": "us"})).text()
    assert targets["us"].calls == 1
    assert targets["eu"].calls == 0
    families = list(text_string_to_metric_families(text))
    assert {s.labels["deployment"] for f in families for s in f.samples} == {"us"}
    values = _samples(text)
    assert values[("ingest_connector_up", "timescale")] == 1.0
    assert values[("ingest_connector_up", "redis")] == 0.0
    assert values[("ingest_probe_success", "")] == 0.0
    assert values[("ingest_probe_target_duration_seconds", "")] == pytest.approx(0.003)
    # The same status state set and reason as /metrics, so one alert rule fits both.
    at_one = {
        (s.name, s.labels["connector"], s.labels.get("status") or s.labels.get("reason"))
        for f in families
        for s in f.samples
        if s.name in {"ingest_check_status", "ingest_check_reason"} and s.value == 1
    }
    assert at_one == {
        ("ingest_check_status", "redis", "down"),
        ("ingest_check_reason", "redis", "refused"),
        *(("ingest_check_status", c, "ok") for c in CONNECTORS if c != "redis"),
        *(("ingest_check_reason", c, "none") for c in CONNECTORS if c != "redis"),
    }
    names = {f.name for f in families}
    # Counters since start and the histogram belong to /metrics, not to one probe.
    assert not names & {"ingest_probe_failures", "ingest_probe_cycles"}
    assert {f.type for f in families if f.name == "ingest_probe_target_duration_seconds"} == {
        "gauge"
    }


async def test_probe_success_is_1_when_every_check_passed() -> None:
    """ingest_probe_success is 1 for a deployment whose checks all passed."""
    async with serve(targets={"eu": FakeTarget(_report("eu"))}) as client:
        text = await (await client.get("/probe?target=eu")).text()
    assert _samples(text)[("ingest_probe_success", "")] == 1.0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "expected exactly one ?target=NAME"),
        ("?target=", "expected exactly one ?target=NAME"),
        ("?target=eu&target=us", "expected exactly one ?target=NAME"),
        ("?target=mars", "unknown target 'mars'"),
        ("?target=postgresql://u:pw-canary@h/db", "unknown target;"),
        ("?target=eu&password=pw-canary", "only the target parameter is accepted"),
    ],
)
async def test_probe_rejects_bad_queries_listing_known_targets(query: str, expected: str) -> None:
    """A missing, repeated or unknown target or an extra parameter answers 400 listing targets."""
    targets = {"eu": FakeTarget(_report("eu")), "us": FakeTarget(_report("us"))}
    async with serve(targets=targets) as client:
        response = await client.get("/probe" + query)
        body = await response.text()
    assert response.status == 400
    assert response.content_type == "text/plain"
    assert expected in body
    assert "known targets: eu, us" in body
    assert "pw-canary" not in body
    assert targets["eu"].calls == 0


async def test_probe_answers_within_the_scrape_timeout_header() -> None:
    """A target slower than the scrape budget answers in time, every connector down (timeout)."""
    target = FakeTarget(_report("eu"), delay=30.0)
    async with serve(targets={"eu": target}) as client:
        t0 = time.perf_counter()
        response = await client.get(
            "/probe?target=eu", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.2"}
        )
        elapsed = time.perf_counter() - t0
        text = await response.text()
    assert response.status == 200
    assert 0.6 <= elapsed < 1.2
    values = _samples(text)
    assert values[("ingest_probe_success", "")] == 0.0
    assert [values[("ingest_connector_up", c)] for c in CONNECTORS] == [0.0, 0.0, 0.0]


async def test_concurrent_probes_of_one_target_share_a_run() -> None:
    """Two scrapes of the same target at once run its probes once, so scrapes cannot pile up."""
    target = FakeTarget(_report("eu"), delay=0.3)
    async with serve(targets={"eu": target}) as client:
        first, second = await asyncio.gather(
            client.get("/probe?target=eu"), client.get("/probe?target=eu")
        )
        assert (first.status, second.status) == (200, 200)
    assert target.calls == 1


async def test_probe_speaks_openmetrics_when_asked() -> None:
    """/probe negotiates OpenMetrics like /metrics, and the body parses strictly."""
    async with serve(targets={"eu": FakeTarget(_report("eu"))}) as client:
        response = await client.get(
            "/probe?target=eu", headers={"Accept": "application/openmetrics-text;version=1.0.0"}
        )
        text = await response.text()
    assert response.content_type == "application/openmetrics-text"
    assert text.endswith("# EOF\n")
    families = parse_openmetrics(text)  # type: ignore[no-untyped-call]  # the parser is untyped
    assert "ingest_probe_success" in {f.name for f in families}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 7.0),
        ("10", 9.5),
        ("0.6", 0.3),
        ("abc", 7.0),
        ("-1", 7.0),
        ("nan", 7.0),
        ("inf", 7.0),
    ],
)
def test_scrape_budget(header: str | None, expected: float) -> None:
    """The budget is the scrape timeout minus a margin (at least half of it), else the default."""
    assert scrape_budget(header, 7.0) == pytest.approx(expected)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_basic_auth_protects_every_path() -> None:
    """With users configured, every path (/-/healthy and 404s too) needs the right password."""
    config = WebConfig(basic_auth_users={"alice": HASH})
    async with serve(web_config=config) as client:
        for path in ("/metrics", "/-/healthy", "/nope"):
            response = await client.get(path)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"] == 'Basic realm="ingest-exporter"'
        assert (await client.get("/metrics", headers=_basic("alice", "bad"))).status == 401
        assert (await client.get("/metrics", headers=_basic("bob", "s3cret"))).status == 401
        assert (await client.get("/metrics", headers=_basic("alice", "s3cret"))).status == 200
        assert (await client.get("/nope", headers=_basic("alice", "s3cret"))).status == 404


async def test_configured_headers_are_added_to_every_answer() -> None:
    """http_server_config.headers land on successes and on errors alike."""
    config: Any = {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}
    async with serve(web_config=WebConfig(**config)) as client:
        for path in ("/metrics", "/nope"):
            response = await client.get(path)
            assert response.headers["X-Frame-Options"] == "deny", path


@pytest.mark.parametrize("path", ["/metrics", "/probe?target=eu"])
async def test_expositions_are_gzipped_when_the_client_asks(path: str) -> None:
    """With Accept-Encoding: gzip the body is gzip and decodes to the plain exposition."""
    async with serve(targets={"eu": FakeTarget(_report("eu"))}) as client:
        zipped = await client.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert zipped.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(await zipped.read()).decode()
        plain = await client.get(path, headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        refused = await client.get(path, headers={"Accept-Encoding": "deflate, gzip;q=0"})
        assert "Content-Encoding" not in refused.headers
        assert "ingest_connector_up" in text
        assert "ingest_connector_up" in await plain.text()


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
async def test_metrics_carry_the_process_and_python_runtime_families(accept: str) -> None:
    """/metrics has process_* and python_* (fresh each scrape) in both formats, one # EOF."""
    async with serve() as client:
        response = await client.get("/metrics", headers={"Accept": accept})
        text = await response.text()
    assert "process_resident_memory_bytes " in text
    assert "process_cpu_seconds_total " in text
    assert "python_info{" in text
    assert "python_gc_collections_total{" in text
    assert text.count("# EOF") == (1 if accept else 0)
    if accept:
        assert text.endswith("# EOF\n")
