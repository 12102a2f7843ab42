"""Waiting in tests: await a condition, never sleep for a guessed time.

Two tools, for unit and integration tests alike:

- :class:`Changes` is a change callback handed to the code under test (an ``on_change``
  hook, a fake's notification). :meth:`Changes.until` re-checks its condition after each
  change, so nothing polls.
- :func:`wait_for` polls a condition that nothing announces (a server's state, a socket
  count, another process's answer). It is the one place where such a poll sleeps.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast, overload

import pytest

__all__ = ["Changes", "wait_for"]

T = TypeVar("T")


class Changes:
    """A change callback a test can await: call it on every change, await :meth:`until`."""

    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        """Record one change and wake every waiter."""
        self.count += 1
        self._event.set()

    async def until(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Wait until ``predicate`` holds, re-checking after each change; fail after ``timeout``.

        Raises:
            TimeoutError: the condition did not hold within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                self._event.clear()
                await self._event.wait()


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T]], *, timeout: float, interval: float = ...
) -> T: ...


@overload
async def wait_for(predicate: Callable[[], T], *, timeout: float, interval: float = ...) -> T: ...


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]], *, timeout: float, interval: float = 0.05
) -> T:
    """Poll ``predicate`` (sync or async) until it returns a truthy value, and return that value.

    Fails the test after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = predicate()
        value = cast("T", await outcome if inspect.isawaitable(outcome) else outcome)
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        # Nothing announces this condition (that is why this helper polls): look again later.
        await asyncio.sleep(interval)
