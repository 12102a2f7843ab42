"""Cleanup that finishes even when its caller is cancelled: bounded, logged, strongly held.

Closing a client, committing offsets or waiting for tasks to end must not be cut short by the
cancellation that triggered it (a supervisor stopping a job, a probe hitting its deadline).
``asyncio.shield(coro)`` alone is not enough: the task it creates is referenced only weakly by
the event loop (the asyncio docs warn it may vanish mid-way), nothing bounds it, nobody
reads its failure, and the caller's cancellation still returns at once. The two helpers here
do it once for every such place:

* :func:`shielded` waits for the cleanup even through a cancellation of the caller, then
  re-raises that cancellation: what a graceful stop wants;
* :func:`in_background` returns at once and lets the cleanup run on: what a caller under a
  deadline of its own wants (a probe must report at its timeout, not after its clients closed).

Either way the cleanup runs in its own task, referenced here until it ends, is cancelled
after ``timeout`` seconds, and a failure is logged as ``<event>_failed`` (or
``<event>_timed_out``) with the error type and message; the message goes through the log
pipeline's redaction like every event value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

__all__ = ["in_background", "shielded"]

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")

#: Cleanup tasks still running: the loop keeps only weak references to tasks.
_running: set[asyncio.Task[Any]] = set()


def in_background(
    work: Awaitable[_T],
    *,
    timeout: float,
    event: str,
    level: int = logging.WARNING,
    **context: Any,
) -> asyncio.Task[_T]:
    """Run ``work`` in a task that no caller's cancellation reaches, and return the task.

    Awaiting the task with ``asyncio.wait`` (never cancels what it waits for) or
    ``asyncio.shield`` waits for it without ever cutting it short.

    Args:
        work: The cleanup (a coroutine, or a future already running).
        timeout: Seconds the cleanup may take; then it is cancelled and logged.
        event: Prefix of the log events, ``<event>_failed`` and ``<event>_timed_out``.
        level: Level of those events (``logging.DEBUG`` where the caller reports the
            failure itself, or a failure is expected and logged elsewhere).
        **context: Added to the log events (``deployment``, ``connector``...).
    """
    bounded = _bounded(work, timeout, event, level, context)
    task = asyncio.get_running_loop().create_task(bounded, name=f"cleanup:{event}")
    _running.add(task)
    task.add_done_callback(_finished)
    return task


async def shielded(
    cleanup: Awaitable[object],
    *,
    timeout: float,
    event: str,
    level: int = logging.WARNING,
    **context: Any,
) -> bool:
    """Run ``cleanup`` to its end even if the caller is cancelled; return whether it succeeded.

    A failure is logged, never raised. A cancellation of the caller while the cleanup runs
    is re-raised once the cleanup ended (at most ``timeout`` seconds later); it is never
    swallowed. Arguments as for :func:`in_background`.

    Raises:
        asyncio.CancelledError: The caller was cancelled while the cleanup ran.
    """
    task = in_background(cleanup, timeout=timeout, event=event, level=level, **context)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc  # keep waiting: the cleanup is bounded by itself
    if cancelled is not None:
        raise cancelled
    return not task.cancelled() and task.exception() is None


async def _bounded(
    work: Awaitable[_T], timeout: float, event: str, level: int, context: dict[str, Any]
) -> _T:
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await work
    except TimeoutError as exc:
        if deadline.expired():
            _log.log(level, event + "_timed_out", timeout_seconds=timeout, **context)
        else:
            _failed(event, level, exc, context)
        raise
    except Exception as exc:
        _failed(event, level, exc, context)
        raise


def _failed(event: str, level: int, exc: Exception, context: dict[str, Any]) -> None:
    error = str(exc) or None
    _log.log(level, event + "_failed", error_type=type(exc).__name__, error=error, **context)


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        # Only the loop's own shutdown (or the cleanup itself) cancels these tasks.
        _log.debug("cleanup_cancelled", task=task.get_name())
    else:
        task.exception()  # logged by _bounded; read here so asyncio never reports it lost
