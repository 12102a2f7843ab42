from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pytest
from structlog.testing import capture_logs

from exporter import supervisor as supervisor_module
from exporter.errors import SupervisorError
from exporter.supervisor import Heartbeat, RestartPolicy, TaskInfo, TaskState, TaskSupervisor
from tests.waiting import Changes

#: A frozen wall clock, so ``next_restart_at - WALL`` is exactly the chosen backoff.
WALL = 1_000.0
ENDED = {TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED}


def fast(**overrides: Any) -> RestartPolicy:
    """Return a millisecond-scale policy without jitter, so tests are quick and exact."""
    settings: dict[str, Any] = {"backoff_initial": 0.001, "backoff_max": 0.01, "jitter": 0.0}
    return RestartPolicy(**(settings | overrides))


class Watcher(Changes):
    """Record a snapshot of the supervisor at every ``on_change`` call; await conditions."""

    def __init__(self) -> None:
        super().__init__()
        self.supervisor: TaskSupervisor | None = None
        self.rows: list[list[TaskInfo]] = []

    def __call__(self) -> None:
        """Snapshot the supervisor and wake waiters."""
        if self.supervisor is not None:
            self.rows.append(self.supervisor.describe())
        super().__call__()

    def seen(self, name: str, state: TaskState) -> list[TaskInfo]:
        """Return the distinct snapshots of ``name`` in ``state``, oldest first."""
        found: list[TaskInfo] = []
        for rows in self.rows:
            for info in rows:
                if info.name == name and info.state is state and info not in found:
                    found.append(info)
        return found


class Make(Protocol):
    """Build a supervisor wired to a fresh `Watcher`."""

    def __call__(self, **kwargs: Any) -> tuple[TaskSupervisor, Watcher]:
        """Return a new supervisor and its watcher; ``kwargs`` override the defaults."""


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Build supervisors with a frozen wall clock and a seeded rng; shut them all down after."""
    built: list[TaskSupervisor] = []

    def build(**kwargs: Any) -> tuple[TaskSupervisor, Watcher]:
        watcher = Watcher()
        defaults: dict[str, Any] = {"clock": lambda: WALL, "rng": random.Random(42)}
        supervisor = TaskSupervisor(**(defaults | {"on_change": watcher} | kwargs))
        watcher.supervisor = supervisor
        built.append(supervisor)
        return supervisor, watcher

    yield build
    for supervisor in built:
        assert await supervisor.cancel_all(timeout=1.0)


def info_of(supervisor: TaskSupervisor, name: str) -> TaskInfo:
    """Return the snapshot of ``name``, which must exist."""
    info = supervisor.get(name)
    assert info is not None, name
    return info


def ended(supervisor: TaskSupervisor, name: str) -> bool:
    """Return whether ``name`` has ended."""
    info = supervisor.get(name)
    return info is not None and info.state in ENDED


async def crash(heartbeat: Heartbeat) -> None:
    """Fail at once."""
    raise RuntimeError("boom")


async def forever(heartbeat: Heartbeat) -> None:
    """Become ready and then block until cancelled, without beating."""
    heartbeat.ready()
    await asyncio.Event().wait()


def test_all_lists_the_public_names() -> None:
    """The module exports exactly the names its spec promises."""
    assert sorted(supervisor_module.__all__) == sorted(
        ["Heartbeat", "RestartPolicy", "TaskInfo", "TaskState", "TaskSupervisor"]
    )
    assert all(hasattr(supervisor_module, name) for name in supervisor_module.__all__)


def test_delay_grows_exponentially_and_is_capped() -> None:
    """Backoff doubles per attempt, stops at backoff_max and survives huge attempt numbers."""
    policy = RestartPolicy(backoff_initial=0.1, backoff_multiplier=2.0, backoff_max=0.5, jitter=0)
    rng = random.Random(1)
    delays = [policy.delay(attempt, rng) for attempt in (1, 2, 3, 4, 5, 10_000)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_jitter_stays_within_its_fraction() -> None:
    """Jitter spreads delays uniformly within +/- the configured fraction."""
    policy = RestartPolicy(backoff_initial=1.0, backoff_max=10.0, jitter=0.1)
    rng = random.Random(3)
    delays = [policy.delay(1, rng) for _ in range(200)]
    assert all(0.9 <= delay <= 1.1 for delay in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize(
    "settings",
    [
        {"max_restarts": -1},
        {"backoff_initial": 2.0, "backoff_max": 1.0},
        {"backoff_multiplier": 0.5},
        {"jitter": 1.5},
        {"reset_after": -1.0},
    ],
)
def test_invalid_policy_is_rejected(settings: dict[str, Any]) -> None:
    """A policy that cannot mean anything sensible raises SupervisorError."""
    with pytest.raises(SupervisorError):
        RestartPolicy(**settings)


async def test_failing_task_restarts_with_growing_backoff(make: Make) -> None:
    """Each consecutive failure doubles the backoff and logs task_failed with stable keys."""
    supervisor, watcher = make()
    policy = fast(max_restarts=3, backoff_initial=0.001, backoff_multiplier=2.0, backoff_max=1.0)
    with capture_logs() as logs:
        supervisor.create(crash, name="crashy", restart=policy)
        await watcher.until(lambda: ended(supervisor, "crashy"))

    backoffs = watcher.seen("crashy", TaskState.BACKOFF)
    assert [info.next_restart_at for info in backoffs] == pytest.approx(
        [WALL + 0.001, WALL + 0.002, WALL + 0.004]
    )
    assert [info.consecutive_failures for info in backoffs] == [1, 2, 3]
    failed = [event for event in logs if event["event"] == "task_failed"]
    assert [event["backoff_seconds"] for event in failed] == [0.001, 0.002, 0.004, None]
    assert [event["restarts"] for event in failed] == [0, 1, 2, 3]
    for event in failed:
        assert {"task", "error_type", "restarts", "backoff_seconds"} <= event.keys()
        assert (event["task"], event["error_type"]) == ("crashy", "RuntimeError")
    assert [event["event"] for event in logs].count("task_restarted") == 3


async def test_gives_up_after_max_restarts_with_redacted_error(make: Make) -> None:
    """Past max_restarts the task is FAILED, and its error is recorded and logged redacted."""
    supervisor, watcher = make(redact=lambda text: text.replace("hunter2", "[REDACTED]"))

    async def leak(heartbeat: Heartbeat) -> None:
        raise ConnectionError("auth failed: password=hunter2 host=db")

    with capture_logs() as logs:
        supervisor.create(leak, name="leaky", restart=fast(max_restarts=2))
        await watcher.until(lambda: ended(supervisor, "leaky"))

    info = info_of(supervisor, "leaky")
    assert (info.state, info.restarts, info.consecutive_failures) == (TaskState.FAILED, 2, 3)
    assert info.last_error_type == "ConnectionError"
    assert info.last_error_message == "auth failed: password=[REDACTED] host=db"
    assert (info.finished_at, info.next_restart_at, info.up) == (WALL, None, False)
    assert supervisor.describe() == [info]
    assert "hunter2" not in repr(logs)
    events = [event["event"] for event in logs]
    assert events.count("task_failed") == 3
    assert events[-2:] == ["task_failed", "task_gave_up"]


async def test_long_error_message_is_redacted_then_truncated(make: Make) -> None:
    """A secret at the cut point is still redacted, and the stored message is at most 200 chars."""
    supervisor, watcher = make(redact=lambda text: text.replace("hunter2", "***"))

    async def verbose(heartbeat: Heartbeat) -> None:
        raise ValueError("x" * 195 + "hunter2" + "y" * 300)

    supervisor.create(verbose, name="verbose", restart=fast(max_restarts=0))
    await watcher.until(lambda: ended(supervisor, "verbose"))
    message = info_of(supervisor, "verbose").last_error_message
    assert message is not None
    assert len(message) == 200
    assert "hunter" not in message


async def test_healthy_run_resets_the_failure_streak(make: Make) -> None:
    """A run that lasted reset_after before failing starts the backoff and streak over."""
    supervisor, watcher = make()
    lifetimes = iter([0.0, 0.0, 0.08, 0.0, 0.0])

    async def flaky(heartbeat: Heartbeat) -> None:
        # Not a wait: how long a run lasted is what reset_after judges.
        await asyncio.sleep(next(lifetimes))
        raise RuntimeError("flaky")

    policy = fast(max_restarts=2, reset_after=0.05, backoff_max=1.0)
    supervisor.create(flaky, name="flaky", restart=policy)
    await watcher.until(lambda: ended(supervisor, "flaky"))

    backoffs = watcher.seen("flaky", TaskState.BACKOFF)
    # Without the reset the third failure would already exceed max_restarts=2.
    assert [info.consecutive_failures for info in backoffs] == [1, 2, 1, 2]
    assert [info.next_restart_at for info in backoffs] == pytest.approx(
        [WALL + 0.001, WALL + 0.002, WALL + 0.001, WALL + 0.002]
    )
    info = info_of(supervisor, "flaky")
    assert (info.state, info.restarts, info.consecutive_failures) == (TaskState.FAILED, 4, 3)


async def test_hung_task_is_cancelled_and_restarted(make: Make) -> None:
    """A run that stops beating is cancelled as TaskHung and restarted; a beating run is kept."""
    supervisor, _ = make()
    runs: list[str] = []
    beats = Changes()

    async def hangs_twice(heartbeat: Heartbeat) -> None:
        if len(runs) < 4:
            runs.append("stuck")
            try:
                await asyncio.Event().wait()  # never beats
            except asyncio.CancelledError:
                runs.append("cancelled")
                raise
        runs.append("healthy")
        heartbeat.ready()
        while True:
            # Not a wait: a steady beat every 10 ms is the behaviour the watchdog judges.
            await asyncio.sleep(0.01)
            heartbeat.beat()
            beats()

    with capture_logs() as logs:
        supervisor.create(hangs_twice, name="hangs", restart=fast(), hang_timeout=0.05)
        assert await supervisor.wait_ready("hangs", timeout=2.0)
        # Four hang timeouts of steady beating: 20 beats at least 10 ms apart.
        await beats.until(lambda: beats.count >= 20)

    info = info_of(supervisor, "hangs")
    assert runs == ["stuck", "cancelled", "stuck", "cancelled", "healthy"]
    assert (info.state, info.ready, info.restarts) == (TaskState.RUNNING, True, 2)
    assert info.last_error_type == "TaskHung"
    assert (info.last_error_message or "").startswith("no heartbeat for 0.0")
    assert info.hang_timeout == 0.05
    assert [event["task"] for event in logs if event["event"] == "task_hung"] == ["hangs"] * 2
    failed = [event for event in logs if event["event"] == "task_failed"]
    assert [event["error_type"] for event in failed] == ["TaskHung"] * 2


async def test_repeated_hangs_grow_the_streak_even_past_reset_after(make: Make) -> None:
    """The silence before the watchdog fired is not healthy uptime: hangs add up and give up."""
    supervisor, watcher = make()

    async def always_stuck(heartbeat: Heartbeat) -> None:
        await asyncio.Event().wait()  # never beats

    # Each hung run lasts hang_timeout (0.05 s), longer than reset_after (0.02 s).
    policy = fast(max_restarts=2, reset_after=0.02)
    supervisor.create(always_stuck, name="stuck", restart=policy, hang_timeout=0.05)
    await watcher.until(lambda: ended(supervisor, "stuck"))

    backoffs = watcher.seen("stuck", TaskState.BACKOFF)
    assert [info.consecutive_failures for info in backoffs] == [1, 2]
    info = info_of(supervisor, "stuck")
    assert (info.state, info.consecutive_failures, info.last_error_type) == (
        TaskState.FAILED,
        3,
        "TaskHung",
    )


def _waits_then_cleans_up(
    cleanup_seconds: float, cleaned_up: list[bool], cleaning: asyncio.Event | None = None
) -> Callable[[Heartbeat], Awaitable[None]]:
    """Return a task that waits forever, then takes ``cleanup_seconds`` to clean up.

    ``cleaning`` is set when the cleanup starts.
    """

    async def run(heartbeat: Heartbeat) -> None:
        heartbeat.ready()
        try:
            await asyncio.Event().wait()
        finally:
            if cleaning is not None:
                cleaning.set()
            # Not a wait: a cleanup that takes this long is the behaviour under test.
            await asyncio.sleep(cleanup_seconds)
            cleaned_up.append(True)

    return run


async def test_watchdog_does_not_cut_short_the_cleanup_of_a_stopped_run(make: Make) -> None:
    """A run being cancelled on request may stay silent past its hang timeout while it cleans up."""
    supervisor, _ = make()
    cleaned_up: list[bool] = []
    slow_cleanup = _waits_then_cleans_up(0.15, cleaned_up)  # three hang timeouts, no beat

    with capture_logs() as logs:
        supervisor.create(slow_cleanup, name="slow", restart=fast(), hang_timeout=0.05)
        assert await supervisor.wait_ready("slow", timeout=1.0)
        assert await supervisor.cancel("slow", timeout=1.0) is True

    assert cleaned_up == [True]
    assert info_of(supervisor, "slow").state is TaskState.CANCELLED
    assert "task_hung" not in [event["event"] for event in logs]


async def test_stale_heartbeat_cannot_mark_a_later_run_ready(make: Make) -> None:
    """A heartbeat kept from an earlier run does not make the current run ready."""
    supervisor, watcher = make()
    heartbeats: list[Heartbeat] = []

    async def keeps_heartbeat(heartbeat: Heartbeat) -> None:
        heartbeats.append(heartbeat)
        if len(heartbeats) == 1:
            raise RuntimeError("first run fails")
        await asyncio.Event().wait()

    supervisor.create(keeps_heartbeat, name="stale", restart=fast())
    await watcher.until(lambda: len(heartbeats) == 2)
    heartbeats[0].ready()
    assert info_of(supervisor, "stale").ready is False
    heartbeats[1].ready()
    assert info_of(supervisor, "stale").ready is True


async def test_track_records_a_failed_adopted_task(make: Make) -> None:
    """An adopted task's exception is recorded and logged instead of being lost."""
    supervisor, watcher = make()

    # Each yields to the loop once (sleep(0) is no timing): they end after being tracked.
    async def doomed() -> None:
        await asyncio.sleep(0)
        raise ValueError("adopted boom")

    async def fine() -> None:
        await asyncio.sleep(0)

    doomed_task, fine_task = asyncio.create_task(doomed()), asyncio.create_task(fine())
    with capture_logs() as logs:
        supervisor.track(doomed_task, name="adopted")
        supervisor.track(fine_task, name="fine")
        assert [info.up for info in supervisor.describe()] == [True, True]
        await watcher.until(lambda: ended(supervisor, "adopted") and ended(supervisor, "fine"))

    info = info_of(supervisor, "adopted")
    assert (info.state, info.restarts) == (TaskState.FAILED, 0)
    assert (info.last_error_type, info.last_error_message) == ("ValueError", "adopted boom")
    assert supervisor.get("fine") == TaskInfo(
        "fine", TaskState.FINISHED, started_at=WALL, finished_at=WALL
    )
    failed = [event for event in logs if event["event"] == "task_failed"]
    assert [(event["task"], event["error_type"]) for event in failed] == [("adopted", "ValueError")]


async def test_cancel_all_cancels_tasks_in_backoff_and_running(make: Make) -> None:
    """cancel_all interrupts backoff sleeps, running and adopted tasks, and reports success."""
    supervisor, watcher = make()
    slow = RestartPolicy(backoff_initial=30.0, backoff_max=30.0, jitter=0.0)
    supervisor.create(crash, name="sleepy", restart=slow)
    supervisor.create(forever, name="busy")
    adopted = asyncio.create_task(asyncio.Event().wait())
    supervisor.track(adopted, name="adopted")
    await watcher.until(lambda: info_of(supervisor, "sleepy").state is TaskState.BACKOFF)
    await supervisor.wait_ready("busy", timeout=1.0)

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await supervisor.cancel_all(timeout=1.0) is True
    assert loop.time() - started < 0.5
    assert {info.name: info.state for info in supervisor.describe()} == dict.fromkeys(
        ["sleepy", "busy", "adopted"], TaskState.CANCELLED
    )
    assert adopted.cancelled()
    assert await supervisor.cancel_all() is True  # idempotent


async def test_cancel_all_reports_a_task_that_outlives_the_timeout(make: Make) -> None:
    """cancel_all returns False when a task ignores cancellation, and True once it has ended."""
    supervisor, _ = make()
    cleaned_up: list[bool] = []

    async def stubborn(heartbeat: Heartbeat) -> None:
        heartbeat.ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # Not a wait: a cleanup slower than cancel_all's timeout is the point.
            await asyncio.sleep(0.1)  # slow cleanup that swallows the cancellation
            cleaned_up.append(True)

    supervisor.create(stubborn, name="stubborn")
    assert await supervisor.wait_ready("stubborn", timeout=1.0)
    assert await supervisor.cancel_all(timeout=0.01) is False
    assert await supervisor.cancel_all(timeout=1.0) is True
    assert cleaned_up == [True]  # the second call waited instead of cancelling the cleanup
    assert info_of(supervisor, "stubborn").state is TaskState.CANCELLED


async def test_create_and_track_after_cancel_all_raise(make: Make) -> None:
    """A shut-down supervisor refuses new work."""
    supervisor, _ = make()
    assert await supervisor.cancel_all() is True
    with pytest.raises(SupervisorError, match="shut down"):
        supervisor.create(crash, name="late")
    task = asyncio.create_task(asyncio.sleep(0))  # any task; this one ends at its first step
    with pytest.raises(SupervisorError, match="shut down"):
        supervisor.track(task, name="late")
    await task


async def test_duplicate_live_name_raises(make: Make) -> None:
    """A name can be supervised once at a time, and reused after it ended."""
    supervisor, watcher = make()
    supervisor.create(forever, name="solo")
    with pytest.raises(SupervisorError, match="already supervised"):
        supervisor.create(forever, name="solo")

    async def quick(heartbeat: Heartbeat) -> None:
        return

    supervisor.create(quick, name="again")
    await watcher.until(lambda: ended(supervisor, "again"))
    assert supervisor.create(quick, name="again").state is TaskState.PENDING


async def test_create_needs_a_running_loop() -> None:
    """Calling create outside the event loop is reported as misuse."""
    supervisor = TaskSupervisor()

    def outside() -> None:
        supervisor.create(crash, name="nowhere")

    with pytest.raises(SupervisorError, match="running event loop"):
        await asyncio.to_thread(outside)


async def test_describe_lists_live_first_and_bounds_history(make: Make) -> None:
    """describe() shows live tasks in creation order, then only the newest `history` ended ones."""
    supervisor, watcher = make(history=3)

    async def quick(heartbeat: Heartbeat) -> None:
        return

    supervisor.create(forever, name="live")
    for index in range(5):
        supervisor.create(quick, name=f"done-{index}")
    await watcher.until(lambda: all(ended(supervisor, f"done-{i}") for i in (2, 3, 4)))

    rows = supervisor.describe()
    assert [info.name for info in rows] == ["live", "done-4", "done-3", "done-2"]
    assert [info.state for info in rows[1:]] == [TaskState.FINISHED] * 3
    assert supervisor.get("done-0") is None


async def test_wait_ready(make: Make) -> None:
    """wait_ready is True once ready, False on timeout or when the task ended, and rejects typos."""
    supervisor, _ = make()

    # Not a wait: still starting when wait_ready begins, then ready by itself.
    async def slow_start(heartbeat: Heartbeat) -> None:
        await asyncio.sleep(0.01)
        heartbeat.ready()
        await asyncio.Event().wait()

    async def never_ready(heartbeat: Heartbeat) -> None:
        await asyncio.Event().wait()

    async def quits(heartbeat: Heartbeat) -> None:
        # Not a wait: still running when wait_ready begins, then ends by itself.
        await asyncio.sleep(0.01)

    supervisor.create(slow_start, name="slow")
    supervisor.create(never_ready, name="never")
    supervisor.create(quits, name="quits")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await supervisor.wait_ready("slow", timeout=5.0) is True
    assert loop.time() - started < 1.0  # woken by the handshake, not by the timeout
    assert info_of(supervisor, "slow").ready
    assert await supervisor.wait_ready("never", timeout=0.02) is False
    started = loop.time()
    assert await supervisor.wait_ready("quits", timeout=5.0) is False
    assert loop.time() - started < 1.0
    assert await supervisor.wait_ready("quits", timeout=5.0) is False
    with pytest.raises(SupervisorError, match="no task named"):
        await supervisor.wait_ready("typo", timeout=0.01)


async def test_restart_on_success_restarts_a_returning_loop(make: Make) -> None:
    """With restart_on_success a normal return is restarted instead of finishing the task."""
    supervisor, watcher = make()
    runs = 0

    async def returns(heartbeat: Heartbeat) -> None:
        nonlocal runs
        runs += 1

    supervisor.create(returns, name="loop", restart=fast(restart_on_success=True, max_restarts=0))
    await watcher.until(lambda: runs >= 3)
    info = info_of(supervisor, "loop")
    assert info.state is not TaskState.FINISHED
    assert info.restarts >= 2
    assert (info.consecutive_failures, info.last_error_type) == (0, None)


async def test_on_change_is_called_and_its_errors_are_logged() -> None:
    """Every state change calls on_change; an exception in it is logged, not propagated."""
    calls: list[TaskState | None] = []
    supervisor: TaskSupervisor

    def hook() -> None:
        info = supervisor.get("q")
        calls.append(None if info is None else info.state)
        raise RuntimeError("metrics cache unavailable")

    supervisor = TaskSupervisor(on_change=hook)

    async def quick(heartbeat: Heartbeat) -> None:
        heartbeat.ready()

    with capture_logs() as logs:
        supervisor.create(quick, name="q")
        # wait_ready returns once the task is ready or has ended; then let it finish.
        await supervisor.wait_ready("q", timeout=1.0)
        assert await supervisor.cancel_all(timeout=1.0)

    assert calls == [TaskState.PENDING, TaskState.RUNNING, TaskState.RUNNING, TaskState.FINISHED]
    assert [event["event"] for event in logs].count("supervisor_callback_failed") == len(calls)


async def test_cancelling_the_caller_of_cancel_all_does_not_stop_the_shutdown(make: Make) -> None:
    """The caller of cancel_all sees its own cancellation while the shutdown carries on."""
    supervisor, _ = make()
    cleaned_up: list[bool] = []
    cleaning = asyncio.Event()
    slow_cleanup = _waits_then_cleans_up(0.05, cleaned_up, cleaning)

    supervisor.create(slow_cleanup, name="slow")
    assert await supervisor.wait_ready("slow", timeout=1.0)
    caller = asyncio.create_task(supervisor.cancel_all(timeout=1.0))
    await cleaning.wait()  # cancel_all is under way: it waits for this cleanup
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await supervisor.cancel_all(timeout=1.0) is True
    assert cleaned_up == [True]
    assert info_of(supervisor, "slow").state is TaskState.CANCELLED


async def test_cancel_all_right_after_create_records_the_cancellation(make: Make) -> None:
    """A task cancelled before its runner ever ran still ends up CANCELLED in the history."""
    supervisor, _ = make()
    supervisor.create(forever, name="unborn")
    assert await supervisor.cancel_all(timeout=1.0) is True
    assert supervisor.describe() == [TaskInfo("unborn", TaskState.CANCELLED, finished_at=WALL)]


async def test_cancel_stops_only_the_named_tasks(make: Make) -> None:
    """cancel(name) ends that task for good while the others keep running and create works."""
    supervisor, _ = make()
    supervisor.create(forever, name="mine")
    supervisor.create(forever, name="other")
    assert await supervisor.wait_ready("mine", timeout=1.0)
    # Unknown names are ignored: the answer is whether none of the names still runs.
    assert await supervisor.cancel("mine", "unknown", timeout=1.0) is True
    assert info_of(supervisor, "mine").state is TaskState.CANCELLED
    assert info_of(supervisor, "other").state is TaskState.RUNNING
    supervisor.create(forever, name="mine")  # the name is free again
    assert await supervisor.cancel_all(timeout=1.0) is True


async def test_a_failing_heartbeat_reports_the_task_down_until_ready(make: Make) -> None:
    """failing() turns `up` off while the task keeps running (no restart); ready() turns it on."""
    supervisor, watcher = make()
    step = asyncio.Event()

    async def retries(heartbeat: Heartbeat) -> None:
        heartbeat.ready()
        await step.wait()
        step.clear()
        heartbeat.failing()
        await step.wait()
        heartbeat.ready()
        await asyncio.Event().wait()

    supervisor.create(retries, name="cache")
    await watcher.until(lambda: info_of(supervisor, "cache").up)
    step.set()
    await watcher.until(lambda: not info_of(supervisor, "cache").up)
    info = info_of(supervisor, "cache")
    assert (info.state, info.failing, info.restarts) == (TaskState.RUNNING, True, 0)
    step.set()
    await watcher.until(lambda: info_of(supervisor, "cache").up)
    assert not info_of(supervisor, "cache").failing
