"""Drill guard rails: one drill per label across exporters, SIGTERM, tokens, no leaked secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog
import yaml

from exporter.config import IngestSettings, build_redactor
from exporter.daemon import SHUTDOWN_TIMEOUT
from exporter.drills.store import DrillStore
from exporter.telemetry.logs import configure_logging
from tests.waiting import wait_for

from .conftest import REPO, free_port, running_daemon, sample, scrape, scrape_until
from .drill_support import create_dimension, drill_settings, drop_table
from .otlp_receiver import OtlpReceiver
from .test_tracing import receiver  # noqa: F401 - the OTLP receiver fixture, shared

#: The CLI's own exit grace after a stop (see exporter.cli._EXIT_GRACE).
_EXIT_GRACE = 1.0


async def _post(url: str, token: str | None, query: str = "scenario=observe") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v1/drills?{query}", headers=headers) as response,
    ):
        body = await response.text()
        return response.status, body


async def _get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url + path) as response:
        assert response.status == 200, await response.text()
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()


async def _finished(url: str, drill_id: str, *, timeout: float) -> dict[str, Any]:
    """Wait for the drill's record (the drill has ended) and return it."""

    async def record() -> dict[str, Any] | None:
        body = await _get(url, f"/api/v1/drills/{drill_id}")
        return dict(body) if "result" in body else None

    found: dict[str, Any] | None = await wait_for(record, timeout=timeout, interval=0.1)
    assert found is not None
    return found


async def test_two_exporters_on_one_redis_run_one_drill_per_label(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
) -> None:
    """Both asked at once: exactly one drill runs (202), the other exporter answers 409."""
    token = f"tok-{unique}"
    (tmp_path / "token").write_text(token)
    table = f"drill_guard_{unique}"
    await create_dimension(service_env["TIMESCALEDB_URL"], table)
    try:
        settings = drill_settings(
            settings_factory,
            tmp_path,
            dimension="trades",
            table=table,
            drill={
                "label": f"drill-{unique}",
                "token_file": str(tmp_path / "token"),
                "deadline_seconds": 2,
                "probe_interval_seconds": 0.2,
            },
        )
        async with running_daemon(settings) as (_, one), running_daemon(settings) as (_, two):
            assert (await _post(one, None))[0] == 401
            assert (await _post(two, "wrong"))[0] == 401
            answers = await asyncio.gather(_post(one, token), _post(two, token))
            statuses = sorted(status for status, _ in answers)
            assert statuses == [202, 409], answers
            winner = one if answers[0][0] == 202 else two
            drill_id = yaml.safe_load(next(b for s, b in answers if s == 202))["drill_id"]
            listed = await _get(two if winner is one else one, "/api/v1/drills")
            assert drill_id in [m["drill_id"] for m in listed["running"]]
            record = await _finished(winner, drill_id, timeout=15)
            assert (await _post(winner, token, "scenario=nonsense"))[0] == 400
            # The other replica publishes the drill too: its gauges come from Redis.
            other = two if winner is one else one
            labels = {"label": f"drill-{unique}", "scenario": "observe"}
            text = await scrape_until(
                other,
                lambda t: sample(t, "ingest_failover_drill_success", **labels) is not None,
            )
            assert sample(text, "ingest_failover_drill_success", **labels) == 0
    finally:
        await drop_table(service_env["TIMESCALEDB_URL"], table)
    assert record["result"] == "aborted"
    assert record["aborted_reason"] == "deadline 2s: no outage happened"
    assert record["fencing_token"] >= 1


async def test_sigterm_mid_drill_exits_in_bound_and_records_the_drill_aborted(
    tmp_path: Path, service_env: dict[str, str], unique: str
) -> None:
    """SIGTERM while a drill waits for an outage: exit 0 within the bound, record aborted."""
    table = f"drill_term_{unique}"
    await create_dimension(service_env["TIMESCALEDB_URL"], table)
    token = f"tok-{unique}"
    (tmp_path / "token").write_text(token)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dimensions": [{"name": "trades", "table": table}],
                "failover_drill": {
                    "enabled": True,
                    "label": f"drill-{unique}",
                    "token_file": str(tmp_path / "token"),
                    "deadline_seconds": 120,
                },
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _spawn(config, port)
    try:
        drill_id = await _start_when_up(url, token)

        async def waiting_for_an_outage() -> bool:
            marker = await _get(url, f"/api/v1/drills/{drill_id}")
            return bool(marker.get("phase") == "await")

        await wait_for(waiting_for_an_outage, timeout=10, interval=0.1)
        process.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await drop_table(service_env["TIMESCALEDB_URL"], table)
    assert process.returncode == 0, stderr[-2000:]
    assert elapsed < SHUTDOWN_TIMEOUT + _EXIT_GRACE
    client = aioredis.Redis.from_url(service_env["REDIS_URL"])
    try:
        record = await DrillStore(client).get(drill_id)
    finally:
        await client.aclose()
    assert record is not None
    assert record.result.value == "aborted"
    assert record.aborted_reason == "cancelled during await (the exporter is stopping)"
    assert '"drill_finished"' in stderr
    assert "Traceback" not in stderr


def _spawn(config: Path, port: int) -> subprocess.Popen[str]:
    """Start ``ingest-exporter run`` with ``config`` on ``port`` (logs as JSON on stderr)."""
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--config.file", str(config)],
        cwd=REPO,
        env={
            **os.environ,
            "INGEST_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "KAFKA_MANIFEST_PUBLISH": "false",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _start_when_up(url: str, token: str) -> str:
    """POST a drill as soon as the daemon answers; return its id."""

    async def posted() -> tuple[int, Any] | None:
        try:
            return await _post(url, token)
        except aiohttp.ClientError:
            return None  # not listening yet

    status, body = await wait_for(posted, timeout=15, interval=0.1)
    assert status == 202, body
    return str(yaml.safe_load(body)["drill_id"])


async def test_no_credential_in_token_record_logs_or_span(
    receiver: OtlpReceiver,  # noqa: F811 - the fixture imported above
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    unique: str,
) -> None:
    """A failing injection that prints secrets: a failed failover, and no canary anywhere."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    token = f"tok-canary-{unique}"
    argv_canary = f"argv-canary-{unique}"
    (tmp_path / "token").write_text(token)
    db_url = service_env["TIMESCALEDB_URL"]
    password = db_url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    assert password
    table = f"drill_canary_{unique}"
    await create_dimension(db_url, table)
    script = 'echo "connecting to $1"; echo "given ${2#--password=}"; echo "auth $3" >&2; exit 3'
    settings = drill_settings(
        settings_factory,
        tmp_path,
        dimension="trades",
        table=table,
        drill={
            "label": f"drill-{unique}",
            "token_file": str(tmp_path / "token"),
            "probe_interval_seconds": 0.2,
            "inject_command": [
                "bash",
                "-c",
                script,
                "inject",
                db_url,
                f"--password={argv_canary}",
                token,
            ],
        },
    )
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", redactor=build_redactor(settings), stream=stream)
    try:
        async with running_daemon(settings) as (daemon, url):
            status, body = await _post(url, token, "scenario=kill")
            assert status == 202, body
            drill_id = yaml.safe_load(body)["drill_id"]
            record = await _finished(url, drill_id, timeout=30)
            outputs = [
                str(record),
                await _get(url, f"/api/v1/drills/{drill_id}?format=markdown"),
                str(await _get(url, "/api/v1/drills")),
                await scrape(url),
            ]
            trace_id = record["trace_id"]
            await wait_for(
                lambda: any(s.name == "failover_drill" for s in receiver.spans()), timeout=10
            )
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        await drop_table(db_url, table)
    spans = [s for s in receiver.spans() if s.trace_id == trace_id]
    [drill_span] = [s for s in spans if s.name == "failover_drill"]
    phases = [name for name, _ in drill_span.events]
    assert phases == ["phase pre_check", "phase arm", "phase inject", "phase post_check"]
    assert drill_span.attributes["ingest.drill.result"] == "fail"
    logs = stream.getvalue()
    assert logs.count('"drill_phase_finished"') == 4
    outputs += [logs, *(text for span in spans for text in span.strings())]
    assert record["result"] == "fail"
    components = {c["name"]: c for c in record["components"]}
    assert components["failover"]["status"] == "fail"
    assert components["failover"]["summary"].startswith("inject command exited 3")
    assert components["rto"]["status"] == components["rpo"]["status"] == "skipped"
    assert record["injection"]["exit_code"] == 3
    assert "connecting to ***" in record["injection"]["output"]  # a whole configured URL
    assert "given ***" in record["injection"]["output"]
    for canary in (token, argv_canary, password):
        for index, text in enumerate(outputs):
            assert canary not in text, f"a credential leaked into output #{index}"
    assert daemon.state.version > 0


def test_the_cli_shows_phase_and_time_on_a_terminal_and_exits_1_when_aborted(
    tmp_path: Path, service_env: dict[str, str], unique: str
) -> None:
    """On a terminal the phase and elapsed time are drawn; stdout (a pipe) gets the JSON."""
    table = f"drill_cli_{unique}"
    asyncio.run(create_dimension(service_env["TIMESCALEDB_URL"], table))
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dimensions": [{"name": "trades", "table": table}],
                "failover_drill": {
                    "enabled": True,
                    "label": f"drill-{unique}",
                    "deadline_seconds": 1.5,
                    "probe_interval_seconds": 0.2,
                },
            }
        )
    )
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "exporter", "drill", "--config.file", str(config)),
                *("--scenario", "observe", "--log.level", "error"),
            ],
            cwd=REPO,
            env={**os.environ, "KAFKA_MANIFEST_PUBLISH": "false"},
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        drawn = _drain(controller)
    finally:
        os.close(controller)
        asyncio.run(drop_table(service_env["TIMESCALEDB_URL"], table))
    record = json.loads(done.stdout)
    assert done.returncode == 1
    assert record["result"] == "aborted"
    assert f"drill {record['drill_id']}: await (" in drawn
    assert "s)" in drawn


def _drain(fd: int) -> str:
    """Read what a pseudo-terminal received (it ends with EIO once the writer closed)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
