"""Redaction property suite: generated canary secrets through the real drivers, every surface.

Most cases run in-process (one probe cycle of the real drivers per case, see
``leak_surfaces.py``) against closed ports, a black-holed port and the real services with
wrong passwords; fewer go end to end through the CLI and the daemon. Zero canary hits is the
only pass. Counts are sized for about two minutes on two cores; the suite's total is
printed by ``test_case_budget`` below.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.config import build_institutional_ingest_config
from exporter.daemon import Daemon
from exporter.errors import ConfigError
from exporter.redaction import Redactor
from tests.canaries import (
    Planted,
    canary_hits,
    cases,
    kafka_sasl,
    postgres_url,
    redis_url,
    secret,
)
from tests.logcapture import debug_log_fixture

from .conftest import REPO, wait_for
from .leak_surfaces import BASE_ENV, cycle_surfaces
from .net import free_port
from .otlp_receiver import OtlpReceiver

__all__ = ["EXAMPLES", "debug_log_fixture"]  # the fixture is imported for pytest

#: Generated cases per test; their sum is the suite's case count in `make test`.
EXAMPLES = {
    "closed_ports": 900,
    "black_hole": 25,
    "wrong_passwords": 150,
    "cli": 10,
    "daemon": 4,
}


_OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _merge(*parts: Planted) -> Planted:
    merged = Planted()
    for part in parts:
        merged.env.update(part.env)
        merged.canaries += part.canaries
    return merged


@st.composite
def _everything(
    draw: st.DrawFn, pg: tuple[str, int], redis: tuple[str, int], kafka: str
) -> Planted:
    return _merge(draw(postgres_url(*pg)), draw(redis_url(*redis)), draw(kafka_sasl(kafka)))


def _assert_clean(surfaces: dict[str, str], planted: object) -> None:
    hits = canary_hits(surfaces)
    assert not hits, f"canary hits {hits} for {planted}"


@pytest.fixture(scope="module")
def black_hole() -> Iterator[int]:
    """Return the port of a listener that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    yield server.getsockname()[1]
    server.close()


def test_closed_ports(debug_log: io.StringIO) -> None:
    """Canaries in every credential position, drivers refused: no surface shows one."""
    ran = [0]

    @cases(EXAMPLES["closed_ports"])
    @given(
        _everything(
            ("127.0.0.1", free_port()), ("127.0.0.1", free_port()), f"127.0.0.1:{free_port()}"
        )
    )
    def case(planted: Planted) -> None:
        ran[0] += 1
        _assert_clean(asyncio.run(cycle_surfaces(planted.env, debug_log)), planted)

    case()
    assert ran[0] >= EXAMPLES["closed_ports"], ran  # the cases really ran


def test_black_hole(debug_log: io.StringIO, black_hole: int) -> None:
    """Canaries in every credential position, drivers time out: no surface shows one."""
    target = ("127.0.0.1", black_hole)

    ran = [0]

    @cases(EXAMPLES["black_hole"])
    @given(_everything(target, target, f"127.0.0.1:{black_hole}"))
    def case(planted: Planted) -> None:
        ran[0] += 1
        _assert_clean(asyncio.run(cycle_surfaces(planted.env, debug_log)), planted)

    case()
    assert ran[0] >= EXAMPLES["black_hole"], ran  # the cases really ran


def test_wrong_passwords_on_the_real_services(
    debug_log: io.StringIO, service_env: dict[str, str]
) -> None:
    """Canary passwords against the real PostgreSQL, Redis and Kafka: no surface shows one."""
    pg = urlsplit(service_env["TIMESCALEDB_URL"])
    redis = urlsplit(service_env["REDIS_URL"])
    pg_target = (pg.hostname or "127.0.0.1", pg.port or 5432)
    redis_target = (redis.hostname or "127.0.0.1", redis.port or 6379)
    kafka = service_env["KAFKA_BOOTSTRAP_SERVERS"]

    ran = [0]

    @cases(EXAMPLES["wrong_passwords"])
    @given(
        st.builds(
            _merge,
            postgres_url(*pg_target, user=pg.username or "ingest", database="ingest"),
            redis_url(*redis_target),
            kafka_sasl(kafka),
        )
    )
    def case(planted: Planted) -> None:
        ran[0] += 1
        _assert_clean(asyncio.run(cycle_surfaces(planted.env, debug_log)), planted)

    case()
    assert ran[0] >= EXAMPLES["wrong_passwords"], ran  # the cases really ran


def _cli(command: str, env: dict[str, str]) -> str:
    extra = ["--format", "json"] if command == "probe" else []
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("TIMESCALE", "REDIS_", "KAFKA_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "exporter", command, "--log.level", "debug", *extra],
        cwd=REPO,
        env={
            **clean,
            "INGEST_PROBE_TIMEOUT_SECONDS": "0.5",
            "KAFKA_MANIFEST_PUBLISH": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stdout + result.stderr


def test_cli_output_and_error_lines() -> None:
    """`check-config`, `manifest` and `probe` print no canary on stdout or stderr (DEBUG logs)."""
    ran = [0]

    @cases(EXAMPLES["cli"])
    @given(
        _everything(
            ("127.0.0.1", free_port()), ("127.0.0.1", free_port()), f"127.0.0.1:{free_port()}"
        )
    )
    def case(planted: Planted) -> None:
        ran[0] += 1
        surfaces = {c: _cli(c, planted.env) for c in ("check-config", "manifest", "probe")}
        _assert_clean(surfaces, planted)

    case()
    assert ran[0] >= EXAMPLES["cli"], ran  # the cases really ran


_PATHS = (
    "/metrics",
    "/api/v1/manifest",
    "/api/v1/connectivity",
    "/api/v1/failover",
    "/",
    "/-/ready",
    "/-/healthy",
    "/probe?target=local",
)


async def _daemon_surfaces(env: dict[str, str], log: io.StringIO) -> dict[str, str]:
    """Run the daemon on ``env`` until its first cycle; return every HTTP body and the logs."""
    log.seek(0)
    log.truncate()
    try:
        settings_ = build_institutional_ingest_config(
            environ={**BASE_ENV, "INGEST_WEB_LISTEN_ADDRESS": "127.0.0.1:0", **env}
        )
    except ConfigError as exc:
        return {"config_error": str(exc)}
    surfaces: dict[str, str] = {}
    daemon = Daemon(settings_, redactor=Redactor(settings_.secret_values()))
    await daemon.start()
    try:
        await wait_for(lambda: daemon.state.ready, timeout=20)
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession() as session:
            for path in _PATHS:
                for accept in ("text/plain", _OPENMETRICS):
                    headers = {"Accept": accept}
                    async with session.get(base + path, headers=headers) as response:
                        surfaces[f"{path} {accept}"] = await response.text()
    finally:
        await daemon.stop()
    surfaces["log"] = log.getvalue()
    return surfaces


@st.composite
def _otlp_headers(draw: st.DrawFn) -> tuple[str, list[str]]:
    text, found = draw(secret("oh"))
    shape = draw(st.sampled_from(["authorization=Bearer {}", "x-key={},bad", "=={}"]))
    return shape.format(text), found


def test_daemon_http_logs_and_spans(debug_log: io.StringIO) -> None:
    """The running daemon's every endpoint, DEBUG log and exported span hold no canary.

    The canaries include the OTLP exporter's own headers (well-formed and malformed).
    """
    ran = [0]

    @cases(EXAMPLES["daemon"])
    @given(
        _everything(
            ("127.0.0.1", free_port()), ("127.0.0.1", free_port()), f"127.0.0.1:{free_port()}"
        ),
        _otlp_headers(),
    )
    def case(planted: Planted, headers: tuple[str, list[str]]) -> None:
        ran[0] += 1
        with OtlpReceiver() as receiver, pytest.MonkeyPatch.context() as env:
            env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
            env.setenv("OTEL_EXPORTER_OTLP_HEADERS", headers[0])
            env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
            env.delenv("OTEL_SDK_DISABLED", raising=False)
            env.delenv("OTEL_TRACES_EXPORTER", raising=False)
            surfaces = asyncio.run(_daemon_surfaces(planted.env, debug_log))
            spans = receiver.spans()
            surfaces["spans"] = "\n".join(s for span in spans for s in span.strings())
            surfaces["span_bodies"] = b"".join(receiver.bodies()).decode("latin-1")
        _assert_clean(surfaces, (planted, headers))

    case()
    assert ran[0] >= EXAMPLES["daemon"], ran  # the cases really ran
