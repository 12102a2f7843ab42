"""Run probes concurrently, each bounded by its timeout, and collect a report."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from exporter.probes.base import (
    Check,
    ConnectivityReport,
    FunctionProbe,
    Measurement,
    Probe,
    ProbeResult,
    Status,
)
from exporter.reasons import Reason, classify

__all__ = ["ProbeRunner", "declared_checks", "merge_probes"]

_DETAIL_LIMIT = 200
_STATUS_DESCRIPTION_LIMIT = 120

#: A probe's semantic-convention span attributes (see ``tracing.probe_span_attributes``).
SpanAttributes = Callable[[Probe], Mapping[str, AttributeValue]]


def merge_probes(builtin: Iterable[Probe], extra: Iterable[Probe]) -> list[Probe]:
    """Return the built-ins with ``extra`` merged in: the same (connector, name) replaces one."""
    merged: dict[tuple[str, str], Probe] = {(p.connector, p.name): p for p in builtin}
    for probe in extra:
        merged[(probe.connector, probe.name)] = probe
    return list(merged.values())


def declared_checks(probe: Probe) -> tuple[str, ...]:
    """Return the checks ``probe`` declares it reports every run (its optional ``checks``)."""
    return tuple(getattr(probe, "checks", ()))


def _is_async(probe: Probe) -> bool:
    if isinstance(probe, FunctionProbe):
        return inspect.iscoroutinefunction(probe.function)
    return inspect.iscoroutinefunction(type(probe).__call__) or inspect.iscoroutinefunction(probe)


class ProbeRunner:
    """Run probes concurrently; a synchronous probe runs in a worker thread, still bounded.

    A synchronous probe cannot be interrupted once its thread runs, so a probe whose previous
    run is still stuck is reported as ``timeout`` at once instead of taking another thread:
    a hung operator function costs one thread, not one per cycle.
    """

    def __init__(
        self,
        *,
        default_timeout: float,
        redact: Callable[[str], str] = lambda text: text,
        max_threads: int = 4,
        tracer: trace.Tracer | None = None,
        span_attributes: SpanAttributes | None = None,
    ) -> None:
        self._default_timeout = default_timeout
        self._redact = redact
        self._tracer = tracer or trace.NoOpTracer()
        self._span_attributes = span_attributes or (lambda _probe: {})
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="ingest-probe")
        self._busy: set[tuple[str, str]] = set()
        # Every check each probe has declared or reported, in first-seen order: a check that
        # cannot run this cycle is still reported (series must not vanish in an outage).
        self._known: dict[tuple[str, str], dict[str, None]] = {}

    def close(self) -> None:
        """Release the worker threads (stuck ones are abandoned, not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, probes: Sequence[Probe], *, deployment: str) -> ConnectivityReport:
        """Run every probe at once and return their results; never raises for a probe."""
        started = time.time()
        t0 = time.perf_counter()
        # One trace per cycle: its id becomes the histogram exemplar and the log lines' trace_id.
        with self._tracer.start_as_current_span(
            "probe_cycle", attributes={"ingest.deployment": deployment}
        ) as span:
            groups = await asyncio.gather(*(self.run_one(p, deployment=deployment) for p in probes))
            results = tuple(r for group in groups for r in group)
            span.set_attribute("ingest.checks", len(results))
            span.set_attribute("ingest.checks.down", sum(r.status is Status.DOWN for r in results))
        connectors = tuple(dict.fromkeys(p.connector for p in probes))
        return ConnectivityReport(
            deployment=deployment,
            started_at=started,
            duration_seconds=time.perf_counter() - t0,
            results=results,
            trace_id=_hex_ids(span)[0],
            connectors=connectors,
        )

    async def run_one(self, probe: Probe, *, deployment: str | None = None) -> list[ProbeResult]:
        """Run one probe in its own span (a child of the current one); never raises for it."""
        attributes = dict(self._span_attributes(probe))
        # Built-in probes talk to a server (their attributes name it); operator probes may not.
        kind = trace.SpanKind.CLIENT if attributes else trace.SpanKind.INTERNAL
        attributes["ingest.connector"] = probe.connector
        attributes["ingest.probe.name"] = probe.name
        if deployment is not None:
            attributes["ingest.deployment"] = deployment
        with self._tracer.start_as_current_span(
            f"probe {probe.connector}",
            kind=kind,
            attributes=attributes,
            # Failures are data here; exception text never goes into a span unredacted.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            results = self._complete(probe, await self._run_one(probe))
            _annotate(span, results)
        span_id = _hex_ids(span)[1]
        return [dataclasses.replace(r, span_id=span_id) for r in results] if span_id else results

    async def _run_one(self, probe: Probe) -> list[ProbeResult]:
        timeout = probe.timeout or self._default_timeout
        t0 = time.perf_counter()
        key = (probe.connector, probe.name)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if _is_async(probe):
                    output = await probe()  # type: ignore[misc]
                else:
                    output = await self._in_thread(key, probe)
        except TimeoutError as exc:
            if deadline.expired():
                detail = f"no answer within {timeout:g}s"
                return [self._failure(probe, Reason.TIMEOUT, detail, t0)]
            # The probe's own deadline (a driver timeout) fired first: say what it said.
            return [self._failure(probe, Reason.TIMEOUT, self._describe(exc), t0)]
        except Exception as exc:  # noqa: BLE001 - a probe's failure is data, not a crash
            return [self._failure(probe, classify(exc), self._describe(exc), t0)]
        return self._results(probe, output, t0)

    def _complete(self, probe: Probe, results: list[ProbeResult]) -> list[ProbeResult]:
        """Add a result for each known check of ``probe`` that this run did not report.

        A probe that raised (its connector is down) reports one result under its own name;
        every other check it declared or reported before is ``unknown`` with that result's
        reason, so the set of checks per cycle is the same healthy or not.
        """
        known = self._known.setdefault((probe.connector, probe.name), {})
        known.update(dict.fromkeys(declared_checks(probe)))
        # The runner's one result for a probe that raised or timed out, if that is what we have.
        [whole] = results if len(results) == 1 else [None]
        if whole is not None and (whole.status is not Status.DOWN or whole.check != probe.name):
            whole = None
        if whole is None or whole.check in known:
            # A whole-probe failure under a name the probe never reports is not a check.
            known.update(dict.fromkeys(r.check for r in results))
        reported = {r.check for r in results}
        missing = [name for name in known if name not in reported]
        if not missing:
            return results
        if whole is not None:
            reason = whole.reason or Reason.ERROR
            detail = f"not run: {probe.connector} {whole.check} is down ({reason.value})"
        else:
            reason = Reason.MISSING
            detail = "not reported by this run of the probe"
        stamp = results[-1].checked_at if results else time.time()
        return results + [
            ProbeResult(
                connector=probe.connector,
                check=name,
                status=Status.UNKNOWN,
                reason=reason,
                latency_seconds=0.0,
                detail=detail,
                checked_at=stamp,
            )
            for name in missing
        ]

    async def _in_thread(self, key: tuple[str, str], probe: Probe) -> Any:
        if key in self._busy:
            raise TimeoutError("previous run has not returned yet")
        self._busy.add(key)
        # The thread's own future: done when the function really returns, not when the
        # awaiting coroutine gives up (the asyncio wrapper is cancelled at the timeout).
        # The copied context keeps the probe's span current in the thread (and log context).
        work = self._executor.submit(contextvars.copy_context().run, probe)
        work.add_done_callback(lambda _: self._busy.discard(key))
        output = await asyncio.wrap_future(work)
        if inspect.isawaitable(output):
            output = await output
        return output

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return self._redact(text)[:_DETAIL_LIMIT]

    def _failure(self, probe: Probe, reason: Reason, detail: str, t0: float) -> ProbeResult:
        return ProbeResult(
            connector=probe.connector,
            check=probe.name,
            status=Status.DOWN,
            reason=reason,
            latency_seconds=time.perf_counter() - t0,
            detail=detail,
            checked_at=time.time(),
        )

    def _results(self, probe: Probe, output: Any, t0: float) -> list[ProbeResult]:
        elapsed = time.perf_counter() - t0
        if output is None or output is True:
            checks: list[Check] = [Check(probe.name)]
        elif output is False:
            checks = [Check(probe.name, Status.DOWN, Reason.ERROR, "probe returned false")]
        elif isinstance(output, Check):
            checks = [output]
        elif isinstance(output, list | tuple) and all(isinstance(c, Check) for c in output):
            checks = list(output)
        else:
            kind = type(output).__name__
            return [self._failure(probe, Reason.PROTOCOL, f"probe returned a {kind}", t0)]
        try:
            # Operator code may build a Check from plain strings: its status and reason
            # become label values and are read as enums downstream, so they are checked here.
            checks = [_validated(check) for check in checks]
        except (AttributeError, TypeError, ValueError) as exc:
            # The message may quote the operator's value: name the error type only.
            detail = f"probe returned an invalid check ({type(exc).__name__})"
            return [self._failure(probe, Reason.PROTOCOL, detail, t0)]
        stamp = time.time()
        return [
            ProbeResult(
                connector=probe.connector,
                check=check.name,
                status=check.status,
                reason=check.reason,
                latency_seconds=elapsed if check.latency_seconds is None else check.latency_seconds,
                detail=self._redact(check.detail)[:_DETAIL_LIMIT],
                checked_at=stamp,
                measurements=check.measurements,
            )
            for check in checks
        ]


def _hex_ids(span: trace.Span) -> tuple[str | None, str | None]:
    """Return the span's trace and span ids as lower-case hex (``None`` for a no-op span)."""
    # From the OpenTelemetry API, not exporter.telemetry: probes never lean on the telemetry.
    context = span.get_span_context()
    if not context.is_valid:
        return None, None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def _validated(check: Check) -> Check:
    """Return ``check`` with enum status/reason and numeric values; raise when it has none."""
    if not isinstance(check.name, str) or not check.name:
        raise TypeError("check name must be a non-empty string")
    measurements = tuple(
        Measurement(m.name, float(m.value), tuple((str(k), str(v)) for k, v in m.labels))
        for m in check.measurements
    )
    latency = None if check.latency_seconds is None else float(check.latency_seconds)
    if latency is not None and not (math.isfinite(latency) and latency >= 0):
        raise ValueError(f"latency {latency!r} is not a duration")
    return dataclasses.replace(
        check,
        status=Status(check.status),
        reason=None if check.reason is None else Reason(check.reason),
        detail=str(check.detail),
        measurements=measurements,
        latency_seconds=latency,
    )


def _annotate(span: trace.Span, results: Sequence[ProbeResult]) -> None:
    """Record the probe's outcome on its span: bounded values only, the detail redacted."""
    order = list(Status)
    worst = max((r.status for r in results), key=order.index, default=Status.UNKNOWN)
    span.set_attribute("ingest.check.status", worst.value)
    for result in results:
        event: dict[str, AttributeValue] = {
            "ingest.check.name": result.check,
            "ingest.check.status": result.status.value,
        }
        if result.reason is not None:
            event["ingest.check.reason"] = result.reason.value
        # A check measuring exactly one topic names it (messaging.destination.name is single).
        topics = {v for m in result.measurements for k, v in m.labels if k == "topic"}
        if len(topics) == 1:
            event["messaging.destination.name"] = topics.pop()
        span.add_event("ingest.check", event)
    failed = next((r for r in results if r.status is Status.DOWN), None)
    if failed is None:
        return
    reason = (failed.reason or Reason.ERROR).value
    span.set_attribute("error.type", reason)
    # The detail was redacted by the runner already; the span processor scrubs it again.
    description = f"{failed.check}: {reason}" + (f" ({failed.detail})" if failed.detail else "")
    span.set_status(trace.Status(trace.StatusCode.ERROR, description[:_STATUS_DESCRIPTION_LIMIT]))
