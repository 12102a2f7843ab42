"""Fixtures for tests against the real services of ``make services``.

Integration tests never skip because a service is missing: in CI a missing service is a
failure of the set-up, and a silent skip would hide it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import IngestSettings, build_institutional_ingest_config
from exporter.daemon import Daemon
from tests.waiting import wait_for

from .net import free_port

__all__ = ["free_port", "wait_for"]

REPO = Path(__file__).resolve().parents[2]
_REQUIRED = ("TIMESCALEDB_URL", "TIMESCALE_ADMIN_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as ``integration``."""
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def service_env() -> dict[str, str]:
    """Return the service variables written by ``make services``; fail if they are absent."""
    missing = [name for name in _REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"integration tests need {', '.join(missing)}: run `make services` and "
            "source .services/env (make test does both)"
        )
    return {name: os.environ[name] for name in os.environ}


@pytest.fixture
def unique() -> str:
    """Return a short unique token for names of topics, tables and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings_factory(service_env: dict[str, str]) -> Callable[..., IngestSettings]:
    """Build settings from the service environment plus overrides (env-style names)."""

    def build(config_file: str | Path | None = None, **env: str) -> IngestSettings:
        base = {k: v for k, v in service_env.items() if k in _REQUIRED}
        # The timeout must stay below the interval, and the interval at least 1 s.
        base.setdefault("INGEST_PROBE_INTERVAL_SECONDS", "2.5")
        base.setdefault("INGEST_PROBE_TIMEOUT_SECONDS", "2")
        base.setdefault("INGEST_WEB_LISTEN_ADDRESS", "127.0.0.1:0")
        base["KAFKA_MANIFEST_PUBLISH"] = "false"
        base.update(env)
        return build_institutional_ingest_config(environ=base, config_file=config_file)

    return build


@pytest.fixture
def blackhole() -> Iterator[int]:
    """Return the port of a listener that accepts TCP connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    port = server.getsockname()[1]
    yield port
    server.close()


@asynccontextmanager
async def running_daemon(settings: IngestSettings) -> AsyncIterator[tuple[Daemon, str]]:
    """Run the daemon in-process on a free port; yield it and its base URL; stop it after."""
    daemon = Daemon(settings)
    await daemon.start()
    try:
        yield daemon, f"http://127.0.0.1:{daemon.port}"
    finally:
        await daemon.stop()


async def scrape(base_url: str, path: str = "/metrics") -> str:
    """GET ``path`` and return the body (asserting a 200)."""
    async with aiohttp.ClientSession() as session, session.get(base_url + path) as response:
        assert response.status == 200, f"{path} answered {response.status}"
        return await response.text()


async def scrape_until(
    base_url: str, ready: Callable[[str], bool], *, timeout: float = 15.0
) -> str:
    """Scrape /metrics until ``ready(text)`` holds; return that text, fail after ``timeout``."""

    async def scraped() -> str:
        text = await scrape(base_url)
        return text if ready(text) else ""

    return await wait_for(scraped, timeout=timeout, interval=0.2)


def sample(text: str, name: str, **labels: str) -> float | None:
    """Return the value of the exposition sample ``name{labels}`` (a subset match), if any."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
