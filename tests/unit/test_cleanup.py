"""The shielded-cleanup helper: finishes through cancellation, bounded, logged, strongly held."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter import _cleanup
from exporter._cleanup import in_background, shielded


class Gate:
    """A cleanup that signals when it started and ends only when released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False
        self.cancelled = False

    async def run(self) -> None:
        """Wait for the release, recording whether it finished or was cancelled."""
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True


async def _settle() -> None:
    """Let every ready callback and task step run (nothing here waits on time)."""
    for _ in range(5):
        await asyncio.sleep(0)  # a yield to the loop, not a timed wait


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Collect what the event loop would report as unhandled (e.g. an exception never read)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(None)


async def test_a_cancelled_caller_waits_for_the_cleanup_then_is_cancelled() -> None:
    """Cancelling the caller lets the cleanup finish first; the cancellation comes after."""
    gate = Gate()
    caller = asyncio.create_task(shielded(gate.run(), timeout=10, event="thing_close"))
    await gate.started.wait()
    caller.cancel()
    await _settle()
    assert not caller.done()  # still waiting for the cleanup, not cut short
    caller.cancel()  # a second request is absorbed the same way
    await _settle()
    assert not caller.done()
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert gate.finished
    assert not gate.cancelled


async def test_a_callers_own_deadline_fires_after_the_cleanup_as_a_timeout() -> None:
    """A caller's asyncio.timeout expiring during the cleanup still ends as its TimeoutError."""
    gate = Gate()

    async def caller() -> None:
        async with asyncio.timeout(0):  # expires on the loop's next step, mid-cleanup
            await shielded(gate.run(), timeout=10, event="thing_close")

    task = asyncio.create_task(caller())
    await gate.started.wait()
    await _settle()
    assert task.cancelling()  # the deadline has cancelled the caller...
    assert not task.done()  # ...which still waits for the cleanup
    gate.release.set()
    with pytest.raises(TimeoutError):
        await task
    assert gate.finished


async def test_a_cleanup_past_its_timeout_is_cancelled_and_logged() -> None:
    """A cleanup that does not end in time is cancelled, logged with its context, reported."""
    gate = Gate()
    with capture_logs() as logs:
        done = await shielded(gate.run(), timeout=0.02, event="thing_close", deployment="eu-1")
    assert done is False
    assert gate.cancelled
    assert logs == [
        {
            "event": "thing_close_timed_out",
            "log_level": "warning",
            "timeout_seconds": 0.02,
            "deployment": "eu-1",
        }
    ]


async def test_a_failing_cleanup_is_logged_not_raised() -> None:
    """A cleanup's exception becomes one warning with its type and message; nothing raises."""

    async def broken() -> None:
        raise ConnectionResetError("peer went away")

    with capture_logs() as logs:
        done = await shielded(broken(), timeout=1, event="thing_close", connector="kafka")
    assert done is False
    assert logs == [
        {
            "event": "thing_close_failed",
            "log_level": "warning",
            "error_type": "ConnectionResetError",
            "error": "peer went away",
            "connector": "kafka",
        }
    ]


async def test_the_cleanups_own_timeout_is_a_failure_not_ours() -> None:
    """A TimeoutError raised by the cleanup itself is logged as a failure, not our timeout."""

    async def times_out() -> None:
        raise TimeoutError

    with capture_logs() as logs:
        done = await shielded(times_out(), timeout=1, event="thing_close", level=logging.DEBUG)
    assert done is False
    assert [(e["event"], e["log_level"], e["error"]) for e in logs] == [
        ("thing_close_failed", "debug", None)
    ]


async def test_a_successful_cleanup_says_nothing() -> None:
    """A cleanup that completes returns True and logs nothing."""
    gate = Gate()
    gate.release.set()
    with capture_logs() as logs:
        assert await shielded(gate.run(), timeout=1, event="thing_close")
    assert logs == []
    assert gate.finished


async def test_the_task_is_held_strongly_until_it_ends(loop_errors: list[dict[str, Any]]) -> None:
    """Nobody else holding the task, it survives a garbage collection and then lets go."""
    gate = Gate()
    ref = weakref.ref(in_background(gate.run(), timeout=10, event="thing_close"))
    await gate.started.wait()
    gc.collect()
    task = ref()
    assert task is not None
    assert task in _cleanup._running
    del task
    gate.release.set()
    await _settle()
    gc.collect()
    assert ref() is None
    assert gate.finished
    assert loop_errors == []


async def test_in_background_leaves_at_once_and_its_failure_is_not_lost(
    loop_errors: list[dict[str, Any]],
) -> None:
    """A background cleanup does not hold its caller; its failure is logged, never reported lost."""

    async def broken() -> None:
        await asyncio.sleep(0)  # a yield, not a wait: it fails after its caller has left
        raise OSError("socket already closed")

    with capture_logs() as logs:
        task = in_background(broken(), timeout=1, event="client_close", level=logging.DEBUG)
        assert not task.done()
        await asyncio.wait({task})
        del task
        gc.collect()
    assert [(e["event"], e["log_level"], e["error_type"]) for e in logs] == [
        ("client_close_failed", "debug", "OSError")
    ]
    assert loop_errors == []


async def test_waiting_on_a_background_task_never_cancels_it() -> None:
    """A caller cancelled while it awaits asyncio.wait on the task leaves the cleanup running."""
    gate = Gate()
    task = in_background(gate.run(), timeout=10, event="thing_close")
    waiter = asyncio.create_task(asyncio.wait({task}))
    await gate.started.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not task.done()
    gate.release.set()
    await asyncio.wait({task})
    assert gate.finished
