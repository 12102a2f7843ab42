"""Managed clients of the three services: one module per service."""

from __future__ import annotations

from exporter.connectors.base import Connector, ConnectorState
from exporter.connectors.kafka import KafkaConnector
from exporter.connectors.redis import RedisConnector
from exporter.connectors.timescale import TimescaleConnector

__all__ = [
    "Connector",
    "ConnectorState",
    "KafkaConnector",
    "RedisConnector",
    "TimescaleConnector",
]
