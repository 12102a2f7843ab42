"""The exporter's error hierarchy: one root, a few children, each with a ``retriable`` flag.

Every error the exporter raises on purpose is defined here, under :class:`ExporterError`.
Messages are built from typed attributes; a failure reason is a :class:`Reason` member.
"""

from __future__ import annotations

from typing import Protocol

from exporter.reasons import Reason

__all__ = [
    "ConfigError",
    "ConnectionLost",
    "ConnectorError",
    "DeliveryError",
    "DrillBusy",
    "DrillRefused",
    "ExporterError",
    "ListenError",
    "ManifestRedactionError",
    "ProbeError",
    "SupervisorError",
    "UndeclaredMetricError",
]


class ExporterError(Exception):
    """Root of every error the exporter raises on purpose."""

    #: Whether trying the same operation again later may succeed.
    retriable: bool = False


class ConfigError(ExporterError):
    """Reject a configuration value; ``key`` names where the operator set it."""

    def __init__(self, key: str, expected: str) -> None:
        self.key = key
        self.expected = expected
        super().__init__(f"{key}: {expected}")


class ListenError(ExporterError):
    """Report that the HTTP listener could not bind its address."""

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        self.detail = detail
        super().__init__(f"cannot listen on {address}: {detail}")


class ConnectorError(ExporterError):
    """Report that a connector could not reach or use its service."""

    retriable = True

    def __init__(self, connector: str, reason: Reason, detail: str = "") -> None:
        self.connector = connector
        self.reason = _checked(reason)
        self.detail = detail
        message = f"{connector}: {reason.value}"
        super().__init__(f"{message} ({detail})" if detail else message)


class ProbeError(ExporterError):
    """Signal a failed check from inside a probe, with a bounded reason."""

    retriable = True

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = _checked(reason)
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class ConnectionLost(ProbeError):
    """The probe's connection died during a run: no later check can run on it."""


class _Record(Protocol):
    """Where a Kafka record sits (an :class:`~exporter.events.IngestEvent` is one)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class DeliveryError(ExporterError):
    """Report that the event bus raised for an event (names the record, never its payload)."""

    retriable = True

    def __init__(self, event: _Record, cause: BaseException) -> None:
        self.topic, self.partition, self.offset = event.topic, event.partition, event.offset
        where = f"{event.topic}[{event.partition}]@{event.offset}"
        super().__init__(f"event bus failed on {where} ({type(cause).__name__})")


class ManifestRedactionError(ExporterError):
    """Refuse to publish a document the redaction net could only clean into invalid JSON."""


class SupervisorError(ExporterError):
    """Report misuse of the task supervisor (duplicate names, use after shutdown)."""


class DrillRefused(ExporterError):
    """Refuse a failover drill before it starts: drills off, no injection command, bad input."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class DrillBusy(ExporterError):
    """Report that a drill with this label already runs (on this or another exporter)."""

    retriable = True

    def __init__(self, label: str) -> None:
        self.label = label
        super().__init__(f"a failover drill with label {label!r} is already running")


class UndeclaredMetricError(ExporterError):
    """Refuse a measurement whose name no metric spec declares (a strict collector's check)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"measurement {name!r} has no metric spec; declare it in METRIC_SPECS")


def _checked(reason: object) -> Reason:
    """Return ``reason``; refuse a bare string, which mypy lets through from untyped callers."""
    if not isinstance(reason, Reason):
        raise TypeError(f"reason must be a Reason member, got {type(reason).__name__}")
    return reason
