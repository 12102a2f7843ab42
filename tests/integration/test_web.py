from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import IngestSettings
from tests.integration.conftest import REPO, running_daemon, sample, scrape, wait_for
from tests.integration.net import free_port
from tests.pki import CertBundle, make_pki

Settings = Callable[..., IngestSettings]
PASSWORD = "correct horse battery staple"


def _down_env() -> dict[str, str]:
    """Return settings variables pointing every dependency at a closed loopback port."""
    return {
        "TIMESCALEDB_URL": f"postgresql://ingest:ingest@127.0.0.1:{free_port()}/ingest",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }


def _two_deployments(tmp_path: Path, extra: str = "", us_redis: int | None = None) -> Path:
    """Write a config file: eu-primary on the real services, us-dr on closed ports."""
    redis = us_redis or free_port()
    path = tmp_path / "ingest.yml"
    path.write_text(
        "deployments:\n"
        "  - name: eu-primary\n"
        "  - name: us-dr\n"
        f"    timescale: {{url: 'postgresql://ingest:ingest@127.0.0.1:{free_port()}/ingest'}}\n"
        f"    redis: {{url: 'redis://127.0.0.1:{redis}/0'}}\n"
        f"    kafka: {{bootstrap_servers: ['127.0.0.1:{free_port()}']}}\n" + extra,
        encoding="utf-8",
    )
    return path


def _web_config(tmp_path: Path, body: str) -> Path:
    """Write a web config and a settings file that points at it."""
    web = tmp_path / "web.yml"
    web.write_text(body, encoding="utf-8")
    settings = tmp_path / "ingest.yml"
    settings.write_text(f"web:\n  config_file: {web}\n", encoding="utf-8")
    return settings


async def _status(
    url: str, *, headers: dict[str, str] | None = None, tls: ssl.SSLContext | bool = True
) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=tls) as response,
    ):
        return response.status


async def test_healthy_answers_while_every_dependency_is_down(settings_factory: Settings) -> None:
    """/-/healthy answers 200 with all three services unreachable; their gauges read 0."""
    async with running_daemon(settings_factory(**_down_env())) as (daemon, url):
        await wait_for(lambda: daemon.state.ready, timeout=20)
        assert await scrape(url, "/-/healthy") == "Healthy.\n"
        text = await scrape(url)
        for connector in ("timescale", "redis", "kafka"):
            assert sample(text, "ingest_connector_up", connector=connector) == 0.0


async def test_ready_flips_from_503_to_200_after_the_first_cycle(
    settings_factory: Settings, blackhole: int
) -> None:
    """/-/ready is 503 while the first (slow) probe cycle runs and 200 once it finished."""
    settings = settings_factory(
        REDIS_URL=f"redis://127.0.0.1:{blackhole}/0", INGEST_PROBE_TIMEOUT_SECONDS="2"
    )
    async with running_daemon(settings) as (daemon, url):
        assert await _status(url + "/-/ready") == 503
        assert await _status(url + "/-/healthy") == 200
        await wait_for(lambda: daemon.state.ready, timeout=20)
        assert await _status(url + "/-/ready") == 200


async def test_metrics_stays_fast_while_a_probe_hangs(
    settings_factory: Settings, blackhole: int
) -> None:
    """/metrics answers in well under 0.5 s while a 3 s Redis probe timeout is in progress."""
    settings = settings_factory(
        REDIS_URL=f"redis://127.0.0.1:{blackhole}/0",
        INGEST_PROBE_TIMEOUT_SECONDS="3",
        INGEST_PROBE_INTERVAL_SECONDS="3.5",
    )
    async with running_daemon(settings) as (daemon, url), aiohttp.ClientSession() as session:
        latencies = []
        while not daemon.state.ready:  # the first cycle waits on the black hole for 3 s
            t0 = time.perf_counter()
            async with session.get(url + "/metrics") as response:
                assert response.status == 200
                await response.read()
            latencies.append(time.perf_counter() - t0)
            # Not a wait: scrapes are sampled every 100 ms while the probe hangs.
            await asyncio.sleep(0.1)
        assert len(latencies) >= 10
        assert max(latencies) < 0.5, latencies


async def test_http_errors_on_the_live_daemon(settings_factory: Settings) -> None:
    """Unknown paths 404, wrong methods 405 with Allow, oversized GET bodies 413."""
    async with running_daemon(settings_factory()) as (_, url), aiohttp.ClientSession() as session:
        async with session.get(url + "/does-not-exist") as response:
            assert response.status == 404
        async with session.post(url + "/metrics", data=b"{}") as response:
            assert response.status == 405
            assert "GET" in response.headers["Allow"]
        async with session.get(url + "/metrics", data=b"x" * 1_000_000) as response:
            assert response.status == 413


async def test_basic_auth_on_the_live_daemon(tmp_path: Path, settings_factory: Settings) -> None:
    """With basic_auth_users: no credentials 401, a bad password 401, the right one 200."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    config = _web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    async with running_daemon(settings_factory(config)) as (_, url):
        response_none = await _status(url + "/metrics")
        bad = {"Authorization": _basic("prometheus", "wrong")}
        good = {"Authorization": _basic("prometheus", PASSWORD)}
        assert response_none == 401
        assert await _status(url + "/metrics", headers=bad) == 401
        assert await _status(url + "/metrics", headers=good) == 200
        # exporter-toolkit protects every path; so do we (a liveness probe sends credentials).
        assert await _status(url + "/-/healthy") == 401
        assert await _status(url + "/-/healthy", headers=good) == 200
        for page in ("/", "/probes", "/probes/1", "/api/v1/status", "/api/v1/probes"):
            assert await _status(url + page) == 401, page
        assert await _status(url + "/", headers=good) == 200


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """Return a throwaway CA with server and client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_tls_with_a_test_certificate(
    tmp_path: Path, settings_factory: Settings, pki: CertBundle
) -> None:
    """With tls_server_config the daemon speaks HTTPS only, verifiable with the test CA."""
    config = _web_config(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n",
    )
    trusted = ssl.create_default_context(cafile=str(pki.ca_cert))
    async with running_daemon(settings_factory(config)) as (daemon, _):
        https = f"https://127.0.0.1:{daemon.port}"
        assert await _status(https + "/-/healthy", tls=trusted) == 200
        assert await _status(https + "/", tls=trusted) == 200
        assert await _status(https + "/probes", tls=trusted) == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _status(https + "/-/healthy", tls=ssl.create_default_context())
        with pytest.raises(aiohttp.ClientError):
            await _status(f"http://127.0.0.1:{daemon.port}/-/healthy")


async def test_mutual_tls_requires_a_client_certificate(
    tmp_path: Path, settings_factory: Settings, pki: CertBundle
) -> None:
    """RequireAndVerifyClientCert refuses a client without a certificate signed by the CA."""
    config = _web_config(
        tmp_path,
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"  client_ca_file: {pki.ca_cert}\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    anonymous = ssl.create_default_context(cafile=str(pki.ca_cert))
    identified = ssl.create_default_context(cafile=str(pki.ca_cert))
    identified.load_cert_chain(pki.client_cert, pki.client_key)
    async with running_daemon(settings_factory(config)) as (daemon, _):
        https = f"https://127.0.0.1:{daemon.port}/-/healthy"
        assert await _status(https, tls=identified) == 200
        with pytest.raises(aiohttp.ClientError):
            await _status(https, tls=anonymous)


async def test_probe_returns_only_the_named_deployment(
    tmp_path: Path, settings_factory: Settings
) -> None:
    """/probe?target=eu-primary answers eu-primary's series only; us-dr's probe reports down."""
    async with running_daemon(settings_factory(_two_deployments(tmp_path))) as (_, url):
        text = await scrape(url, "/probe?target=eu-primary")
        deployments = {
            s.labels.get("deployment")
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert deployments == {"eu-primary"}
        assert sample(text, "ingest_probe_success") == 1.0
        for connector in ("timescale", "redis", "kafka"):
            assert sample(text, "ingest_connector_up", connector=connector) == 1.0
        dr = await scrape(url, "/probe?target=us-dr")
        assert sample(dr, "ingest_probe_success", deployment="us-dr") == 0.0
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/probe?target=ap-south") as response:
                body = await response.text()
                assert response.status == 400
                assert "unknown target 'ap-south'" in body
                assert "known targets: eu-primary, us-dr" in body
            async with session.get(url + "/probe") as response:
                assert response.status == 400


async def test_probe_of_a_hung_deployment_returns_within_the_scrape_timeout(
    tmp_path: Path, settings_factory: Settings, blackhole: int
) -> None:
    """A deployment whose Redis never answers still answers /probe inside the header budget."""
    config = _two_deployments(tmp_path, us_redis=blackhole)
    settings = settings_factory(
        config, INGEST_PROBE_TIMEOUT_SECONDS="3", INGEST_PROBE_INTERVAL_SECONDS="3.5"
    )
    async with running_daemon(settings) as (_, url), aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
        async with session.get(url + "/probe?target=us-dr", headers=headers) as response:
            text = await response.text()
        elapsed = time.perf_counter() - t0
        assert response.status == 200
        assert elapsed < 1.5, elapsed
        assert sample(text, "ingest_probe_success") == 0.0
        assert sample(text, "ingest_connector_up", connector="redis") == 0.0


def test_cli_refuses_a_bad_web_config_with_exit_2(tmp_path: Path) -> None:
    """``ingest-exporter run --web.config.file`` with an unknown key exits 2 naming the key."""
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_fil: server.crt\n", encoding="utf-8")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "exporter", "run"),
            *("--web.listen-address", "127.0.0.1:0", "--web.config.file", str(web)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "tls_server_config.cert_fil: unknown key 'cert_fil'" in result.stderr


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
