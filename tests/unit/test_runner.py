"""The probe runner: concurrent, bounded, sync probes in threads, merging, never raising."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from exporter.probes.base import Check, FunctionProbe, Measurement, Reason, Status
from exporter.probes.runner import ProbeRunner, merge_probes
from exporter.state import ExporterState


async def _ok() -> list[Check]:
    return [Check("a"), Check("b", Status.DEGRADED, Reason.STALE, "old")]


async def test_async_probes_run_concurrently() -> None:
    """Three probes that each sleep 0.3 s finish together in well under 0.9 s."""

    async def slow() -> None:
        # Not a wait: three 0.3 s probes finishing together is what proves concurrency.
        await asyncio.sleep(0.3)

    runner = ProbeRunner(default_timeout=2)
    probes = [FunctionProbe("c", f"p{i}", slow) for i in range(3)]
    t0 = time.perf_counter()
    report = await runner.run(probes, deployment="d")
    assert time.perf_counter() - t0 < 0.6
    assert [r.status for r in report.results] == [Status.OK] * 3


async def test_a_probe_returning_several_checks_yields_one_result_each() -> None:
    """A probe's list of checks becomes one result per check with their own status."""
    report = await ProbeRunner(default_timeout=1).run(
        [FunctionProbe("c", "multi", _ok)], deployment="d"
    )
    assert [(r.check, r.status, r.reason) for r in report.results] == [
        ("a", Status.OK, None),
        ("b", Status.DEGRADED, Reason.STALE),
    ]
    assert report.connector_up("c")


async def test_sync_probe_is_bounded_and_does_not_block_the_loop() -> None:
    """A sync probe sleeping 10 s with a 0.5 s timeout is `timeout` in ~0.5 s; the loop ticks."""
    release = threading.Event()

    def stuck() -> bool:
        release.wait(10)
        return True

    runner = ProbeRunner(default_timeout=5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            # Not a wait: a tick every 10 ms measures whether the loop stayed free.
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    report = await runner.run([FunctionProbe("op", "stuck", stuck, timeout=0.5)], deployment="d")
    elapsed = time.perf_counter() - t0
    tick_task.cancel()
    release.set()
    runner.close()
    assert report.results[0].reason is Reason.TIMEOUT
    assert 0.45 <= elapsed <= 0.55 + 0.1
    assert ticks >= 20


async def test_a_still_stuck_sync_probe_is_not_started_twice() -> None:
    """While a sync probe's thread is stuck, the next run reports timeout without a new thread."""
    release = threading.Event()
    calls = 0

    def stuck() -> None:
        nonlocal calls
        calls += 1
        release.wait(5)

    runner = ProbeRunner(default_timeout=0.2)
    probe = FunctionProbe("op", "stuck", stuck)
    first = await runner.run_one(probe)
    second = await runner.run_one(probe)
    release.set()
    runner.close()
    assert first[0].reason is Reason.TIMEOUT
    assert second[0].reason is Reason.TIMEOUT
    assert calls == 1


async def test_exceptions_become_classified_results_with_redacted_detail() -> None:
    """A probe that raises yields a DOWN result with a bounded reason and a scrubbed detail."""

    async def refused() -> None:
        raise ConnectionRefusedError(111, "connect to redis://:Sekr3t-pw@h:1 refused")

    runner = ProbeRunner(default_timeout=1, redact=lambda t: t.replace("Sekr3t-pw", "***"))
    [result] = await runner.run_one(FunctionProbe("redis", "ping", refused))
    assert result.status is Status.DOWN
    assert result.reason is Reason.REFUSED
    assert "Sekr3t-pw" not in result.detail


async def test_bool_and_none_outputs() -> None:
    """True/None mean ok, False means down with reason error."""
    runner = ProbeRunner(default_timeout=1)
    [yes] = await runner.run_one(FunctionProbe("op", "yes", lambda: True))
    [none] = await runner.run_one(FunctionProbe("op", "none", lambda: None))
    [no] = await runner.run_one(FunctionProbe("op", "no", lambda: False))
    runner.close()
    assert yes.ok
    assert none.ok
    assert no.status is Status.DOWN
    assert no.reason is Reason.ERROR


async def test_unsupported_output_is_a_protocol_failure() -> None:
    """A probe returning something that is not a Check is reported, not crashed on."""
    runner = ProbeRunner(default_timeout=1)
    [result] = await runner.run_one(FunctionProbe("op", "weird", lambda: "yes"))
    runner.close()
    assert result.status is Status.DOWN
    assert result.reason is Reason.PROTOCOL


async def test_a_stuck_sync_probe_says_why_it_is_not_run_again() -> None:
    """The run skipped for a still-stuck thread names that cause in its detail."""
    release = threading.Event()
    runner = ProbeRunner(default_timeout=0.1)
    probe = FunctionProbe("op", "stuck", lambda: release.wait(5))
    await runner.run_one(probe)
    [second] = await runner.run_one(probe)
    release.set()
    runner.close()
    assert second.reason is Reason.TIMEOUT
    assert "previous run" in second.detail


@pytest.mark.parametrize(
    "check",
    [
        Check("x", "down", "connection to db.internal:5432 failed"),  # type: ignore[arg-type]
        Check("x", "sideways"),  # type: ignore[arg-type]
        Check(None),  # type: ignore[arg-type]
        Check("x", measurements=(Measurement("m", "many"),)),  # type: ignore[arg-type]
        Check("x", measurements=("m",)),  # type: ignore[arg-type]
    ],
    ids=["text-reason", "bad-status", "no-name", "text-value", "not-a-measurement"],
)
async def test_an_invalid_operator_check_is_a_protocol_failure(check: Check) -> None:
    """A Check built from free text is reported as protocol, never stored or labelled as-is."""
    runner = ProbeRunner(default_timeout=1)
    report = await runner.run([FunctionProbe("op", "bad", lambda: [check])], deployment="d")
    runner.close()
    [result] = report.results
    assert (result.check, result.status, result.reason) == ("bad", Status.DOWN, Reason.PROTOCOL)
    assert "db.internal" not in result.detail
    state = ExporterState()
    state.record(report)  # the snapshot reads reason.value: it must not crash
    assert set(state.failures) == {("d", "op", "protocol")}


async def test_operator_checks_with_enum_values_given_as_text_are_normalised() -> None:
    """A status and reason spelled as their string values become the enums."""
    runner = ProbeRunner(default_timeout=1)
    check = Check("x", "degraded", "stale")  # type: ignore[arg-type]
    [result] = await runner.run_one(FunctionProbe("op", "x", lambda: check))
    runner.close()
    assert result.status is Status.DEGRADED
    assert result.reason is Reason.STALE


async def test_a_sync_probe_runs_inside_its_probe_span() -> None:
    """The worker thread sees the probe's span as current, so operator spans nest under it."""
    tracer = TracerProvider().get_tracer("test")
    seen: list[Any] = []

    def probe() -> bool:
        seen.append(trace.get_current_span().get_span_context())
        return True

    runner = ProbeRunner(default_timeout=1, tracer=tracer)
    [result] = await runner.run_one(FunctionProbe("op", "span", probe))
    runner.close()
    assert seen[0].is_valid
    assert result.span_id == format(seen[0].span_id, "016x")


def test_operator_probes_merge_with_builtins() -> None:
    """An operator probe with a built-in's (connector, name) replaces only that one."""
    builtin = [FunctionProbe("redis", "ping", _ok), FunctionProbe("kafka", "metadata", _ok)]
    override = FunctionProbe("redis", "ping", lambda: True)
    extra = FunctionProbe("operator", "orders_api", lambda: True)
    merged = merge_probes(builtin, [override, extra])
    assert [(p.connector, p.name) for p in merged] == [
        ("redis", "ping"),
        ("kafka", "metadata"),
        ("operator", "orders_api"),
    ]
    assert merged[0] is override


async def test_a_raising_probe_still_reports_every_declared_check() -> None:
    """A probe that raises reports its own check down and each other declared one unknown."""

    class Declared:
        connector, name, timeout = "svc", "ping", None
        checks = ("ping", "role", "memory")
        fail = False

        async def __call__(self) -> list[Check]:
            if self.fail:
                raise ConnectionRefusedError("refused")
            return [Check("ping"), Check("role"), Check("memory"), Check("extra")]

    probe = Declared()
    runner = ProbeRunner(default_timeout=1)
    healthy = await runner.run_one(probe)
    probe.fail = True
    outage = await runner.run_one(probe)
    assert [r.check for r in outage] == [r.check for r in healthy]
    assert [(r.status, r.reason) for r in outage] == [
        (Status.DOWN, Reason.REFUSED),
        *[(Status.UNKNOWN, Reason.REFUSED)] * 3,
    ]
    assert "ping is down (refused)" in outage[1].detail


async def test_an_undeclared_probe_failure_name_is_not_remembered_as_a_check() -> None:
    """An operator probe's whole-run failure fills its real checks, never adds its own name."""
    fail = True

    async def multi() -> list[Check]:
        if fail:
            raise TimeoutError
        return [Check("a"), Check("b")]

    runner = ProbeRunner(default_timeout=1)
    probe = FunctionProbe("c", "multi", multi)
    assert [r.check for r in await runner.run_one(probe)] == ["multi"]
    fail = False
    assert [r.check for r in await runner.run_one(probe)] == ["a", "b"]
    fail = True
    assert [(r.check, r.status) for r in await runner.run_one(probe)] == [
        ("multi", Status.DOWN),
        ("a", Status.UNKNOWN),
        ("b", Status.UNKNOWN),
    ]
    fail = False
    assert [r.check for r in await runner.run_one(probe)] == ["a", "b"]
