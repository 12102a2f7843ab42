"""The redaction-safe connector manifest, built from an allow-list output model.

Nothing here dumps the settings and deletes secrets: every field of the output is named
below and filled from a value that is safe by construction (a redacted endpoint, a count,
a name). A setting added later cannot leak by default; it is absent until someone adds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict

from exporter.config import DeploymentSettings, IngestSettings, redacted_endpoints
from exporter.redaction import MASK, redact_url
from exporter.state import ConnectorInfo

__all__ = [
    "ConnectorManifest",
    "ManifestEntry",
    "SupervisionView",
    "build_manifest",
    "connector_infos",
    "failover_metadata",
]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SupervisionView(_Out):
    """Supervision state of the background task that serves a connector."""

    task: str
    state: str
    restarts: int
    last_error_type: str | None = None
    last_error_message: str | None = None


class ManifestEntry(_Out):
    """One connector as shown to operators."""

    name: str
    kind: Literal["timescale", "redis", "kafka"]
    configured: bool
    supervised: bool
    endpoint: str
    metadata: dict[str, Any]
    supervision: list[SupervisionView] = []


class ConnectorManifest(_Out):
    """The manifest of one deployment."""

    deployment: str
    exporter_version: str
    connectors: list[ManifestEntry]


def _database(url: str) -> str | None:
    path = urlsplit(redact_url(url)).path.lstrip("/")
    return unquote(path) or None if MASK not in path else None


def timescale_metadata(deployment: DeploymentSettings, settings: IngestSettings) -> dict[str, Any]:
    """Return the Timescale entry's allow-listed metadata."""
    ts = deployment.timescale
    return {
        "database": _database(ts.url.get_secret_value()),
        "application_name": ts.application_name,
        "pool_max_size": ts.pool_max_size,
        "statement_timeout_seconds": ts.statement_timeout_seconds,
        "dimensions": [
            {
                "name": d.name,
                "table": d.table,
                "time_column": d.time_column,
                "freshness_sla_seconds": d.freshness_sla_seconds,
            }
            for d in settings.dimensions
        ],
    }


def redis_metadata(deployment: DeploymentSettings) -> dict[str, Any]:
    """Return the Redis entry's allow-listed metadata (cache policy, not credentials)."""
    cache = deployment.redis.cache
    return {
        "cache_policy": {
            "strategy": cache.strategy,
            "enabled": cache.enabled,
            "ttl_seconds": cache.effective_ttl_seconds,
            "max_keys": cache.effective_max_keys,
            "namespace": cache.namespace,
            "invalidate_prefixes": list(cache.invalidate_prefixes),
        },
    }


def kafka_metadata(deployment: DeploymentSettings) -> dict[str, Any]:
    """Return the Kafka entry's allow-listed metadata (SASL user masked, password never)."""
    kafka = deployment.kafka
    return {
        "security_protocol": kafka.security_protocol,
        "sasl_mechanism": kafka.sasl_mechanism,
        "sasl_username": MASK if kafka.sasl_username else None,
        "client_id": kafka.client_id,
        "consumer_group": kafka.consumer_group,
        "topics": [{"dimension": b.dimension, "topic": b.topic} for b in kafka.ingest_topics],
        "auto_offset_reset": kafka.auto_offset_reset,
        "commit_mode": kafka.commit_mode,
        "manifest_topic": kafka.manifest_topic if kafka.manifest_publish else None,
    }


def connector_infos(settings: IngestSettings) -> tuple[ConnectorInfo, ...]:
    """Return the ``ingest_connector_info`` rows of every deployment."""
    return tuple(
        ConnectorInfo(deployment.name, name, name, endpoint)
        for deployment in settings.deployments
        for name, endpoint in redacted_endpoints(deployment).items()
    )


def failover_metadata(settings: IngestSettings) -> dict[str, Any] | None:
    """Return the failover-drill settings as JSON data, or ``None`` when drills are off.

    An allow-list: names, flags and numbers only. The injection command's argv may carry a
    credential and the token file's path says where one lives, so only whether each is set
    is published.
    """
    drill = settings.failover_drill
    if not drill.enabled:
        return None
    data = drill.model_dump(mode="json", exclude={"inject_command", "token_file"})
    data["inject_command_configured"] = bool(drill.inject_command)
    data["http_trigger"] = drill.token_file is not None
    return data


def build_manifest(
    settings: IngestSettings,
    deployment: DeploymentSettings,
    *,
    supervision: Mapping[str, Iterable[SupervisionView]] | None = None,
    live: Mapping[str, Mapping[str, Any]] | None = None,
) -> ConnectorManifest:
    """Build the manifest of ``deployment`` without connecting to anything.

    Args:
        settings: The whole settings tree (for the dimension vocabulary).
        deployment: The deployment to describe.
        supervision: Per connector, the views of the tasks serving it; a connector counts as
            supervised when it has at least one task and none of them has failed.
        live: Per connector, extra metadata already read by background tasks (cache hit
            counters, for instance); merged under the key ``live``.
    """
    from exporter import __version__

    supervision = supervision or {}
    live = live or {}
    metadata = {
        "timescale": timescale_metadata(deployment, settings),
        "redis": redis_metadata(deployment),
        "kafka": kafka_metadata(deployment),
    }
    entries = []
    for name, endpoint in redacted_endpoints(deployment).items():
        views = list(supervision.get(name, ()))
        meta = dict(metadata[name])
        if name in live:
            meta["live"] = dict(live[name])
        entries.append(
            ManifestEntry(
                name=name,
                kind=name,
                configured=True,
                supervised=bool(views) and all(v.state != "failed" for v in views),
                endpoint=endpoint,
                metadata=meta,
                supervision=views,
            )
        )
    return ConnectorManifest(
        deployment=deployment.name, exporter_version=__version__, connectors=entries
    )
