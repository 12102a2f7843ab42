"""A pytest fixture that captures every log line of the process at DEBUG, as JSON."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from exporter.telemetry.logs import configure_logging

__all__ = ["debug_log_fixture"]


@pytest.fixture(name="debug_log")
def debug_log_fixture() -> Iterator[io.StringIO]:
    """Route every log line of the process, at DEBUG, as JSON into a buffer; restore after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
