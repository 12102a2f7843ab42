"""Suite-wide settings: every metrics collector is strict while the tests run."""

from __future__ import annotations

import pytest

from exporter.telemetry.metrics import IngestCollector


@pytest.fixture(autouse=True)
def strict_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a measurement that no metric spec declares fail the test instead of a log line."""
    monkeypatch.setattr(IngestCollector, "strict", True)
