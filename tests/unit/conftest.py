"""Fixtures shared by the unit tests: no service is needed, nothing reaches the shared stack.

The fakes themselves live in :mod:`tests.unit.fakes`, one module per thing they stand in for;
``refused_port`` comes from ``tests/conftest.py`` (the integration tests use it too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from exporter.config import IngestSettings, build_institutional_ingest_config
from exporter.supervisor import Heartbeat

from .fakes.probes import ProbeScript


@pytest.fixture
def offline_environ(refused_port: int) -> dict[str, str]:
    """Return settings variables: every service refuses, the listener takes port 0.

    The cache and manifest publishing are off, so only the probe loop runs. Each name is
    the first of its aliases, so it wins over any alias already in the environment.
    """
    down = f"127.0.0.1:{refused_port}"
    return {
        "TIMESCALEDB_URL": f"postgresql://ingest:unit-test-pw@{down}/ingest",
        "REDIS_URL": f"redis://:unit-test-pw@{down}/0",
        "KAFKA_BROKERS": down,
        "INGEST_WEB_LISTEN_ADDRESS": "127.0.0.1:0",
        # The shortest interval the settings allow; the timeout must stay below it.
        "INGEST_PROBE_INTERVAL_SECONDS": "1",
        "INGEST_PROBE_TIMEOUT_SECONDS": "0.5",
        "REDIS_CACHE_STRATEGY": "disabled",
        "KAFKA_MANIFEST_PUBLISH": "false",
    }


@pytest.fixture
def offline_settings(offline_environ: dict[str, str]) -> Callable[..., IngestSettings]:
    """Build settings from :func:`offline_environ` plus overrides (environment names)."""

    def build(config_file: str | Path | None = None, **env: str) -> IngestSettings:
        environ = offline_environ | env
        return build_institutional_ingest_config(environ=environ, config_file=config_file)

    return build


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> ProbeScript:
    """Replace the built-in probes of every bundle provisioned in the test with scripted ones."""
    script = ProbeScript()
    script.install(monkeypatch)
    return script


@pytest.fixture
def heartbeat() -> Heartbeat:
    """Return a heartbeat on the monotonic clock, not attached to any supervisor."""
    return Heartbeat(time.monotonic)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
