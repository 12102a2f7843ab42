"""Where the manifest publisher sends: the compacted topic and the producer that writes to it.

The topic is created (compacted, one partition) when it is missing; the producer is an
aiokafka producer with the connector's connection options, or a fake that tests inject.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ConnectorError
from exporter.reasons import classify

__all__ = ["Producer", "aiokafka_producer", "ensure_compacted_topic", "producer_options"]

_log = structlog.get_logger("exporter.publisher")

#: Kafka error code of a CreateTopics race lost to another creator: the topic is there.
_TOPIC_ALREADY_EXISTS = 36


class Producer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaProducer` the publisher uses."""

    async def start(self) -> None:
        """Bootstrap the producer."""

    async def stop(self) -> None:
        """Flush and close the producer."""

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Send one record and return its metadata (``partition``, ``offset``)."""


def aiokafka_producer(options: dict[str, Any]) -> Producer:
    """Return an (unstarted) aiokafka producer built from ``options``."""
    producer: Producer = AIOKafkaProducer(**options)
    return producer


def producer_options(kafka: KafkaConnector, *, deadline: float) -> dict[str, Any]:
    """Return the producer's options: the connector's connection plus durable sends."""
    options = kafka.client_options()
    options.update(
        acks="all",
        # Idempotence needs producer ids from the broker (and an ACL) for no gain here:
        # a duplicate of a keyed document on a compacted topic is harmless.
        enable_idempotence=False,
        linger_ms=5,
        request_timeout_ms=max(int(deadline * 1000), 1000),
    )
    return options


async def ensure_compacted_topic(
    kafka: KafkaConnector, topic: str, *, deadline: float, deployment: str
) -> None:
    """Create ``topic`` compacted when it is missing; raise when that is not possible.

    One partition (a single key per deployment needs no more), replication ``min(3, brokers)``.
    Every broker call is bounded by ``deadline`` seconds.

    Raises:
        ConnectorError: The topic is missing and creating it failed (``manifest_topic_missing``
            is logged), for instance because the principal may not create topics.
    """
    async with asyncio.timeout(deadline):
        admin = await kafka.admin()
        described = await admin.describe_topics([topic])
    if described and described[0].get("error_code") == 0:
        await _check_compacted(admin, topic, deadline)
        return
    async with asyncio.timeout(deadline):
        cluster = await admin.describe_cluster()
        replication = min(3, max(1, len(cluster.get("brokers") or ())))
        request = NewTopic(
            topic,
            num_partitions=1,
            replication_factor=replication,
            topic_configs={"cleanup.policy": "compact"},
        )
        response = await admin.create_topics([request], timeout_ms=int(deadline * 1000))
    for entry in response.topic_errors:
        code = entry[1]
        if code in (0, _TOPIC_ALREADY_EXISTS):  # created, or created by someone else meanwhile
            continue
        error = for_code(code)
        reason = classify(error())
        _log.error(
            "manifest_topic_missing",
            deployment=deployment,
            topic=topic,
            reason=reason.value,
            error_type=error.__name__,
        )
        raise ConnectorError(
            kafka.name, reason, f"manifest topic missing and not created ({error.__name__})"
        )
    _log.info(
        "manifest_topic_created",
        deployment=deployment,
        topic=topic,
        replication_factor=replication,
    )


async def _check_compacted(admin: Any, topic: str, deadline: float) -> None:
    """Warn when an existing topic is not compacted (old documents then pile up)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    try:
        async with asyncio.timeout(deadline):
            responses = await admin.describe_configs([resource])
        entries = responses[0].to_object()["resources"][0]["config_entries"]
        policy = next(e["config_value"] for e in entries if e["config_names"] == "cleanup.policy")
    except Exception as exc:  # noqa: BLE001 - an advisory check; publishing goes on without it
        _log.info("manifest_topic_config_unknown", topic=topic, error_type=type(exc).__name__)
        return
    if "compact" not in str(policy).split(","):
        _log.warning("manifest_topic_not_compacted", topic=topic, cleanup_policy=policy)
