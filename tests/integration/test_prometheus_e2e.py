"""The daemon scraped by a real Prometheus, and its exposition linted by promtool."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.registry import Collector

from exporter.config import IngestSettings
from exporter.probes.base import ConnectivityReport, ProbeResult, Status
from tests.integration.conftest import running_daemon, wait_for
from tests.integration.prometheus_instance import (
    free_port,
    prometheus_binary,
    running_prometheus,
    scrape_config,
)
from tests.pki import make_pki

Settings = Callable[..., IngestSettings]
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def _values(vector: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {item["metric"].get(label, ""): float(item["value"][1]) for item in vector}


@pytest.mark.slow
async def test_prometheus_scrapes_connector_up_for_every_connector(
    tmp_path: Path, settings_factory: Settings
) -> None:
    """A real Prometheus scraping the daemon stores ingest_connector_up 1 for all three."""
    async with (
        running_daemon(settings_factory(INGEST_PROBE_INTERVAL_SECONDS="2.5")) as (daemon, _),
        running_prometheus(
            tmp_path, [scrape_config("ingest", [f"127.0.0.1:{daemon.port}"])]
        ) as prometheus,
    ):
        vector = await prometheus.wait_until(
            lambda: prometheus.query("ingest_connector_up"),
            lambda v: len(v) == 3,
            what="three ingest_connector_up series",
        )
        assert _values(vector, "connector") == {"timescale": 1.0, "redis": 1.0, "kafka": 1.0}
        (target,) = await prometheus.targets()
        assert (target["health"], target["lastError"]) == ("up", "")


@pytest.mark.slow
async def test_daemon_exemplars_carry_probe_cycle_trace_ids(
    tmp_path: Path, settings_factory: Settings
) -> None:
    """Prometheus (negotiating OpenMetrics) stores probe-duration exemplars with cycle trace ids."""
    seen: set[str] = set()
    async with (
        running_daemon(settings_factory(INGEST_PROBE_INTERVAL_SECONDS="2.5")) as (daemon, _),
        running_prometheus(
            tmp_path, [scrape_config("ingest", [f"127.0.0.1:{daemon.port}"])]
        ) as prometheus,
    ):

        async def exemplars() -> list[dict[str, Any]]:
            seen.update(r.trace_id for r in daemon.state.reports.values() if r.trace_id)
            return await prometheus.query_exemplars("ingest_probe_duration_seconds_bucket")

        series = await prometheus.wait_until(exemplars, bool, what="an exemplar")
    stored = {e["labels"]["trace_id"] for s in series for e in s["exemplars"]}
    assert all(TRACE_ID.match(t) for t in stored), stored
    assert stored & seen, (stored, seen)  # the ids are the daemon's own probe cycles


@pytest.mark.slow
async def test_recorded_trace_id_reaches_prometheus_as_exemplar(
    tmp_path: Path, settings_factory: Settings
) -> None:
    """A report recorded with a known trace id shows up in Prometheus as exactly that exemplar."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    result = ProbeResult("redis", "ping", Status.OK, None, 0.0042, "", time.time())
    report = ConnectivityReport("exemplar-check", time.time(), 0.005, (result,), trace_id)
    async with (
        running_daemon(settings_factory(INGEST_PROBE_INTERVAL_SECONDS="2.5")) as (daemon, _),
        running_prometheus(
            tmp_path, [scrape_config("ingest", [f"127.0.0.1:{daemon.port}"])]
        ) as prometheus,
    ):
        daemon.state.record(report)
        query = 'ingest_probe_duration_seconds_bucket{deployment="exemplar-check"}'
        series = await prometheus.wait_until(
            lambda: prometheus.query_exemplars(query), bool, what="the recorded exemplar"
        )
    (exemplar,) = [e for s in series for e in s["exemplars"]]
    assert exemplar["labels"] == {"trace_id": trace_id}
    assert float(exemplar["value"]) == pytest.approx(0.0042)
    assert series[0]["seriesLabels"]["le"] == "0.005"


async def _live_body(settings: IngestSettings, accept: str | None) -> tuple[str, str]:
    async with running_daemon(settings) as (daemon, url):
        await wait_for(lambda: daemon.state.ready, timeout=20)
        headers = {"Accept": accept} if accept else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/metrics", headers=headers) as response,
        ):
            return await response.text(), response.headers["Content-Type"]


def _promtool(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_binary("promtool"), "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _rich(settings_factory: Settings, unique: str) -> IngestSettings:
    """Return settings that make every source publish: a dimension, the bridge, the cache."""
    # Neither the table nor the topic exists (auto creation is off): nothing to clean up.
    dimension = f"lint_{unique}"
    return settings_factory(
        INGEST_DIMENSIONS=dimension,
        KAFKA_INGEST_TOPICS=f"{dimension}:lint-{unique}",
        REDIS_CACHE_STRATEGY="institutional",
        REDIS_CACHE_NAMESPACE=f"test:lint:{unique}",
    )


async def test_promtool_check_metrics_is_clean_on_a_live_text_scrape(
    settings_factory: Settings, unique: str
) -> None:
    """``promtool check metrics`` reports nothing on a live scrape in the text format."""
    body, content_type = await _live_body(_rich(settings_factory, unique), None)
    assert content_type.startswith("text/plain; version=0.0.4")
    for family in (
        "ingest_connector_up",
        "ingest_dimension_freshness_sla_seconds",
        "ingest_kafka_topic_partitions",
        "ingest_bridge_messages_total",
        "ingest_cache_hits_total",
        "ingest_probe_duration_seconds_bucket",
    ):
        assert f"\n{family}{{" in body, family
    result = _promtool(body)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


class _Replay(Collector):
    """Yield families parsed elsewhere, to encode them again in another format."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        """Yield the parsed families."""
        yield from self._families


async def test_openmetrics_scrape_is_valid_and_lints_clean(
    settings_factory: Settings, unique: str
) -> None:
    """A live OpenMetrics scrape parses strictly, and its families lint clean with promtool.

    promtool reads only the text format (prometheus/prometheus#8932), so the OpenMetrics body
    is checked by the reference OpenMetrics parser (prometheus_client's, which rejects any
    syntax, exemplar or ``# EOF`` error), and its families are re-encoded for promtool's lint
    of names, types and help. Prometheus itself ingesting OpenMetrics is the exemplar test.
    """
    body, content_type = await _live_body(_rich(settings_factory, unique), OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    assert " # {trace_id=" in body  # exemplars only exist in OpenMetrics
    families = list(parse_openmetrics(body))  # type: ignore[no-untyped-call]  # untyped parser
    assert "ingest_connector_up" in {f.name for f in families}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Replay(families))
    result = _promtool(generate_latest(registry).decode())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.slow
async def test_prometheus_probes_each_deployment_through_probe_endpoint(
    tmp_path: Path, settings_factory: Settings
) -> None:
    """The blackbox pattern: Prometheus relabels deployment names into /probe?target=."""
    config = tmp_path / "ingest.yml"
    config.write_text(
        "deployments:\n  - name: eu-primary\n  - name: us-dr\n"
        f"    redis: {{url: 'redis://127.0.0.1:{free_port()}/0'}}\n",
        encoding="utf-8",
    )
    async with running_daemon(settings_factory(config)) as (daemon, _):
        job = scrape_config(
            "ingest-probe",
            ["eu-primary", "us-dr"],
            interval="2s",
            metrics_path="/probe",
            relabel_configs=[
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"127.0.0.1:{daemon.port}"},
            ],
        )
        async with running_prometheus(tmp_path / "prom", [job]) as prometheus:
            vector = await prometheus.wait_until(
                lambda: prometheus.query("ingest_probe_success"),
                lambda v: len(v) == 2,
                what="ingest_probe_success for both deployments",
            )
            redis_up = await prometheus.query('ingest_connector_up{connector="redis"}')
    assert _values(vector, "deployment") == {"eu-primary": 1.0, "us-dr": 0.0}
    assert {item["metric"]["instance"] for item in vector} == {"eu-primary", "us-dr"}
    assert _values(redis_up, "deployment") == {"eu-primary": 1.0, "us-dr": 0.0}


@pytest.mark.slow
async def test_prometheus_scrapes_over_tls_with_basic_auth(
    tmp_path: Path, settings_factory: Settings
) -> None:
    """Prometheus with tls_config and basic_auth scrapes a daemon that has a web config."""
    pki = make_pki(tmp_path / "pki")
    password = "prometheus-scrape-password"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n",
        encoding="utf-8",
    )
    settings = tmp_path / "ingest.yml"
    settings.write_text(f"web:\n  config_file: {web}\n", encoding="utf-8")
    async with running_daemon(settings_factory(settings)) as (daemon, _):
        job = scrape_config(
            "ingest-tls",
            [f"127.0.0.1:{daemon.port}"],
            scheme="https",
            tls_config={"ca_file": str(pki.ca_cert)},
            basic_auth={"username": "prometheus", "password": password},
        )
        async with running_prometheus(tmp_path / "prom", [job]) as prometheus:
            vector = await prometheus.wait_until(
                lambda: prometheus.query('up{job="ingest-tls"}'),
                lambda v: bool(v) and v[0]["value"][1] == "1",
                what="up == 1 over TLS",
            )
            up = await prometheus.wait_until(
                lambda: prometheus.query("ingest_connector_up"),
                lambda v: len(v) == 3,
                what="ingest_connector_up over TLS",
            )
    assert vector[0]["metric"]["instance"] == f"127.0.0.1:{daemon.port}"
    assert set(_values(up, "connector").values()) == {1.0}
