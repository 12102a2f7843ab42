"""Built-in Kafka checks."""

from __future__ import annotations

import asyncio
import contextlib
import time

from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ProbeError
from exporter.probes.base import Check, Measurement
from exporter.probes.classify import classify
from exporter.telemetry.spec import REFRESHED, MetricSpec, spec

__all__ = ["METRIC_SPECS", "KafkaProbe"]


#: Gauges this probe publishes (through its measurements).
METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_kafka_brokers", "gauge", "deployment", f"Brokers in cluster metadata. {REFRESHED}"
    ),
)


class KafkaProbe:
    """Fetch cluster metadata (brokers, controller) through the admin client."""

    connector: str = "kafka"
    name: str = "metadata"

    def __init__(self, kafka: KafkaConnector, *, timeout: float | None = None) -> None:
        self._kafka = kafka
        self.timeout = timeout

    async def __call__(self) -> list[Check]:
        """Run the checks; a failure drops the admin client so the next run bootstraps anew."""
        t0 = time.perf_counter()
        try:
            admin = await self._kafka.admin()
            cluster = await admin.describe_cluster()
        except Exception as exc:
            await self._kafka.reset()
            raise await self._diagnose(exc) from exc
        brokers = cluster.get("brokers", [])
        return [
            Check(
                "metadata",
                latency_seconds=time.perf_counter() - t0,
                detail=f"{len(brokers)} broker(s), controller {cluster.get('controller_id')}",
                measurements=(Measurement("ingest_kafka_brokers", float(len(brokers))),),
            )
        ]

    async def _diagnose(self, exc: Exception) -> Exception:
        """Say why bootstrap failed: aiokafka reports every cause as one connection error."""
        reason = classify(exc)
        if reason.value not in ("error", "protocol"):
            return exc
        host, _, port = self._kafka.settings.bootstrap_servers[0].rpartition(":")
        try:
            async with asyncio.timeout(self._kafka.timeout):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except Exception as probe_exc:  # noqa: BLE001 - the TCP attempt is the diagnosis
            return ProbeError(classify(probe_exc).value, "cannot open a TCP connection to broker")
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return exc
