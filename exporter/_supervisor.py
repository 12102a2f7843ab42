"""The supervisor's value types: states, restart policy, heartbeat, task snapshots."""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.errors import SupervisorError


class TaskState(enum.StrEnum):
    """Name the lifecycle states of a supervised task."""

    PENDING = "pending"
    RUNNING = "running"
    BACKOFF = "backoff"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


_ENDED = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED})


@dataclass(frozen=True)
class RestartPolicy:
    """Decide whether and when a supervised task is started again.

    ``max_restarts`` bounds consecutive failures (None: unlimited, 0: never restart). A run that
    stayed up for ``reset_after`` seconds starts a new streak, so backoff begins again from
    ``backoff_initial``. With ``restart_on_success`` a normal return is restarted after the
    initial backoff instead of ending the task (for loops that should never end).
    """

    max_restarts: int | None = None
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.1
    reset_after: float = 60.0
    restart_on_success: bool = False

    def __post_init__(self) -> None:
        if self.max_restarts is not None and self.max_restarts < 0:
            raise SupervisorError("max_restarts must be None or >= 0")
        if not 0 <= self.backoff_initial <= self.backoff_max:
            raise SupervisorError("need 0 <= backoff_initial <= backoff_max")
        if self.backoff_multiplier < 1:
            raise SupervisorError("backoff_multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise SupervisorError("jitter must be within [0, 1]")
        if self.reset_after < 0:
            raise SupervisorError("reset_after must be >= 0")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Return the seconds to wait before restart number ``attempt`` (1-based) of a streak."""
        try:
            raw = self.backoff_initial * self.backoff_multiplier ** max(attempt - 1, 0)
        except OverflowError:  # long streaks overflow the float; they are capped anyway
            raw = self.backoff_max
        jittered = raw * (1 + rng.uniform(-self.jitter, self.jitter)) if self.jitter else raw
        return max(0.0, min(jittered, self.backoff_max))


class Heartbeat:
    """Let a supervised coroutine report progress and readiness to its supervisor."""

    __slots__ = ("_clock", "_last_beat", "_on_failing", "_on_ready")

    def __init__(
        self,
        clock: Callable[[], float],
        on_ready: Callable[[Heartbeat], None] | None = None,
        on_failing: Callable[[Heartbeat], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_ready = on_ready
        self._on_failing = on_failing
        self._last_beat = clock()

    def beat(self) -> None:
        """Record that the task made progress just now."""
        self._last_beat = self._clock()

    def ready(self) -> None:
        """Mark the task ready to serve; this also counts as a beat."""
        self.beat()
        if self._on_ready is not None:
            self._on_ready(self)

    def failing(self) -> None:
        """Mark the task running but failing its job (its dependency is down); a beat too.

        The task is not ``up`` until its next :meth:`ready`. For a loop that survives an
        outage by retrying instead of raising, so it is neither restarted nor reported up.
        """
        self.beat()
        if self._on_failing is not None:
            self._on_failing(self)

    @property
    def last_beat(self) -> float:
        """Return the event-loop time of the latest beat."""
        return self._last_beat


@dataclass(frozen=True)
class TaskInfo:
    """Describe one supervised task at one moment (an immutable `describe` row)."""

    name: str
    state: TaskState
    restarts: int = 0
    consecutive_failures: int = 0
    started_at: float | None = None
    ready: bool = False
    last_error_type: str | None = None
    last_error_message: str | None = None
    next_restart_at: float | None = None
    finished_at: float | None = None
    hang_timeout: float | None = None
    #: Set by ``Heartbeat.failing`` and cleared by ``Heartbeat.ready``.
    failing: bool = False

    @property
    def up(self) -> bool:
        """Return whether the task is running right now and not reporting itself failing."""
        return self.state is TaskState.RUNNING and not self.failing


@dataclass(slots=True, eq=False)
class _Entry:
    """Hold the current snapshot of one live name and the runner's private bookkeeping."""

    info: TaskInfo
    policy: RestartPolicy = RestartPolicy()
    adopted: bool = False  # came from track(): no runner, never restarted
    task: asyncio.Task[Any] = field(init=False)
    heartbeat: Heartbeat | None = None
    hung_for: float | None = None  # set by the watchdog when it cancels the current run
    cancel_requested: bool = False
    # Replaced on every change, so waiters holding the old one are woken exactly once.
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def _identity(text: str) -> str:
    return text


def _with_error(info: TaskInfo, streak: int, error: tuple[str, str]) -> TaskInfo:
    return replace(
        info, consecutive_failures=streak, last_error_type=error[0], last_error_message=error[1]
    )
