"""Run named background tasks: restart them with backoff, detect hangs, keep a short history.

Every supervised name gets one runner task (``supervisor:<name>``) that calls the factory with a
fresh `Heartbeat`, awaits the result and decides what happens next from the `RestartPolicy`.
One shared watchdog task cancels runs whose heartbeat went stale. Durations use the event-loop
clock; only the timestamps reported by `TaskSupervisor.describe` use the wall clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog

from exporter._cleanup import shielded
from exporter._supervisor import (
    _ENDED,
    Heartbeat,
    RestartPolicy,
    TaskInfo,
    TaskState,
    _Entry,
    _identity,
    _with_error,
)
from exporter.errors import SupervisorError

__all__ = ["Heartbeat", "RestartPolicy", "TaskInfo", "TaskState", "TaskSupervisor"]

_log = structlog.get_logger(__name__)

#: Longest error message kept in a snapshot; it ends up in logs and status pages.
_MAX_MESSAGE = 200
#: Timers may fire up to one clock tick early; treat such a deadline as reached, not re-arm it.
_DEADLINE_SLACK = 1e-3
_HUNG = "TaskHung"
#: The shutdown wait bounds itself; the cleanup helper's own bound is only a backstop.
_WAIT_SLACK = 1.0

_Factory = Callable[["Heartbeat"], Awaitable[None]]


class TaskSupervisor:
    """Supervise named asyncio tasks: restart with backoff, detect hangs, keep history.

    ``redact`` scrubs every error message before it is stored or logged, ``clock`` gives the
    wall-clock timestamps of snapshots and ``on_change`` is called synchronously after any state
    change (so a metrics layer can mark its cache dirty).
    """

    def __init__(
        self,
        *,
        history: int = 20,
        redact: Callable[[str], str] = _identity,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if history < 0:
            raise SupervisorError("history must be >= 0")
        self._redact = redact
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._clock = clock
        self._on_change = on_change
        self._live: dict[str, _Entry] = {}
        self._history: collections.deque[TaskInfo] = collections.deque(maxlen=history)
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None
        self._watch_wake = asyncio.Event()

    def create(
        self,
        factory: Callable[[Heartbeat], Awaitable[None]],
        *,
        name: str,
        restart: RestartPolicy | None = None,
        hang_timeout: float | None = None,
    ) -> TaskInfo:
        """Start supervising ``factory`` under ``name`` now and return its first snapshot."""
        loop = self._admit(name)
        if hang_timeout is not None and hang_timeout <= 0:
            raise SupervisorError("hang_timeout must be > 0")
        entry = _Entry(TaskInfo(name, TaskState.PENDING, hang_timeout=hang_timeout))
        if restart is not None:
            entry.policy = restart
        self._live[name] = entry  # before the task exists: an eager task factory may run it now
        entry.task = loop.create_task(self._run_loop(entry, factory), name=f"supervisor:{name}")
        # A done callback, not try/finally: a task cancelled before its first step runs no code.
        entry.task.add_done_callback(lambda done: self._task_done(entry, done))
        if hang_timeout is not None and self._watchdog is None:
            self._watchdog = loop.create_task(self._watch(), name="supervisor:watchdog")
        self._publish(entry, entry.info)
        return entry.info

    def track(self, task: asyncio.Task[Any], *, name: str) -> None:
        """Adopt an existing task: never restarted, but its end is recorded and logged."""
        self._admit(name)
        # An adopted task has no readiness handshake; running is the best readiness we know.
        info = TaskInfo(name, TaskState.RUNNING, ready=True, started_at=self._clock())
        entry = _Entry(info, adopted=True)
        entry.task = task
        self._live[name] = entry
        task.add_done_callback(lambda done: self._task_done(entry, done))
        self._publish(entry, entry.info)

    def describe(self) -> list[TaskInfo]:
        """Return live tasks in creation order, then the most recent ended ones, newest first."""
        return [entry.info for entry in self._live.values()] + list(self._history)

    def get(self, name: str) -> TaskInfo | None:
        """Return the live task or, failing that, the newest ended one called ``name``."""
        if (entry := self._live.get(name)) is not None:
            return entry.info
        return next((info for info in self._history if info.name == name), None)

    async def cancel_all(self, timeout: float = 5.0) -> bool:
        """Cancel every task and wait up to ``timeout`` seconds; return whether all ended.

        Idempotent; later calls wait again for whatever is still running. The wait is
        shielded: cancelling the caller does not stop the shutdown, it is re-raised after it.
        After the first call `create` and `track` raise `SupervisorError`.
        """
        self._closed = True
        extra = []
        if self._watchdog is not None:
            self._watchdog.cancel()
            extra.append(self._watchdog)
        await self._cancel_entries(list(self._live.values()), extra, timeout)
        return not self._live and (self._watchdog is None or self._watchdog.done())

    async def cancel(self, *names: str, timeout: float = 5.0) -> bool:
        """Cancel the named live tasks (no restart) and wait up to ``timeout`` for them to end."""
        entries = [self._live[name] for name in names if name in self._live]
        await self._cancel_entries(entries, [], timeout)
        return not any(name in self._live for name in names)

    async def _cancel_entries(
        self, entries: list[_Entry], extra: list[asyncio.Task[Any]], timeout: float
    ) -> None:
        for entry in entries:
            if not entry.cancel_requested:  # a second cancel would interrupt the task's cleanup
                entry.cancel_requested = True
                entry.task.cancel()
        tasks = [entry.task for entry in entries] + extra
        if pending := {task for task in tasks if not task.done()}:
            # asyncio.wait returns at its timeout without cancelling anything; shielded keeps
            # waiting through a cancellation of our caller, then re-raises it.
            await shielded(
                asyncio.wait(pending, timeout=max(timeout, 0.0)),
                timeout=max(timeout, 0.0) + _WAIT_SLACK,
                event="supervisor_shutdown",
            )
        # Retire tasks whose done callbacks have not run yet, so the caller sees final states.
        for entry in entries:
            if entry.task.done() and self._live.get(entry.info.name) is entry:
                self._task_done(entry, entry.task)

    async def wait_ready(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``name`` to signal ready; False if it ended first."""
        entry = self._live.get(name)
        if entry is None:
            if self.get(name) is not None:
                return False
            raise SupervisorError(f"no task named {name!r}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not entry.info.ready and entry.info.state not in _ENDED:
                    await entry.changed.wait()
        return entry.info.ready

    # -- internals -------------------------------------------------------------------------

    def _admit(self, name: str) -> asyncio.AbstractEventLoop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError as exc:
            raise SupervisorError("the supervisor needs a running event loop") from exc
        if self._closed:
            raise SupervisorError(f"cannot start {name!r}: the supervisor is shut down")
        if name in self._live:
            raise SupervisorError(f"a task named {name!r} is already supervised")
        return loop

    async def _run_loop(self, entry: _Entry, factory: _Factory) -> TaskState:
        """Run, judge and restart until the policy says stop; return the final state."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a coroutine run by create_task has a task
            raise SupervisorError("runner outside a task")
        loop = asyncio.get_running_loop()
        policy, name = entry.policy, entry.info.name
        while True:
            heartbeat = Heartbeat(
                loop.time,
                lambda beat: self._mark_ready(entry, beat),
                lambda beat: self._mark_failing(entry, beat),
            )
            entry.heartbeat = heartbeat
            started_at, started = self._clock(), loop.time()
            running = replace(
                entry.info,
                state=TaskState.RUNNING,
                ready=False,
                failing=False,
                next_restart_at=None,
            )
            self._publish(entry, replace(running, started_at=started_at))
            _log.info("task_started", task=name, restarts=entry.info.restarts)
            if entry.info.hang_timeout is not None:
                self._watch_wake.set()
            error = await self._run_once(entry, task, factory, heartbeat)
            if entry.cancel_requested or task.cancelling():
                return TaskState.CANCELLED  # the coroutine swallowed our cancellation
            if error is None:
                _log.info("task_finished", task=name, restarting=policy.restart_on_success)
                if not policy.restart_on_success:
                    return TaskState.FINISHED
                info = replace(entry.info, consecutive_failures=0)
                delay = policy.delay(1, self._rng)  # never restart a returning loop hot
            else:
                streak = entry.info.consecutive_failures
                # A run that stayed up for reset_after was healthy: this failure starts a streak.
                # A hung run was healthy only until its last beat, not for the silence after it.
                ended = heartbeat.last_beat if error[0] == _HUNG else loop.time()
                streak = (0 if ended - started >= policy.reset_after else streak) + 1
                info = _with_error(entry.info, streak, error)
                delay = policy.delay(streak, self._rng)
                if policy.max_restarts is not None and streak > policy.max_restarts:
                    entry.info = info  # published by _retire together with the final state
                    self._log_failure(info, None)
                    _log.error(
                        "task_gave_up", task=name, restarts=info.restarts, error_type=error[0]
                    )
                    return TaskState.FAILED
                self._log_failure(info, delay)
            next_at = self._clock() + delay
            self._publish(entry, replace(info, state=TaskState.BACKOFF, next_restart_at=next_at))
            await asyncio.sleep(delay)
            entry.info = replace(entry.info, restarts=entry.info.restarts + 1)  # published on start
            _log.info("task_restarted", task=name, restarts=entry.info.restarts)

    async def _run_once(
        self, entry: _Entry, task: asyncio.Task[Any], factory: _Factory, heartbeat: Heartbeat
    ) -> tuple[str, str] | None:
        """Run the factory once; return (error type, redacted message), or None if it returned."""
        error: tuple[str, str] | None = None
        try:
            await factory(heartbeat)
        except asyncio.CancelledError:
            # Only a watchdog cancellation is a failure; any other request ends the task.
            if entry.hung_for is None or task.cancelling() > 1:
                raise
        except Exception as exc:  # noqa: BLE001 - a supervisor must outlive whatever its task raises
            error = self._describe_error(exc)
        if (silent := entry.hung_for) is not None:
            entry.hung_for = None
            task.uncancel()  # consume the watchdog's request so the next run is not cancelled
            error = (_HUNG, f"no heartbeat for {round(silent, 3)}s")
        return error

    async def _watch(self) -> None:
        """Cancel runs whose heartbeat is older than their hang timeout; sleep until the next."""
        loop = asyncio.get_running_loop()
        while True:
            self._watch_wake.clear()
            now = loop.time()
            next_deadline: float | None = None
            for entry in list(self._live.values()):
                timeout, beat = entry.info.hang_timeout, entry.heartbeat
                if timeout is None or beat is None or entry.hung_for is not None:
                    continue
                # A run being stopped is silent while it cleans up; a second cancel would cut
                # that cleanup short (a final offset commit, a producer's flush).
                if entry.cancel_requested or entry.info.state is not TaskState.RUNNING:
                    continue
                deadline = beat.last_beat + timeout
                if deadline - now <= _DEADLINE_SLACK:
                    entry.hung_for = silent = now - beat.last_beat
                    _log.warning("task_hung", task=entry.info.name, silent_seconds=round(silent, 3))
                    entry.task.cancel()
                elif next_deadline is None or deadline < next_deadline:
                    next_deadline = deadline
            # Beats only move deadlines later, so sleeping until the earliest one misses nothing;
            # a new run (possibly with an earlier deadline) sets the wake event.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_deadline):
                    await self._watch_wake.wait()

    def _task_done(self, entry: _Entry, task: asyncio.Task[Any]) -> None:
        """Retire an entry whose task ended; a runner's result is its own final state."""
        if self._live.get(entry.info.name) is not entry:
            return  # already retired by cancel_all
        if task.cancelled():
            state = TaskState.CANCELLED
        elif (exc := task.exception()) is not None:  # retrieved: asyncio won't report it as lost
            streak = entry.info.consecutive_failures + 1
            entry.info = _with_error(entry.info, streak, self._describe_error(exc))
            self._log_failure(entry.info, None)
            state = TaskState.FAILED
        elif entry.adopted:
            _log.info("task_finished", task=entry.info.name, restarting=False)
            state = TaskState.FINISHED
        else:
            state = task.result()
        self._retire(entry, state)

    def _log_failure(self, info: TaskInfo, backoff: float | None) -> None:
        _log.warning(
            "task_failed",
            task=info.name,
            error_type=info.last_error_type,
            error_message=info.last_error_message,
            restarts=info.restarts,
            consecutive_failures=info.consecutive_failures,
            backoff_seconds=None if backoff is None else round(backoff, 3),
        )

    def _mark_ready(self, entry: _Entry, heartbeat: Heartbeat) -> None:
        # A leftover child of an earlier run may still hold its old heartbeat: ignore it.
        info = entry.info
        current = heartbeat is entry.heartbeat and info.state is TaskState.RUNNING
        if current and (not info.ready or info.failing):
            self._publish(entry, replace(info, ready=True, failing=False))

    def _mark_failing(self, entry: _Entry, heartbeat: Heartbeat) -> None:
        info = entry.info
        if heartbeat is entry.heartbeat and info.state is TaskState.RUNNING and not info.failing:
            self._publish(entry, replace(info, failing=True))

    def _retire(self, entry: _Entry, state: TaskState) -> None:
        if state is TaskState.CANCELLED:
            _log.info("task_cancelled", task=entry.info.name, restarts=entry.info.restarts)
        del self._live[entry.info.name]
        entry.heartbeat = None
        final = replace(
            entry.info,
            state=state,
            ready=False,
            failing=False,
            next_restart_at=None,
            finished_at=self._clock(),
        )
        self._history.appendleft(final)  # before on_change runs, so describe() shows it ended
        self._publish(entry, final)

    def _publish(self, entry: _Entry, info: TaskInfo) -> None:
        entry.info = info
        entry.changed.set()
        entry.changed = asyncio.Event()
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # noqa: BLE001 - a metrics hook must never take supervision down
                _log.exception("supervisor_callback_failed")

    def _describe_error(self, exc: BaseException) -> tuple[str, str]:
        """Return the error's type name and its message redacted, then truncated.

        Redaction comes first so a secret is never cut in half and missed by the redactor.
        """
        try:
            cleaned = self._redact(str(exc))
        except Exception:  # noqa: BLE001 - no traceback: it could carry the raw message
            _log.error("supervisor_redaction_failed")
            cleaned = "<redaction failed>"
        if len(cleaned) > _MAX_MESSAGE:
            cleaned = cleaned[: _MAX_MESSAGE - 3] + "..."
        return type(exc).__name__, cleaned
