"""ingest-exporter: metrics, probes and failover drills for a Timescale + Redis + Kafka stack."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
