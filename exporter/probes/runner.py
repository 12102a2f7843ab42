"""Run probes concurrently, each bounded by its timeout, and collect a report."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exporter.probes.base import (
    Check,
    ConnectivityReport,
    FunctionProbe,
    Probe,
    ProbeResult,
    Reason,
    Status,
)
from exporter.probes.classify import classify

__all__ = ["ProbeRunner", "merge_probes"]

_DETAIL_LIMIT = 200


def merge_probes(builtin: Iterable[Probe], extra: Iterable[Probe]) -> list[Probe]:
    """Return the built-ins with ``extra`` merged in: the same (connector, name) replaces one."""
    merged: dict[tuple[str, str], Probe] = {(p.connector, p.name): p for p in builtin}
    for probe in extra:
        merged[(probe.connector, probe.name)] = probe
    return list(merged.values())


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
    ) -> None:
        self._default_timeout = default_timeout
        self._redact = redact
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="ingest-probe")
        self._busy: set[tuple[str, str]] = set()

    def close(self) -> None:
        """Release the worker threads (stuck ones are abandoned, not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, probes: Sequence[Probe], *, deployment: str) -> ConnectivityReport:
        """Run every probe at once and return their results; never raises for a probe."""
        started = time.time()
        t0 = time.perf_counter()
        groups = await asyncio.gather(*(self.run_one(p) for p in probes))
        results = tuple(r for group in groups for r in group)
        connectors = tuple(dict.fromkeys(p.connector for p in probes))
        return ConnectivityReport(
            deployment=deployment,
            started_at=started,
            duration_seconds=time.perf_counter() - t0,
            results=results,
            connectors=connectors,
        )

    async def run_one(self, probe: Probe) -> list[ProbeResult]:
        """Run one probe within its timeout and turn whatever happens into results."""
        timeout = probe.timeout or self._default_timeout
        t0 = time.perf_counter()
        key = (probe.connector, probe.name)
        try:
            async with asyncio.timeout(timeout):
                if _is_async(probe):
                    output = await probe()  # type: ignore[misc]
                else:
                    output = await self._in_thread(key, probe)
        except TimeoutError:
            return [self._failure(probe, Reason.TIMEOUT, f"no answer within {timeout:g}s", t0)]
        except Exception as exc:  # noqa: BLE001 - a probe's failure is data, not a crash
            return [self._failure(probe, classify(exc), self._describe(exc), t0)]
        return self._results(probe, output, t0)

    async def _in_thread(self, key: tuple[str, str], probe: Probe) -> Any:
        if key in self._busy:
            raise TimeoutError
        self._busy.add(key)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, probe)
        future.add_done_callback(lambda _: self._busy.discard(key))
        output = await future
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
        else:
            checks = list(output)
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
