"""Connectivity probes: built-in checks per connector, operator probes, and the runner."""

from __future__ import annotations

from exporter.probes.base import (
    Check,
    ConnectivityReport,
    FunctionProbe,
    Measurement,
    Probe,
    ProbeResult,
    Reason,
    Status,
)

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
