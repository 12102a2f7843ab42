"""Grafana dashboards for ingest-exporter, written as code with grafana-foundation-sdk."""
