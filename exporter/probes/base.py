"""What a probe is and what it returns: data, never an exception."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from exporter.reasons import Reason

__all__ = [
    "Check",
    "ConnectivityReport",
    "FunctionProbe",
    "Measurement",
    "Probe",
    "ProbeResult",
    "Reason",
    "Status",
]


class Status(enum.StrEnum):
    """Outcome of one check, worst last."""

    OK = "ok"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Measurement:
    """A number a check observed, published as a metric sample by the collector."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    """What a probe function reports about one aspect of its service."""

    name: str
    status: Status = Status.OK
    reason: Reason | None = None
    detail: str = ""
    measurements: tuple[Measurement, ...] = ()
    latency_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One check's result as stored in the snapshot and shown to users."""

    connector: str
    check: str
    status: Status
    reason: Reason | None
    latency_seconds: float
    detail: str
    checked_at: float
    measurements: tuple[Measurement, ...] = ()
    #: Hex id of the span the probe ran in (``None`` untraced): the log line's ``span_id``.
    span_id: str | None = None

    @property
    def ok(self) -> bool:
        """Tell whether the check passed."""
        return self.status is Status.OK

    def as_dict(self, metric_names: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Return a JSON-ready view (measurements flattened to name/labels/value).

        Args:
            metric_names: Measurement name -> the sample name scraped from ``/metrics``
                (``ingest_redis_evicted_keys`` -> ``..._total``); unmapped names are kept.
        """
        names = metric_names or {}
        return {
            "connector": self.connector,
            "check": self.check,
            "status": self.status.value,
            "reason": self.reason.value if self.reason else None,
            "latency_seconds": round(self.latency_seconds, 6),
            "detail": self.detail,
            "checked_at": self.checked_at,
            "measurements": [
                {"name": names.get(m.name, m.name), "labels": dict(m.labels), "value": m.value}
                for m in self.measurements
            ],
        }


ProbeOutput = Check | list[Check] | tuple[Check, ...] | bool | None


@runtime_checkable
class Probe(Protocol):
    """A named, bounded check of one connector; built-in and operator probes alike.

    A probe may also have a ``checks`` attribute: the names of the checks it reports on a
    healthy run. The runner then reports each of them in every cycle, ``unknown`` with the
    probe's failure reason when the probe raised, so no series vanishes in an outage.
    """

    @property
    def connector(self) -> str:
        """Return the connector the probe belongs to (a metric label value)."""

    @property
    def name(self) -> str:
        """Return the check name (a metric label value)."""

    @property
    def timeout(self) -> float | None:
        """Return the probe's own timeout, or None for the configured default."""

    def __call__(self) -> Awaitable[ProbeOutput] | ProbeOutput:
        """Run the checks (a coroutine or a plain function) and return what was seen."""


@dataclass(frozen=True, slots=True)
class FunctionProbe:
    """Adapt a plain sync or async function into a :class:`Probe`."""

    connector: str
    name: str
    function: Callable[[], Any]
    timeout: float | None = None

    def __call__(self) -> Any:
        """Call the wrapped function."""
        return self.function()


@dataclass(frozen=True, slots=True)
class ConnectivityReport:
    """Every check of one probe cycle for one deployment."""

    deployment: str
    started_at: float
    duration_seconds: float
    results: tuple[ProbeResult, ...]
    trace_id: str | None = None
    connectors: tuple[str, ...] = field(default=())

    def connector_status(self, connector: str) -> Status:
        """Return the worst status among a connector's checks (unknown when it has none)."""
        order = list(Status)
        statuses = [r.status for r in self.results if r.connector == connector]
        return max(statuses, key=order.index) if statuses else Status.UNKNOWN

    def connector_up(self, connector: str) -> bool:
        """Tell whether the connector answered: no check of it is down and one passed."""
        statuses = [r.status for r in self.results if r.connector == connector]
        return Status.OK in statuses and Status.DOWN not in statuses

    @property
    def ok(self) -> bool:
        """Tell whether every check passed."""
        return all(r.ok for r in self.results)

    def by_connector(self) -> Mapping[str, tuple[ProbeResult, ...]]:
        """Group the results by connector, in connector order."""
        names = list(self.connectors) or list(dict.fromkeys(r.connector for r in self.results))
        for result in self.results:
            if result.connector not in names:
                names.append(result.connector)
        return {n: tuple(r for r in self.results if r.connector == n) for n in names}

    def as_dict(self, metric_names: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Return a JSON-ready view grouped by connector (see :meth:`ProbeResult.as_dict`)."""
        return {
            "deployment": self.deployment,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration_seconds, 6),
            "trace_id": self.trace_id,
            "ok": self.ok,
            "connectors": {
                name: {
                    "status": self.connector_status(name).value,
                    "up": self.connector_up(name),
                    "checks": [r.as_dict(metric_names) for r in results],
                }
                for name, results in self.by_connector().items()
            },
        }
