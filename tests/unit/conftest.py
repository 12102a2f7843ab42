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
def offline_settings(refused_port: int) -> Callable[..., IngestSettings]:
    """Build settings whose services all refuse, listening on port 0, plus overrides.

    The cache and manifest publishing are off unless an override turns them on, so only the
    probe loop runs; overrides use the environment variable names.
    """
    down = f"127.0.0.1:{refused_port}"

    def build(config_file: str | Path | None = None, **env: str) -> IngestSettings:
        environ = {
            "TIMESCALEDB_URL": f"postgresql://ingest:unit-test-pw@{down}/ingest",
            "REDIS_URL": f"redis://:unit-test-pw@{down}/0",
            "KAFKA_BOOTSTRAP_SERVERS": down,
            "INGEST_WEB_LISTEN_ADDRESS": "127.0.0.1:0",
            "INGEST_PROBE_INTERVAL_SECONDS": "0.05",
            "INGEST_PROBE_TIMEOUT_SECONDS": "1",
            "REDIS_CACHE_STRATEGY": "disabled",
            "KAFKA_MANIFEST_PUBLISH": "false",
        }
        return build_institutional_ingest_config(environ=environ | env, config_file=config_file)

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
