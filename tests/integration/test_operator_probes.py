"""Operator probes in the running daemon: merged with built-ins, bounded, loop never blocked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from exporter.config import IngestSettings
from exporter.probes import Reason

from .conftest import REPO, running_daemon, sample, scrape


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "probes.yaml"
    path.write_text(
        "probes:\n"
        "  operator:\n"
        "    - {name: stuck, target: 'tests.fixtures.operator_probes:sleep_ten_seconds',"
        " timeout_seconds: 1}\n"
        "    - {name: orders_api, target: 'tests.fixtures.operator_probes:orders_api'}\n"
    )
    return path


async def test_sync_probe_times_out_in_about_a_second_while_scrapes_answer(
    settings_factory: Callable[..., IngestSettings], tmp_path: Path
) -> None:
    """A sync probe sleeping 10 s with a 1 s timeout is `timeout` in ~1 s; /metrics stays fast."""
    settings = settings_factory(_config(tmp_path), INGEST_PROBE_INTERVAL_SECONDS="30")
    async with running_daemon(settings) as (daemon, url):
        t0 = time.monotonic()
        scrape_times = []
        while not daemon.state.ready:
            s0 = time.monotonic()
            await scrape(url)
            scrape_times.append(time.monotonic() - s0)
            # Not a wait: scrapes are sampled every 50 ms while the stuck probe runs.
            await asyncio.sleep(0.05)
            assert time.monotonic() - t0 < 5
        report = daemon.state.reports["local"]
        stuck = next(r for r in report.results if r.check == "stuck")
        assert stuck.reason is Reason.TIMEOUT
        assert 0.9 <= stuck.latency_seconds <= 1.1
        assert len(scrape_times) >= 5
        assert max(scrape_times) < 0.25
        # Built-ins still ran: the operator probes were merged, not substituted.
        checks = {(r.connector, r.check) for r in report.results}
        assert {("redis", "ping"), ("operator", "orders_api"), ("operator", "stuck")} <= checks
        text = await scrape(url)
        assert sample(text, "ingest_check_up", connector="operator", check="orders_api") == 1
        assert sample(text, "ingest_check_up", connector="operator", check="stuck") == 0


async def test_unimportable_operator_probe_is_a_config_error(tmp_path: Path) -> None:
    """A probe path that cannot be imported makes check-config exit 2 naming the key."""
    path = tmp_path / "bad.yaml"
    path.write_text("probes:\n  operator:\n    - {name: x, target: 'no_such_module:fn'}\n")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exporter", "check-config", "--config.file", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "probes.operator[0].target" in result.stderr


async def test_probe_command_exit_codes(service_env: dict[str, str], tmp_path: Path) -> None:
    """`ingest-exporter probe` exits 0 when all checks pass and 1 when one fails."""

    def probe(*extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "exporter", "probe", "--format", "json", *extra],
            cwd=REPO,
            env={**os.environ, **service_env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = await asyncio.to_thread(probe)
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)["reports"][0]
    assert report["connectors"]["timescale"]["up"] is True
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        "probes:\n  operator:\n"
        "    - {name: nope, target: 'tests.fixtures.operator_probes:always_false'}\n"
    )
    bad = await asyncio.to_thread(probe, "--config.file", str(failing))
    assert bad.returncode == 1
    data = json.loads(bad.stdout)["reports"][0]["connectors"]["operator"]
    assert data["checks"][0]["reason"] == "error"


async def test_probe_command_does_not_wait_for_a_stuck_sync_probe(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """`probe` exits 1 soon after the 1 s timeout, not after the stuck probe's 10 s sleep."""
    command = ["probe", "--format", "json", "--config.file", str(_config(tmp_path))]
    t0 = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exporter", *command],
        cwd=REPO,
        env={**os.environ, **service_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - t0 < 6
    assert "Traceback" not in result.stderr
