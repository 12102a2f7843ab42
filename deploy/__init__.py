"""Deployment examples: Prometheus rules (generated), Alertmanager and compose files."""
