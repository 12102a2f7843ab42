"""A real Prometheus server for end-to-end tests: temp config, temp TSDB, loopback port.

The binary comes from the Debian package (``apt-get install -y --no-install-recommends
prometheus``; ``make test`` installs it). A missing binary fails the test: it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from .net import free_port

__all__ = [
    "PrometheusInstance",
    "free_port",
    "prometheus_binary",
    "running_prometheus",
    "scrape_config",
]

_INSTALL = "apt-get install -y --no-install-recommends prometheus"


def prometheus_binary(name: str = "prometheus") -> str:
    """Return the path of ``prometheus`` (or ``promtool``); fail the test when it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `{_INSTALL}` (make test does)")
    return path


class PrometheusInstance:
    """One Prometheus process and a small client for its HTTP API."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of Prometheus' own log (for failure messages)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return ``data`` (fail on an API error)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.base_url}/api/v1/{path}", params=params) as response,
        ):
            body = await response.json()
        if body.get("status") != "success":
            pytest.fail(f"Prometheus /api/v1/{path} failed: {body}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query and return its vector."""
        data = await self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def query_exemplars(self, expr: str, *, window: float = 300.0) -> list[dict[str, Any]]:
        """Return the exemplar series of ``expr`` over the last ``window`` seconds."""
        now = time.time()
        data = await self.api("query_exemplars", query=expr, start=str(now - window), end=str(now))
        result: list[dict[str, Any]] = data
        return result

    async def targets(self) -> list[dict[str, Any]]:
        """Return the active scrape targets (with ``health`` and ``lastError``)."""
        data = await self.api("targets", state="active")
        result: list[dict[str, Any]] = data["activeTargets"]
        return result

    async def wait_until(
        self,
        fetch: Callable[[], Any],
        predicate: Callable[[Any], bool],
        *,
        timeout: float = 30.0,
        what: str = "condition",
    ) -> Any:
        """Poll ``await fetch()`` until ``predicate`` holds; fail with the last value seen."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = await fetch()
            if predicate(value):
                return value
            # Polled: Prometheus announces nothing; the last value seen goes into the failure.
            await asyncio.sleep(0.5)
        pytest.fail(f"{what} not met within {timeout}s; last value: {value!r}\n{self.log_tail()}")

    async def stop(self) -> None:
        """Terminate Prometheus (kill it if it does not exit within 10 s)."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def scrape_config(
    job: str,
    targets: Sequence[str],
    *,
    interval: str = "1s",
    **extra: Any,
) -> dict[str, Any]:
    """Return one ``scrape_configs`` entry (``extra`` adds keys such as ``metrics_path``)."""
    return {
        "job_name": job,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "static_configs": [{"targets": list(targets)}],
        **extra,
    }


@asynccontextmanager
async def running_prometheus(
    workdir: Path,
    scrape_configs: Sequence[Mapping[str, Any]],
    *,
    features: Sequence[str] = ("exemplar-storage",),
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    args: Sequence[str] = (),
) -> AsyncIterator[PrometheusInstance]:
    """Start Prometheus scraping ``scrape_configs``; yield it once ready; stop it after.

    ``rule_files`` are loaded, alerts go to ``alertmanager`` (``host:port``) when given, and
    ``args`` are extra flags (e.g. ``--rules.alert.resend-delay=1s``).
    """
    binary = prometheus_binary()
    config = _write_config(workdir, scrape_configs, rule_files, alertmanager)
    instance: PrometheusInstance | None = None
    for _attempt in range(3):  # the port can be taken between choosing and binding it
        port = free_port()
        log = workdir / f"prometheus-{port}.log"
        sink = _append(log)
        try:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *(f"--enable-feature={f}" for f in features),
                *args,
                stdout=sink,
                stderr=sink,
            )
        finally:
            os.close(sink)  # the child has its own copy
        candidate = PrometheusInstance(process, port, log)
        if await _ready(candidate):
            instance = candidate
            break
        await candidate.stop()
    if instance is None:
        pytest.fail(f"Prometheus did not become ready:\n{candidate.log_tail()}")
    try:
        yield instance
    finally:
        await instance.stop()


def _write_config(
    workdir: Path,
    scrape_configs: Sequence[Mapping[str, Any]],
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    document: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [dict(c) for c in scrape_configs],
    }
    if rule_files:
        document["rule_files"] = [str(path) for path in rule_files]
    if alertmanager:
        targets = [{"targets": [alertmanager]}]
        document["alerting"] = {"alertmanagers": [{"static_configs": targets}]}
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return config


def _append(log: Path) -> int:
    """Return a file descriptor appending to ``log`` (the child keeps its own copy)."""
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


async def _ready(instance: PrometheusInstance, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if instance.process.returncode is not None:
                return False
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{instance.base_url}/-/ready") as response:
                    if response.status == 200:
                        return True
            # Polled: readiness is only an answer, and a failed start must end the wait early.
            await asyncio.sleep(0.1)
    return False
