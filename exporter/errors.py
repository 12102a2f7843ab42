"""The exporter's error hierarchy: one root, a few children, each with a ``retriable`` flag."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectorError",
    "DrillBusy",
    "DrillRefused",
    "ExporterError",
    "ProbeError",
    "SupervisorError",
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

    def __init__(self, connector: str, reason: str, detail: str = "") -> None:
        self.connector = connector
        self.reason = reason
        self.detail = detail
        message = f"{connector}: {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)


class ProbeError(ExporterError):
    """Signal a failed check from inside a probe, with a bounded reason."""

    retriable = True

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


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
