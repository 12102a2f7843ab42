"""A real Alertmanager for tests (no gossip, loopback, temp storage) and a webhook receiver.

The binary comes from Debian's ``prometheus-alertmanager`` package (``scripts/tools.sh``
installs it, with ``amtool``). A missing binary fails the test: it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from .net import free_port

__all__ = [
    "AlertmanagerInstance",
    "Notification",
    "WebhookReceiver",
    "alertmanager_binary",
    "running_alertmanager",
    "webhook_receiver",
    "with_receiver",
]

_INSTALL = "apt-get install -y --no-install-recommends prometheus-alertmanager"


def alertmanager_binary(name: str = "prometheus-alertmanager") -> str:
    """Return the path of ``prometheus-alertmanager`` (or ``amtool``); fail when absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `{_INSTALL}` (make test does)")
    return path


@dataclass(frozen=True)
class Notification:
    """One alert of one webhook notification, as received, with its arrival time."""

    receiver: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    received: float  # time.monotonic()


class WebhookReceiver:
    """Collect Alertmanager webhook notifications (one path per receiver name)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        """Return the receiver's URL prefix (append ``/<receiver name>``)."""
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        """Record every alert of a notification."""
        body: dict[str, Any] = await request.json()
        now = time.monotonic()
        for alert in body["alerts"]:
            self.notifications.append(
                Notification(
                    request.match_info["receiver"],
                    alert["status"],
                    alert["labels"],
                    alert["annotations"],
                    now,
                )
            )
        return web.Response(text="ok")

    def names(self, status: str = "firing") -> set[str]:
        """Return the alert names received with ``status``."""
        return {n.labels["alertname"] for n in self.notifications if n.status == status}

    def first(self, status: str, **labels: str) -> Notification | None:
        """Return the first notification with ``status`` whose labels include ``labels``."""
        for n in self.notifications:
            if n.status == status and all(n.labels.get(k) == v for k, v in labels.items()):
                return n
        return None


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """Serve a ``WebhookReceiver`` on a free loopback port for the test's duration."""
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/{receiver}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()


class AlertmanagerInstance:
    """One Alertmanager process and a small client for its v2 API."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of Alertmanager's log (for failure messages)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST alerts to ``/api/v2/alerts`` as Prometheus would."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.base_url}/api/v2/alerts", json=alerts) as response,
        ):
            assert response.status == 200, await response.text()

    async def alerts(self) -> list[dict[str, Any]]:
        """Return every alert Alertmanager holds (with its inhibition status)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.base_url}/api/v2/alerts") as response,
        ):
            result: list[dict[str, Any]] = await response.json()
        return result

    async def stop(self) -> None:
        """Terminate Alertmanager (kill it if it does not exit within 10 s)."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def with_receiver(shipped: Path, receiver_url: str, *, timing: dict[str, str]) -> dict[str, Any]:
    """Return the shipped config with every webhook sent to ``receiver_url/<receiver>``.

    ``timing`` overrides group_wait / group_interval / repeat_interval on every route, so a
    test does not wait the shipped 30 s before the first notification.
    """
    config: dict[str, Any] = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{receiver_url}/{receiver['name']}"
    root = config["route"]
    root.update(timing)
    for route in root.get("routes", []):  # a child keeps the root's timing unless it set its own
        route.update({k: v for k, v in timing.items() if k in route})
    return config


@asynccontextmanager
async def running_alertmanager(
    workdir: Path, config: dict[str, Any]
) -> AsyncIterator[AlertmanagerInstance]:
    """Start Alertmanager with ``config``; yield it once ready; stop it after."""
    binary = alertmanager_binary()
    path = _write_config(workdir, config)
    port = free_port()
    log = workdir / "alertmanager.log"
    sink = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: a lone instance on loopback
            stdout=sink,
            stderr=sink,
        )
    finally:
        os.close(sink)  # the child has its own copy
    instance = AlertmanagerInstance(process, port, log)
    try:
        await _ready(instance)
        yield instance
    finally:
        await instance.stop()


def _write_config(workdir: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as ``alertmanager.yml`` into ``workdir``; return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


async def _ready(instance: AlertmanagerInstance, timeout: float = 30.0) -> None:
    """Wait until ``/-/ready`` answers 200; fail the test with the log otherwise."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if instance.process.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{instance.base_url}/-/ready") as response:
                    if response.status == 200:
                        return
            # Nothing announces readiness but the endpoint itself: look again shortly.
            await asyncio.sleep(0.1)
    pytest.fail(f"Alertmanager did not become ready:\n{instance.log_tail()}")
