"""The settings tree: environment + optional YAML file + flags, validated once and frozen.

This is the only module of ours that reads the environment; the OpenTelemetry SDK reads its
standard ``OTEL_*`` variables itself. Operators of this stack already use ``TIMESCALEDB_URL``,
``REDIS_URL``, ``KAFKA_BROKERS`` and the ``TIMESCALE_FAILOVER_DRILL*`` family, so those names
are kept; every environment variable maps to one path in the tree (see :data:`ENVIRONMENT`).
Errors name the variable or file key that was wrong and never echo a secret value.

One mechanism: plain frozen pydantic models fed by this loader, not pydantic-settings sources.
Those names do not fit its sources: deployment-level variables are inherited by every entry of
the file's ``deployments:`` list, lists and ``key:value`` pairs are comma-separated, and an
error must name the variable or file key that was set, while its merged sources only know the
field's path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from exporter._config_errors import Origins, config_error, echoable
from exporter._config_file import read_secret_file, read_yaml, readable_by_all
from exporter._config_report import (
    ConfigReport,
    endpoint_sources,
    redacted_endpoints,
    unknown_variables,
)
from exporter._drill_settings import DrillObjectives, TimescaleFailoverDrillSettings
from exporter._kafka_settings import KafkaLagSettings, LagGroup
from exporter._settings import (
    CACHE_PRESETS,
    DeploymentSettings,
    DimensionSettings,
    HistorySettings,
    IngestSettings,
    KafkaSettings,
    LogSettings,
    OperatorProbeSettings,
    ProbeSettings,
    RedisCacheSettings,
    RedisSettings,
    SupervisorSettings,
    TimescaleSettings,
    TopicBinding,
    WebSettings,
)
from exporter.errors import ConfigError
from exporter.redaction import Redactor

__all__ = [
    "CACHE_PRESETS",
    "ENVIRONMENT",
    "ConfigReport",
    "DeploymentSettings",
    "DimensionSettings",
    "DrillObjectives",
    "HistorySettings",
    "IngestSettings",
    "KafkaLagSettings",
    "KafkaSettings",
    "LagGroup",
    "LogSettings",
    "OperatorProbeSettings",
    "ProbeSettings",
    "RedisCacheSettings",
    "RedisSettings",
    "SupervisorSettings",
    "TimescaleFailoverDrillSettings",
    "TimescaleSettings",
    "TopicBinding",
    "WebSettings",
    "build_institutional_ingest_config",
    "build_redactor",
    "explain_configuration",
    "otel_environment",
    "redacted_endpoints",
    "world_readable_secret_files",
]

# Where each environment variable lands. "@" paths are deployment-level (they become the
# defaults every deployment inherits); the others are global. Aliases listed together: the
# first one set wins, in this order.
ENVIRONMENT: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("TIMESCALEDB_URL", "TIMESCALE_URL", "DATABASE_URL"), "@timescale.url", "PostgreSQL URL"),
    (("TIMESCALE_APPLICATION_NAME",), "@timescale.application_name", "application_name"),
    (("TIMESCALE_POOL_MAX_SIZE",), "@timescale.pool_max_size", "probe pool size"),
    (("TIMESCALE_REPLICA_URL",), "@timescale.replica_url", "replica PostgreSQL URL"),
    (("TIMESCALE_WRITE_URL",), "@timescale.write_url", "write-endpoint PostgreSQL URL"),
    (("REDIS_URL",), "@redis.url", "Redis URL"),
    (("REDIS_CACHE_STRATEGY",), "@redis.cache.strategy", "cache policy preset"),
    (("REDIS_CACHE_TTL_SECONDS",), "@redis.cache.ttl_seconds", "cache TTL override"),
    (("REDIS_CACHE_MAX_KEYS",), "@redis.cache.max_keys", "cache key-count override"),
    (("REDIS_CACHE_NAMESPACE",), "@redis.cache.namespace", "cache key prefix"),
    (("REDIS_CACHE_INVALIDATE_PREFIXES",), "@redis.cache.invalidate_prefixes", "list"),
    (("KAFKA_BROKERS", "KAFKA_BOOTSTRAP_SERVERS"), "@kafka.bootstrap_servers", "host:port list"),
    (("KAFKA_SECURITY_PROTOCOL",), "@kafka.security_protocol", "security protocol"),
    (("KAFKA_SASL_MECHANISM",), "@kafka.sasl_mechanism", "SASL mechanism"),
    (("KAFKA_SASL_USERNAME",), "@kafka.sasl_username", "SASL user"),
    (("KAFKA_SASL_PASSWORD",), "@kafka.sasl_password", "SASL password"),
    (("KAFKA_SSL_CAFILE",), "@kafka.ssl_cafile", "PEM CA file"),
    (("KAFKA_SSL_CERTFILE",), "@kafka.ssl_certfile", "PEM client certificate"),
    (("KAFKA_SSL_KEYFILE",), "@kafka.ssl_keyfile", "PEM client key"),
    (("KAFKA_CLIENT_ID",), "@kafka.client_id", "client id"),
    (("KAFKA_INGEST_TOPICS",), "@kafka.ingest_topics", "dimension:topic pairs"),
    (("KAFKA_INGEST_CONSUMER_GROUP",), "@kafka.consumer_group", "consumer group"),
    (("KAFKA_INGEST_ALLOW_SHARED_GROUP",), "@kafka.allow_shared_group", "boolean"),
    (("KAFKA_INGEST_AUTO_OFFSET_RESET",), "@kafka.auto_offset_reset", "earliest|latest"),
    (("KAFKA_INGEST_COMMIT_MODE",), "@kafka.commit_mode", "after_delivery|periodic"),
    (("KAFKA_MANIFEST_TOPIC",), "@kafka.manifest_topic", "topic"),
    (("KAFKA_MANIFEST_PUBLISH",), "@kafka.manifest_publish", "boolean"),
    (("KAFKA_MANIFEST_INTERVAL_SECONDS",), "@kafka.manifest_interval_seconds", "seconds"),
    (("KAFKA_CANARY_TOPIC",), "@kafka.canary_topic", "topic (opt-in canary probe)"),
    (("KAFKA_LAG_GROUPS",), "@kafka.lag.groups", "group names or /regex/ list"),
    (("KAFKA_LAG_WARN_SECONDS",), "@kafka.lag.warn_seconds", "seconds"),
    (("KAFKA_LAG_DOWN_SECONDS",), "@kafka.lag.down_seconds", "seconds"),
    (("INGEST_DEPLOYMENT",), "@name", "deployment name"),
    (("INGEST_MASK_HOSTS",), "@mask_hosts", "boolean"),
    (("INGEST_DIMENSIONS",), "dimensions", "dimension names"),
    (("TIMESCALE_FAILOVER_DRILL",), "failover_drill.enabled", "boolean"),
    (("TIMESCALE_FAILOVER_DRILL_DIMENSIONS",), "failover_drill.dimensions", "dimension names"),
    (("TIMESCALE_FAILOVER_DRILL_LABEL",), "failover_drill.label", "label"),
    (("TIMESCALE_FAILOVER_DRILL_RUN_FALLBACK",), "failover_drill.run_fallback", "boolean"),
    (("TIMESCALE_FAILOVER_DRILL_TOKEN_FILE",), "failover_drill.token_file", "file path"),
    (("TIMESCALE_FAILOVER_DRILL_SCHEDULE_SECONDS",), "failover_drill.schedule_seconds", "seconds"),
    (("INGEST_PROBE_INTERVAL_SECONDS",), "probes.interval_seconds", "seconds"),
    (("INGEST_PROBE_TIMEOUT_SECONDS",), "probes.timeout_seconds", "seconds"),
    (("INGEST_OPERATOR_PROBES",), "probes.operator", "name=module:function list"),
    (("INGEST_TASK_MAX_RESTARTS",), "supervisor.max_restarts", "restarts before giving up"),
    (("INGEST_TASK_BACKOFF_INITIAL_SECONDS",), "supervisor.backoff_initial_seconds", "seconds"),
    (("INGEST_TASK_BACKOFF_MAX_SECONDS",), "supervisor.backoff_max_seconds", "seconds"),
    (("INGEST_WEB_LISTEN_ADDRESS",), "web.listen_address", "host:port"),
    (("INGEST_LOG_LEVEL",), "log.level", "log level"),
    (("INGEST_LOG_FORMAT",), "log.format", "auto|json|console"),
    (("INGEST_HISTORY_CYCLES",), "history.cycles", "probe cycles kept per deployment"),
    (("INGEST_HISTORY_FAILED_CYCLES",), "history.failed_cycles", "failed cycles kept besides"),
    (("INGEST_HISTORY_LOG_LINES",), "history.log_lines_per_cycle", "log lines kept per cycle"),
)

# Top-level file keys that are deployment settings (every deployment inherits them).
_DEPLOYMENT_KEYS = {"deployment": "name"} | {
    k: k for k in ("timescale", "redis", "kafka", "mask_hosts")
}
# Values that may be secrets: each variable of these also has an X_FILE form.
_SECRET_PATHS = frozenset(
    {
        "@timescale.url",
        "@timescale.replica_url",
        "@timescale.write_url",
        "@redis.url",
        "@kafka.sasl_username",
        "@kafka.sasl_password",
    }
)
# Values given as one comma-separated string in the environment.
_LIST_PATHS = frozenset(
    {
        "@redis.cache.invalidate_prefixes",
        "@kafka.bootstrap_servers",
        "@kafka.lag.groups",
        "dimensions",
        "failover_drill.dimensions",
    }
)


def build_institutional_ingest_config(
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> IngestSettings:
    """Resolve file, environment and flag values into one validated, frozen settings tree.

    Precedence, lowest first: built-in defaults, the YAML file, the environment, ``overrides``
    (command-line flags, keyed by dotted global path such as ``web.listen_address``).

    Raises:
        ConfigError: a value does not parse, a key is unknown, or the file cannot be read. The
            error names the environment variable or file key; it never contains a secret.

    """
    env = os.environ if environ is None else environ
    file_data = _read_file(config_file) if config_file is not None else {}
    origins = Origins(str(config_file or ""), file_data)
    root = {key: value for key, value in file_data.items() if key not in _DEPLOYMENT_KEYS}
    defaults = {_DEPLOYMENT_KEYS[k]: v for k, v in file_data.items() if k in _DEPLOYMENT_KEYS}
    entries = root.pop("deployments", None)

    for names, path, _ in ENVIRONMENT:
        found = _lookup(env, names, secret=path in _SECRET_PATHS)
        if found is None:
            continue
        name, text = found
        value: Any = text
        if path in _LIST_PATHS:
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif path == "@kafka.ingest_topics":
            value = _parse_pairs(name, value, ":")
        elif path == "probes.operator":
            value = [{"name": n, "target": t} for n, t in _parse_pairs(name, value, "=").items()]
        _assign(defaults if path.startswith("@") else root, path.removeprefix("@"), value, origins)
        origins.variables[path] = name
    for path, value in (overrides or {}).items():
        _assign(root, path, value, origins)
        origins.variables[path] = _flag(path)

    if entries is None:
        root["deployments"] = [defaults]
    elif isinstance(entries, list) and entries:
        root["deployments"] = [_merge(defaults, entry, origins, []) for entry in entries]
    else:
        raise ConfigError(origins(["deployments"]), "expected a non-empty list of deployments")
    try:
        return IngestSettings(**root)
    except ValidationError as exc:
        raise config_error(exc, origins) from None


def explain_configuration(
    settings: IngestSettings,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ConfigReport:
    """Report what ``settings`` resolved from: each endpoint's source, and unknown variables.

    Takes the arguments ``settings`` were built from. An unknown variable is one with a
    project prefix (``INGEST_``, ``TIMESCALE_``, ``TIMESCALEDB_``, ``REDIS_``, ``KAFKA_``) that
    no setting reads, most likely a typo; the report names the closest known variable.
    """
    env = os.environ if environ is None else environ
    file_data = _read_file(config_file) if config_file is not None else {}
    origins = Origins(str(config_file or ""), file_data)
    for names, path, _ in ENVIRONMENT:
        if (name := _first_set(env, names, secret=path in _SECRET_PATHS)) is not None:
            origins.variables[path] = name
    flags = [_flag(path) for path in overrides or {}]
    origins.variables.update(zip(overrides or {}, flags, strict=True))
    known = [
        variable
        for names, path, _ in ENVIRONMENT
        for name in names
        for variable in ((name, f"{name}_FILE") if path in _SECRET_PATHS else (name,))
    ]
    return ConfigReport(
        unknown=unknown_variables(env, known), endpoints=endpoint_sources(settings, origins, flags)
    )


def world_readable_secret_files(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the ``*_FILE`` variables whose file every user of the machine may read.

    Only the file's mode is looked at: its content was read once, by the loader.
    """
    env = os.environ if environ is None else environ
    variables = [
        f"{n}_FILE" for aliases, path, _ in ENVIRONMENT if path in _SECRET_PATHS for n in aliases
    ]
    named = {variable: env.get(variable, "").strip() for variable in variables}
    return [variable for variable, file in named.items() if file and readable_by_all(file)]


def otel_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the OpenTelemetry SDK's standard ``OTEL_*`` variables, for the tracer provider.

    They keep their standard names (operators and collectors already know them), so they
    are passed through as a mapping rather than mapped into the settings tree.
    """
    env = os.environ if environ is None else environ
    return {name: value for name, value in env.items() if name.startswith("OTEL_")}


def build_redactor(settings: IngestSettings, environ: Mapping[str, str] | None = None) -> Redactor:
    """Return the process's one :class:`Redactor`, knowing every configured secret.

    That is the settings' secrets plus what the OTLP exporter sends or prints: header values
    and the endpoint's user-info (the SDK reads those variables itself). Build it once and
    pass it to logging, tracing and the provisioner.
    """
    otel = otel_environment(environ)
    secrets = settings.secret_values()
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        # Split as leniently as the SDK does; a malformed item is a secret as a whole.
        for item in otel.get(name, "").split(","):
            value = item.partition("=")[2].strip()
            secrets += [item.strip(), value, unquote(value)]
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        userinfo = otel.get(name, "").partition("://")[2].rpartition("@")[0]
        secrets += [userinfo, userinfo.partition(":")[2]]
    token_file = settings.failover_drill.token_file
    if token_file is not None:
        # The drills' bearer token is only ever compared, never shown; masked all the same.
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError:
            token = ""  # reported where it is used: POST /api/v1/drills answers 503 and logs
        secrets.append(token)
    return Redactor(secrets)


def _read_file(path: str | Path) -> dict[str, Any]:
    data = read_yaml(path, str(path), unreadable=f"--config.file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a mapping at the top level")
    return data


def _first_set(env: Mapping[str, str], names: tuple[str, ...], *, secret: bool) -> str | None:
    """Return the variable that set a value: the first alias set, or its ``_FILE`` form.

    Like :func:`_lookup`, without reading the file (the loader did, once).
    """
    for name in names:
        if env.get(name, "").strip():
            return name
        if secret and env.get(f"{name}_FILE", "").strip():
            return f"{name}_FILE"
    return None


def _flag(path: str) -> str:
    """Return the command-line flag that sets the global ``path``."""
    return "--" + path.replace("_", "-")


def _lookup(
    env: Mapping[str, str], names: tuple[str, ...], *, secret: bool
) -> tuple[str, str] | None:
    """Return ``(variable, value)`` of the first alias set, or ``None``.

    A secret may come from the file named by ``X_FILE`` instead (how Docker and Kubernetes
    mount secrets); it is read here, once.
    """
    for name in names:
        value = env.get(name, "").strip()
        path = env.get(f"{name}_FILE", "").strip() if secret else ""
        if value and path:
            raise ConfigError(f"{name}_FILE", f"set only one of {name} and {name}_FILE")
        if path:
            return f"{name}_FILE", read_secret_file(path, f"{name}_FILE")
        if value:
            return name, value
    return None


def _parse_pairs(name: str, value: str, sep: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        key, found, target = item.partition(sep)
        if not found or not key.strip() or not target.strip():
            got = f", got {item!r}" if echoable(item) else ""
            raise ConfigError(name, f"expected comma-separated key{sep}value pairs{got}")
        pairs[key.strip()] = target.strip()
    return pairs


def _assign(tree: dict[str, Any], dotted: str, value: Any, origins: Origins) -> None:
    """Set ``dotted`` in ``tree``, copying (never changing) the file's mappings on the way.

    Raises:
        ConfigError: the file put something other than a mapping on the way.
    """
    *parents, leaf = dotted.split(".")
    node = tree
    for depth, part in enumerate(parents, start=1):
        child = node.get(part)
        if child is not None and not isinstance(child, Mapping):
            raise ConfigError(origins(parents[:depth]), "expected a mapping")
        node[part] = node = dict(child or {})
    node[leaf] = value


def _merge(base: Mapping[str, Any], over: Any, origins: Origins, path: list[str]) -> Any:
    """Return ``over`` laid over ``base`` (a deployment entry over the top-level sections).

    Raises:
        ConfigError: ``base`` holds a non-mapping where the entry gives a mapping, which
            would silently drop it.
    """
    if not isinstance(over, Mapping):
        return over
    merged: dict[str, Any] = dict(base)
    for key, value in over.items():
        current = merged.get(key)
        if isinstance(current, Mapping):
            value = _merge(current, value, origins, [*path, key])
        elif current is not None and isinstance(value, Mapping):
            raise ConfigError(origins([*path, key]), "expected a mapping")
        merged[key] = value
    return merged
