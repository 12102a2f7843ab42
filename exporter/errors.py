"""The exporter's error hierarchy: one root, a few children, each with a ``retriable`` flag."""

from __future__ import annotations

from exporter.reasons import Reason

__all__ = [
    "ConfigError",
    "ConnectorError",
    "ExporterError",
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


class SupervisorError(ExporterError):
    """Report misuse of the task supervisor (duplicate names, use after shutdown)."""


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
