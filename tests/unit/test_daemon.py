"""The daemon's lifecycle in-process: listen on port 0, ready, scrape, signals, stop.

The built-in probes are scripted and every service address refuses, so no service is
needed; the HTTP listener, the supervisor, the signal handlers and the stop are all real.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from exporter.config import IngestSettings
from exporter.connectors.base import ConnectorState
from exporter.daemon import Daemon
from exporter.errors import ListenError
from exporter.supervisor import TaskState
from tests.waiting import wait_for

from .fakes.probes import ProbeScript

Settings = Callable[..., IngestSettings]
CONNECTORS = ("timescale", "redis", "kafka")
PROBE_LOOP = "probe-loop:local"


@asynccontextmanager
async def serving(daemon: Daemon) -> AsyncIterator[str]:
    """Start the daemon; yield its base URL; stop it afterwards."""
    await daemon.start()
    try:
        yield f"http://127.0.0.1:{daemon.port}"
    finally:
        await daemon.stop()


async def get(url: str) -> tuple[int, str]:
    """GET ``url``; return the status and the body."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def samples(text: str, name: str) -> dict[str, float]:
    """Return ``{connector: value}`` of the exposition samples called ``name``."""
    return {
        s.labels.get("connector", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def refuses(port: int) -> bool:
    """Tell whether nothing listens on the loopback ``port`` any more."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def started(daemon: Daemon, probes: ProbeScript) -> None:
    """Wait until ``run`` has started the daemon and its first probe cycle is done."""
    await probes.called.until(lambda: probes.calls["kafka"] >= 1, timeout=5.0)
    assert await daemon.supervisor.wait_ready(PROBE_LOOP, timeout=5.0)


def sigterm_handler() -> Any:
    """Return the current SIGTERM handler."""
    return signal.getsignal(signal.SIGTERM)


async def test_listens_on_port_zero_and_is_ready_after_the_first_cycle(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """Bound once on :0, it serves at once, answers ready after a cycle, and closes on stop."""
    probes.gate.clear()  # the first cycle waits until the test lets it finish
    daemon = Daemon(offline_settings())
    async with serving(daemon) as url:
        assert daemon.port
        assert (await get(url + "/-/healthy"))[0] == 200
        assert (await get(url + "/-/ready"))[0] == 503
        probes.gate.set()
        assert await daemon.supervisor.wait_ready(PROBE_LOOP, timeout=5.0)
        assert (await get(url + "/-/ready"))[0] == 200
        status, text = await get(url + "/metrics")
        assert status == 200
        assert samples(text, "ingest_connector_up") == dict.fromkeys(CONNECTORS, 1.0)
        status, manifest = await get(url + "/api/v1/manifest")
        assert status == 200
        assert "unit-test-pw" not in manifest
    assert refuses(daemon.port)
    services = daemon.services[0]
    assert [c.state for c in (services.timescale, services.redis, services.kafka)] == [
        ConnectorState.STOPPED
    ] * 3


async def test_a_scrape_shows_what_the_latest_cycle_saw(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """A connector going down shows as up 0 and a refused failure at the next scrape."""
    daemon = Daemon(offline_settings())
    async with serving(daemon) as url:
        assert await daemon.supervisor.wait_ready(PROBE_LOOP, timeout=5.0)
        probes.down.add("redis")
        seen = probes.calls["redis"]
        # Two more calls: the cycle after the change has been recorded.
        # Two cycles at the 1 s minimum interval, with room for a loaded machine.
        await probes.called.until(lambda: probes.calls["redis"] >= seen + 2, timeout=6.0)
        _, text = await get(url + "/metrics")
    assert samples(text, "ingest_connector_up") == {"timescale": 1.0, "redis": 0.0, "kafka": 1.0}
    failures = {
        (s.labels["connector"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ingest_probe_failures_total"
    }
    assert failures[("redis", "refused")] >= 1


async def test_sigterm_stops_through_the_graceful_path(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """SIGTERM sets the stop; the listener, jobs and connectors stop; the handler is restored."""
    before = sigterm_handler()
    daemon = Daemon(offline_settings())
    forced: list[bool] = []
    with capture_logs() as logs:
        run = asyncio.create_task(daemon.run(force_exit=lambda: forced.append(True)))
        await started(daemon, probes)
        assert sigterm_handler() != before, "run() routes the signal to the loop"
        port = daemon.port
        assert port
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(run, timeout=10.0)
    events = [e["event"] for e in logs]
    order = ["exporter_started", "signal_received", "exporter_stopping", "exporter_stopped"]
    assert [e for e in events if e in order] == order
    assert next(e for e in logs if e["event"] == "signal_received")["signal"] == "SIGTERM"
    assert next(e for e in logs if e["event"] == "exporter_stopped")["tasks_clean"] is True
    assert forced == []
    assert "exporter_forced_exit" not in events
    assert sigterm_handler() == before
    assert refuses(port)
    info = daemon.supervisor.get(PROBE_LOOP)
    assert info is not None
    assert info.state is TaskState.CANCELLED


async def test_the_stop_event_alone_stops_an_embedded_daemon(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """Without signal handlers (embedded use) setting ``stop_event`` stops it the same way."""
    before = sigterm_handler()
    daemon = Daemon(offline_settings())
    with capture_logs() as logs:
        run = asyncio.create_task(daemon.run(install_signals=False))
        await started(daemon, probes)
        assert sigterm_handler() == before
        daemon.stop_event.set()
        await asyncio.wait_for(run, timeout=10.0)
    events = [e["event"] for e in logs]
    assert events.index("exporter_stopping") < events.index("exporter_stopped")
    assert "signal_received" not in events


@pytest.mark.parametrize(
    ("second", "with_force_exit", "forces"),
    [
        (signal.SIGINT, True, True),
        (signal.SIGTERM, True, False),
        (signal.SIGINT, False, False),
    ],
    ids=["second-sigint", "second-sigterm", "no-force-exit"],
)
async def test_only_a_second_sigint_forces_the_exit(
    offline_settings: Settings,
    probes: ProbeScript,
    second: signal.Signals,
    with_force_exit: bool,
    forces: bool,
) -> None:
    """While the stop waits on a stuck task, a second SIGINT calls ``force_exit`` at once."""
    cancelled, release = asyncio.Event(), asyncio.Event()
    probes.on_call = probes.stubborn_kafka(cancelled, release)
    forced: list[bool] = []

    def force_exit() -> None:
        forced.append(True)
        release.set()  # in the CLI the process ends here; this test lets the stop finish

    daemon = Daemon(offline_settings())
    with capture_logs() as logs:
        run = asyncio.create_task(daemon.run(force_exit=force_exit if with_force_exit else None))
        await started(daemon, probes)
        # The stuck cycle is the second, one 1 s interval after the first.
        await probes.called.until(lambda: probes.calls["kafka"] >= 2, timeout=6.0)
        os.kill(os.getpid(), signal.SIGINT)
        await cancelled.wait()  # the stop is now waiting for the stuck probe loop
        assert not run.done()
        os.kill(os.getpid(), second)
        # The handler runs on the loop; its log line is the only sign it ran.
        await wait_for(lambda: sum(e["event"] == "signal_received" for e in logs) == 2, timeout=2.0)
        assert forced == ([True] if forces else [])
        release.set()
        await asyncio.wait_for(run, timeout=10.0)
    events = [e["event"] for e in logs]
    assert ("exporter_forced_exit" in events) is forces
    assert events[-1] == "exporter_stopped"


async def test_a_taken_address_fails_before_anything_starts(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """A port in use raises ListenError naming the address; no connector or job was started."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = Daemon(offline_settings(INGEST_WEB_LISTEN_ADDRESS=f"127.0.0.1:{port}"))
        with capture_logs() as logs, pytest.raises(ListenError) as caught:
            await daemon.run(install_signals=False)
    assert str(caught.value).startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in str(caught.value).lower()
    assert caught.value.address == f"127.0.0.1:{port}"
    services = daemon.services[0]
    assert [c.state for c in (services.timescale, services.redis, services.kafka)] == [
        ConnectorState.NEW
    ] * 3
    assert daemon.supervisor.describe() == []
    assert probes.calls == {}
    assert [e["event"] for e in logs][-1] == "exporter_stopped", "the stop still ran"
