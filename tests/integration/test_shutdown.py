"""SIGTERM at the worst moments: mid probe cycle and mid Kafka rebalance, on the real stack.

The daemon runs as a process in Python's development mode (``-X dev``), which reports
unclosed resources, never-awaited coroutines and tasks destroyed while pending on stderr;
each test asserts stderr holds none of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from exporter.daemon import SHUTDOWN_TIMEOUT

from .conftest import REPO, sample
from .net import free_port

#: What `run` may take from SIGTERM to exit: the graceful stop plus the exit grace.
EXIT_BOUND = SHUTDOWN_TIMEOUT + 1.5
#: What development mode prints for a leak or a lost task; none may appear.
_WARNINGS = (
    "ResourceWarning",
    "unclosed",
    "Task was destroyed but it is pending",
    "Task exception was never retrieved",
    "was never awaited",
    "Traceback",
)

# An operator probe that marks its start in a file, then holds the cycle for 3 s.
_SLOW_PROBE = """
import asyncio
import os
from pathlib import Path


async def slow() -> bool:
    Path(os.environ["SLOW_PROBE_MARK"]).write_text("started")
    await asyncio.sleep(3)
    return True
"""


class _Daemon:
    """`ingest-exporter run` as a process in development mode, its stderr kept in a file.

    A file, not a pipe: at DEBUG the daemon writes more than a pipe holds, and a pipe nobody
    reads until the end would block its logging and with it the event loop.
    """

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.stderr_path = folder / "daemon.stderr"
        address = f"127.0.0.1:{self.port}"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-X",
                    "dev",
                    "-m",
                    "exporter",
                    "run",
                    "--web.listen-address",
                    address,
                ],
                cwd=REPO,
                env={**os.environ, "INGEST_LOG_LEVEL": "debug", **env},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )

    def stderr(self) -> str:
        """Return what the daemon wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def terminate(self) -> float:
        """SIGTERM the daemon; return the seconds it took to exit."""
        t0 = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.process.wait, EXIT_BOUND + 20)
        return time.monotonic() - t0

    def kill(self) -> None:
        """Kill the daemon if it still runs (a failed test's leftover)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@asynccontextmanager
async def _daemon(env: dict[str, str], folder: Path) -> AsyncIterator[_Daemon]:
    """Run the daemon; kill it afterwards if the test left it running."""
    daemon = _Daemon(env, folder)
    try:
        yield daemon
    finally:
        daemon.kill()


async def _metrics(port: int) -> str:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


def _assert_clean_exit(daemon: _Daemon, elapsed: float) -> None:
    stderr = daemon.stderr()
    assert daemon.process.returncode == 0, stderr[-3000:]
    assert elapsed < EXIT_BOUND, elapsed
    found = [w for w in _WARNINGS if w in stderr]
    assert not found, f"{found}: {stderr[-3000:]}"
    events = [json.loads(line).get("event") for line in stderr.splitlines() if line.startswith("{")]
    assert "exporter_stopped" in events


async def test_sigterm_during_a_probe_cycle(service_env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM while a cycle's probes run: exit 0 within the bound, nothing left unclosed."""
    (tmp_path / "slow_probe.py").write_text(_SLOW_PROBE, encoding="utf-8")
    mark = tmp_path / "started"
    env = {
        "PYTHONPATH": f"{tmp_path}:{REPO}",
        "SLOW_PROBE_MARK": str(mark),
        "INGEST_OPERATOR_PROBES": "slow=slow_probe:slow",
        "INGEST_PROBE_INTERVAL_SECONDS": "10",
        "INGEST_PROBE_TIMEOUT_SECONDS": "5",
        "KAFKA_MANIFEST_PUBLISH": "false",
    }
    async with _daemon({**service_env, **env}, tmp_path) as daemon:
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert daemon.process.poll() is None, daemon.stderr()[-3000:]
            assert time.monotonic() < deadline, "the probe cycle never started"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the built-in probes are in flight too now
        elapsed = await daemon.terminate()
    _assert_clean_exit(daemon, elapsed)


async def _until_rebalancing(admin: AIOKafkaAdminClient, group: str) -> None:
    """Wait until the group coordinator reports the group as rebalancing."""
    deadline = time.monotonic() + 20
    while True:
        (response,) = await admin.describe_consumer_groups([group])
        # DescribeGroups v0+: groups = [(error_code, group_id, state, ...)]
        state = response.groups[0][2]
        if state in {"PreparingRebalance", "CompletingRebalance"}:
            return
        assert time.monotonic() < deadline, f"group state stayed {state}"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_sigterm_during_a_kafka_rebalance(
    service_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    """SIGTERM while the bridge's group rebalances: clean exit within the bound, offsets kept.

    Every message the bridge delivered has its offset committed when the process is gone,
    so a successor in the group starts after them.
    """
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group = f"shutdown-{unique}", f"shutdown-group-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    joiner = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
        await producer.start()
        for i in range(40):
            await producer.send_and_wait(topic, json.dumps({"seq": i}).encode(), partition=i % 2)
        env = {
            "INGEST_DIMENSIONS": "ticks",
            "KAFKA_INGEST_TOPICS": f"ticks:{topic}",
            "KAFKA_INGEST_CONSUMER_GROUP": group,
            "INGEST_PROBE_INTERVAL_SECONDS": "1",
            "INGEST_PROBE_TIMEOUT_SECONDS": "0.9",
            "KAFKA_MANIFEST_PUBLISH": "false",
        }
        async with _daemon({**service_env, **env}, tmp_path) as daemon:
            deadline = time.monotonic() + 60
            while True:
                assert daemon.process.poll() is None, daemon.stderr()[-3000:]
                try:
                    delivered = sample(await _metrics(daemon.port), "ingest_bridge_messages_total")
                except aiohttp.ClientError:
                    delivered = None
                if delivered == 40:
                    break
                assert time.monotonic() < deadline, f"bridge delivered {delivered} of 40"
                await asyncio.sleep(0.2)
            # A second member joins: the coordinator starts a rebalance and waits for the
            # bridge to rejoin; SIGTERM lands inside that window.
            joining = asyncio.create_task(joiner.start())
            await _until_rebalancing(admin, group)
            elapsed = await daemon.terminate()
            await asyncio.wait_for(joining, 60)
        _assert_clean_exit(daemon, elapsed)
        offsets = await admin.list_consumer_group_offsets(group)
        committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
        assert committed == {0: 20, 1: 20}, committed
        # The successor's position is after everything delivered: nothing is redelivered.
        positions = {
            p: await joiner.position(TopicPartition(topic, p))
            for p in (0, 1)
            if TopicPartition(topic, p) in joiner.assignment()
        }
        assert all(position == 20 for position in positions.values()), positions
    finally:
        await joiner.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
