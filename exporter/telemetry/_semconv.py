"""Semantic-convention span attributes of a probe, parsed once from the deployment settings.

Hosts, ports and database names come from the parsed settings, never from a URL string put
into a span: a URL, a DSN or a password is never an attribute value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

from opentelemetry.util.types import AttributeValue

from exporter._urls import split_url

if TYPE_CHECKING:
    from exporter.config import DeploymentSettings
    from exporter.probes.base import Probe

__all__ = ["probe_span_attributes"]


def probe_span_attributes(
    deployment: DeploymentSettings,
) -> Callable[[Probe], dict[str, AttributeValue]]:
    """Return a function giving a probe's semantic-convention span attributes.

    Hosts, ports and database names are parsed from the settings once, here; a URL, DSN or
    password is never an attribute. With ``mask_hosts`` no ``server.address`` is recorded.
    A Kafka probe whose ``topic``, ``topics`` and ``canary_topic`` attributes name exactly one
    topic also gets ``messaging.destination.name`` (the attribute is single-valued, so a probe
    of several topics gets it per check, on the check events: see the probe runner).
    """
    mask = deployment.mask_hosts
    pg_host, pg_port, pg_db = _pg_target(deployment.timescale.url.get_secret_value())
    redis_host, redis_port, redis_db = _redis_target(deployment.redis.url.get_secret_value())
    kafka_host, _, kafka_port = deployment.kafka.bootstrap_servers[0].rpartition(":")
    by_connector: dict[str, dict[str, AttributeValue]] = {
        "timescale": _clean(
            {
                "db.system.name": "postgresql",
                "db.namespace": pg_db,
                "server.address": None if mask else pg_host,
                "server.port": pg_port,
            }
        ),
        "redis": _clean(
            {
                "db.system.name": "redis",
                "db.namespace": redis_db,
                "server.address": None if mask else redis_host,
                "server.port": redis_port,
            }
        ),
        "kafka": _clean(
            {
                "messaging.system": "kafka",
                "server.address": None if mask else kafka_host.strip("[]"),
                "server.port": int(kafka_port),
            }
        ),
    }

    def attributes(probe: Probe) -> dict[str, AttributeValue]:
        result = dict(by_connector.get(probe.connector, {}))
        topics = _topics(probe) if probe.connector == "kafka" else set()
        if len(topics) == 1:
            result["messaging.destination.name"] = topics.pop()
        return result

    return attributes


def _topics(probe: Probe) -> set[str]:
    found: set[str] = set()
    for name in ("topic", "canary_topic"):
        value = getattr(probe, name, None)
        if isinstance(value, str) and value:
            found.add(value)
    many = getattr(probe, "topics", ())
    if isinstance(many, list | tuple):
        found.update(t for t in many if isinstance(t, str) and t)
    return found


def _clean(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {key: value for key, value in attributes.items() if value not in (None, "")}


def _split_url(url: str) -> tuple[str, str, dict[str, str]] | None:
    """Return (first host[:port], path, query) of a URL, or None when it is ambiguous."""
    parts = split_url(url)
    # Stricter than the redactor: whenever a '?' or '#' comes before the user-info's end,
    # that '@' may sit in a query value (`?sslpassword=a@b`) and what follows it could be
    # the tail of a secret, so nothing is taken from such a URL.
    if parts is None or parts.ambiguous or any(c in (parts.userinfo or "") for c in "?#"):
        return None
    query = dict(parse_qsl(parts.query or ""))
    return parts.hosts.split(",")[0], unquote(parts.path.lstrip("/")), query


def _host_port(item: str) -> tuple[str, int | None]:
    if item.startswith("["):
        host, _, port = item[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = item.partition(":")
    return unquote(host), int(port) if port.isdigit() else None


def _pg_target(url: str) -> tuple[str, int | None, str]:
    parts = _split_url(url)
    if parts is None:
        return "", None, ""
    first, path, query = parts
    host, port = _host_port(first)
    if not host:
        # libpq also takes hosts (or a socket directory) as query parameters.
        host = query.get("host", "").split(",")[0]
    if port is None:
        raw = query.get("port", "").split(",")[0]
        port = int(raw) if raw.isdigit() else 5432
    return host, port, path or query.get("dbname", "") or query.get("database", "")


def _redis_target(url: str) -> tuple[str, int | None, str]:
    parts = _split_url(url)
    if parts is None:
        return "", None, ""
    first, path, query = parts
    if url.lower().startswith("unix:"):
        return "/" + path, None, query.get("db", "0")
    host, port = _host_port(first)
    db = path if path.isdigit() else query.get("db", "0")
    return host, port or 6379, db
