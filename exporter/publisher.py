"""Publish each deployment's manifest and failover metadata to a compacted Kafka topic.

One JSON document per deployment, keyed by the deployment name (UTF-8), so a compacted topic
keeps the latest document of every deployment and a consumer reading it from the start learns
the whole fleet. The document is sent at start, whenever its content changes (checked in
memory every ``min(5, interval)`` seconds) and every ``interval`` seconds regardless, so a
consumer that joins late or a topic that lost data is repaired within one interval::

    {"deployment": "eu-1", "published_at": "2025-01-01T12:00:00.000+00:00",
     "exporter_version": "0.1.0", "manifest": {...}, "failover": {...} | null}

The publisher is a supervised coroutine: broker failures raise (the supervisor restarts the
run with backoff) instead of being retried silently, and every broker call has a deadline.
When ``kafka.manifest_publish`` (``KAFKA_MANIFEST_PUBLISH``) is false the daemon does not
start it at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import Metric

from exporter._cleanup import shielded
from exporter._manifest_document import VOLATILE_KEYS, content_digest, render_document
from exporter._manifest_topic import (
    Producer,
    aiokafka_producer,
    ensure_compacted_topic,
    producer_options,
)
from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ConnectorError, ExporterError
from exporter.metricspec import MetricSpec, family, spec
from exporter.reasons import Reason, classify

if TYPE_CHECKING:
    from exporter.supervisor import Heartbeat

__all__ = [
    "METRIC_SPECS",
    "VOLATILE_KEYS",
    "ManifestPublisher",
    "Producer",
]

_log = structlog.get_logger(__name__)

#: Stages that do no I/O: their errors are bugs, raised as they are.
_LOCAL_STAGES = frozenset({"snapshot", "render"})
#: Longest pause between two change checks; hashing a snapshot in memory is cheap.
_MAX_CHECK_SECONDS = 5.0

#: Families published by :meth:`ManifestPublisher.metric_families`.
METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_manifest_published",
        "counter",
        "deployment",
        "Manifest documents the Kafka broker acknowledged since start.",
    ),
    spec(
        "ingest_manifest_publish_failures",
        "counter",
        "deployment",
        "Manifest publisher runs that failed (broker unreachable, topic missing and not "
        "creatable, deadline passed) since start; each is restarted with backoff.",
    ),
    spec(
        "ingest_manifest_last_published_timestamp_seconds",
        "gauge",
        "deployment",
        "Unix time the broker last acknowledged a manifest document; absent until the first.",
    ),
)


def _keep(text: str) -> str:
    return text


class ManifestPublisher:
    """Publish one deployment's manifest document to a compacted topic, keyed by deployment.

    Register it with ``state.add_source(publisher)`` for its metrics and run ``run`` under
    the supervisor with a restart policy.

    Args:
        kafka: The deployment's Kafka connector (admin client and connection options).
        deployment: The deployment name: the record key and the ``deployment`` label.
        topic: The manifest topic (created compacted when missing).
        interval: Seconds between republishes of an unchanged document.
        snapshot: Return ``{"manifest": ..., "failover": ...}`` as JSON-ready data.
        redact: Scrub a string of every known secret (the provisioner's ``Redactor``).
        on_change: Called after the counters change (``ExporterState.touch``).
        check_interval: Seconds between change checks; ``min(5, interval)`` by default.
        deadline: Seconds any one broker call may take; twice the connector timeout (at
            least 1 s) by default.
        volatile_keys: Keys the change check ignores at any depth.
        producer_factory: Build the producer from its options (tests pass a fake).
    """

    def __init__(
        self,
        kafka: KafkaConnector,
        *,
        deployment: str,
        topic: str,
        interval: float,
        snapshot: Callable[[], Mapping[str, Any]],
        redact: Callable[[str], str] = _keep,
        on_change: Callable[[], None] | None = None,
        check_interval: float | None = None,
        deadline: float | None = None,
        volatile_keys: Collection[str] = VOLATILE_KEYS,
        producer_factory: Callable[[dict[str, Any]], Producer] = aiokafka_producer,
    ) -> None:
        if interval <= 0 or (check_interval is not None and check_interval <= 0):
            raise ValueError("interval and check_interval must be > 0")
        self.kafka = kafka
        self.deployment = deployment
        self.topic = topic
        self.interval = interval
        self.check_interval = check_interval or min(_MAX_CHECK_SECONDS, interval)
        self.deadline = deadline or max(2 * kafka.timeout, 1.0)
        self._snapshot = snapshot
        self._redact = redact
        self._on_change = on_change
        self._volatile = frozenset(volatile_keys)
        self._producer_factory = producer_factory
        self._key = deployment.encode("utf-8")
        self._digest: str | None = None
        self._stage = "idle"
        #: Documents acknowledged by the broker since start.
        self.published = 0
        #: Runs that ended in an error since start.
        self.failures = 0
        #: Unix time of the last acknowledged document.
        self.last_published_at: float | None = None

    async def run(self, heartbeat: Heartbeat) -> None:
        """Publish at start, on change and every interval until cancelled; raise on failure.

        Ready once the first document is acknowledged. Beats at least every
        ``check_interval``, and each broker call takes at most ``deadline``, so a hang
        timeout of ``check_interval + 3 * deadline`` never fires on a healthy run.

        Raises:
            ConnectorError: The broker could not be reached or refused the document in time,
                or the topic is missing and cannot be created.
            ManifestRedactionError: The document could not be redacted into valid JSON.
        """
        self._stage = "ensure_topic"
        producer: Producer | None = None
        try:
            await ensure_compacted_topic(
                self.kafka, self.topic, deadline=self.deadline, deployment=self.deployment
            )
            heartbeat.beat()
            self._stage = "start"
            producer = self._producer_factory(producer_options(self.kafka, deadline=self.deadline))
            async with asyncio.timeout(self.deadline):
                await producer.start()
            await self._loop(producer, heartbeat)
        except Exception as exc:
            stage = self._stage
            local = isinstance(exc, ExporterError) or stage in _LOCAL_STAGES
            # The probe's reason for the same outage (refused, not error): asked of the broker.
            reason = classify(exc) if local else await self.kafka.explain(exc)
            self._count_failure(stage, exc, reason)
            if local:
                raise  # ours, or a bug in building the document: the type says what happened
            if stage == "ensure_topic":
                # The admin client may hold a dead broker's metadata. Dropping it waits for the
                # connector's lock, which a probe's bootstrap may hold: bound it like any call
                # (debug: the failure that led here is logged as manifest_publish_failed).
                await shielded(
                    self.kafka.reset(),
                    timeout=self.deadline,
                    event="manifest_admin_reset",
                    level=logging.DEBUG,
                    deployment=self.deployment,
                )
            raise ConnectorError(self.kafka.name, reason, f"manifest {stage} failed") from exc
        finally:
            if producer is not None:
                await shielded(
                    producer.stop(),
                    timeout=self.deadline,
                    event="manifest_producer_close",
                    deployment=self.deployment,
                )

    def _take_snapshot(self) -> tuple[Mapping[str, Any], str]:
        self._stage = "snapshot"
        snap = self._snapshot()
        return snap, content_digest(snap, self._volatile)

    async def _loop(self, producer: Producer, heartbeat: Heartbeat) -> None:
        loop = asyncio.get_running_loop()
        snap, digest = self._take_snapshot()
        await self._publish(producer, snap, digest, "start")
        heartbeat.ready()
        next_at = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, min(self.check_interval, next_at - loop.time())))
            heartbeat.beat()
            snap, digest = self._take_snapshot()
            if digest != self._digest:
                reason = "change"
            elif loop.time() >= next_at:
                reason = "interval"
            else:
                continue
            await self._publish(producer, snap, digest, reason)
            next_at = loop.time() + self.interval

    async def _publish(
        self, producer: Producer, snap: Mapping[str, Any], digest: str, reason: str
    ) -> None:
        self._stage = "render"
        body = self.render(snap)
        self._stage = "send"
        async with asyncio.timeout(self.deadline):
            meta = await producer.send_and_wait(
                self.topic, body, key=self._key, headers=[("content-type", b"application/json")]
            )
        self._digest = digest
        self.published += 1
        self.last_published_at = time.time()
        self._changed()
        _log.info(
            "manifest_published",
            deployment=self.deployment,
            topic=self.topic,
            partition=getattr(meta, "partition", None),
            offset=getattr(meta, "offset", None),
            reason=reason,
            size_bytes=len(body),
        )

    def render(self, snap: Mapping[str, Any], *, published_at: float | None = None) -> bytes:
        """Return the redacted UTF-8 JSON document for ``snap`` (what is sent).

        Args:
            snap: What ``snapshot()`` returned.
            published_at: Unix time to stamp the document with; now by default.

        Raises:
            ManifestRedactionError: Redaction could not keep the document valid JSON.
        """
        stamp = time.time() if published_at is None else published_at
        return render_document(
            snap, deployment=self.deployment, redact=self._redact, published_at=stamp
        )

    def metric_families(self) -> Iterable[Metric]:
        """Yield the publisher's counters and last-publish time from memory (no I/O)."""
        published, failures, last = (family(s) for s in METRIC_SPECS)
        values = [self.deployment]
        published.add_metric(values, self.published)
        failures.add_metric(values, self.failures)
        if self.last_published_at is not None:
            last.add_metric(values, self.last_published_at)
        yield from (published, failures, last)

    def _count_failure(self, stage: str, exc: Exception, reason: Reason) -> None:
        self.failures += 1
        self._changed()
        _log.warning(
            "manifest_publish_failed",
            deployment=self.deployment,
            topic=self.topic,
            stage=stage,
            reason=reason.value,
            error_type=type(exc).__name__,
        )

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
