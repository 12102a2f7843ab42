"""The log lines of one probe cycle, captured (redacted, bounded) for the status page.

The probe loop opens a :func:`capture_cycle_log` around each cycle; every log event written
in that cycle's context (its probe tasks and worker threads inherit the context) is also kept
in the cycle's :class:`CycleLog`, whatever the configured log level, as blackbox_exporter keeps
a probe's debug lines. The events are redacted by the same :class:`Redactor` as the output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

from exporter.redaction import Redactor

__all__ = [
    "CaptureCycleLog",
    "CycleLog",
    "LogLine",
    "capture_cycle_log",
    "drop_below",
    "keep_for_cycle",
]

#: One captured event: JSON-ready keys and values.
LogLine = Mapping[str, Any]

#: Longest text kept per value; a captured line is for reading, not for archiving.
_VALUE_LIMIT = 500
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

_current: ContextVar[CycleLog | None] = ContextVar("ingest_cycle_log", default=None)


class CycleLog:
    """Collect at most ``limit`` events; count the rest. Closed once its cycle is stored."""

    __slots__ = ("_closed", "_lines", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self._lines: list[LogLine] = []
        self._closed = False

    def add(self, event: Mapping[str, Any]) -> None:
        """Keep one (already redacted) event, or count it when the cycle is full."""
        if self._closed:
            # A task started by the cycle (a client bootstrap) may log after it ended.
            return
        if len(self._lines) >= self.limit:
            self.dropped += 1
            return
        self._lines.append(
            {key: _plain(value) for key, value in event.items() if not key.startswith("_")}
        )

    def close(self) -> tuple[LogLine, ...]:
        """Stop collecting and return the lines kept, oldest first."""
        self._closed = True
        return tuple(self._lines)


@contextmanager
def capture_cycle_log(limit: int) -> Iterator[CycleLog]:
    """Capture the events logged in this context (and tasks started from it) until exit."""
    log = CycleLog(limit)
    token = _current.set(log)
    try:
        yield log
    finally:
        _current.reset(token)
        log.close()


class CaptureCycleLog:
    """A structlog processor: hand a redacted copy of the event to the current cycle, if any."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Return ``event`` unchanged; a copy is kept by the capturing cycle."""
        log = _current.get()
        if log is not None:
            log.add(self._redactor.redact_mapping(dict(event)))
        return event


def keep_for_cycle(threshold: int) -> structlog.types.Processor:
    """Return a first processor: drop events below ``threshold`` unless a cycle captures them."""

    def gate(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if _LEVELS.get(method, logging.INFO) < threshold and _current.get() is None:
            raise structlog.DropEvent
        return event

    return gate


def drop_below(threshold: int) -> structlog.types.Processor:
    """Return a processor dropping events below ``threshold`` (after the capture saw them)."""

    def level_filter(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if _LEVELS.get(method, logging.INFO) < threshold:
            raise structlog.DropEvent
        return event

    return level_filter


def _plain(value: Any) -> Any:
    """Return ``value`` as a JSON scalar, texts bounded."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"
