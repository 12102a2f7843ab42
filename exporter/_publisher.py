"""Internals of :mod:`exporter.publisher`: document JSON and redaction, the topic."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ConnectorError, ExporterError
from exporter.reasons import classify
from exporter.redaction import MASK, is_secret_key

__all__ = [
    "ManifestRedactionError",
    "content_digest",
    "ensure_compacted_topic",
    "redact_document",
    "stable_dumps",
]

_log = structlog.get_logger("exporter.publisher")

#: Kafka error code of a CreateTopics race lost to another creator: the topic is there.
_TOPIC_ALREADY_EXISTS = 36
#: Deeper than any manifest; nesting beyond it is masked rather than walked without bound.
_MAX_DEPTH = 32


class ManifestRedactionError(ExporterError):
    """Refuse to publish a document the redaction net could only clean into invalid JSON."""


def stable_dumps(obj: Any) -> str:
    """Return ``obj`` as JSON with sorted keys, so equal content always gives equal text."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False)


def content_digest(obj: Any, volatile: frozenset[str]) -> str:
    """Return the SHA-256 of ``obj``'s stable JSON without the ``volatile`` keys (any depth)."""
    return hashlib.sha256(stable_dumps(_strip(obj, volatile)).encode("utf-8")).hexdigest()


def redact_document(doc: Mapping[str, Any], redact: Callable[[str], str]) -> Any:
    """Return a copy of ``doc`` with every secret removed, twice over.

    First every string (keys included) goes through ``redact`` and the values under
    secret-looking keys become the mask (``null`` and booleans are kept: they hold nothing).
    Then the whole JSON text goes through ``redact`` as a second net. The net reads a copy in
    which masked keys' ``null``/boolean values are the mask too, because its ``key: value``
    rule would turn a bare ``null`` into invalid JSON. If the net changes anything, its text
    (more redacted, still JSON) is what is returned, parsed.

    Raises:
        ManifestRedactionError: The net's text is not valid JSON.
    """
    clean = _scrub(doc, redact, 0, mask_empty=False)
    shadow = stable_dumps(_scrub(clean, _keep, 0, mask_empty=True))
    netted = redact(shadow)
    if netted == shadow:
        return clean
    try:
        caught = json.loads(netted)
    except ValueError as exc:
        raise ManifestRedactionError("redaction left the manifest unparseable") from exc
    _log.warning("manifest_redaction_net_caught")
    return caught


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


def _keep(text: str) -> str:
    return text


def _strip(obj: Any, volatile: frozenset[str]) -> Any:
    if isinstance(obj, Mapping):
        return {k: _strip(v, volatile) for k, v in obj.items() if k not in volatile}
    if isinstance(obj, list | tuple):
        return [_strip(item, volatile) for item in obj]
    return obj


def _scrub(obj: Any, redact: Callable[[str], str], depth: int, *, mask_empty: bool) -> Any:
    """Return ``obj`` with every string redacted and secret-keyed values masked."""
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            empty = value is None or isinstance(value, bool)
            if is_secret_key(str(key)) and (mask_empty or not empty):
                out[redact(str(key))] = MASK
            else:
                out[redact(str(key))] = _scrub(value, redact, depth + 1, mask_empty=mask_empty)
        return out
    if isinstance(obj, list | tuple):
        return [_scrub(item, redact, depth + 1, mask_empty=mask_empty) for item in obj]
    return obj
