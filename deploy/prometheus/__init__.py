"""Prometheus alerting and recording rules for ingest-exporter, generated from Python."""
