"""The settings tree: environment + optional YAML file + flags, validated once and frozen.

This is the only module that reads the environment. Operators of this stack already use
``TIMESCALEDB_URL``, ``REDIS_URL``, ``KAFKA_BROKERS`` and the ``TIMESCALE_FAILOVER_DRILL*``
family, so those names are kept; every environment variable maps to one path in the tree (see
:data:`ENVIRONMENT`). Errors name the variable or file key that was wrong and never echo a
secret value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exporter._settings import (
    CACHE_PRESETS,
    DeploymentSettings,
    DimensionSettings,
    DrillObjectives,
    IngestSettings,
    KafkaSettings,
    LogSettings,
    OperatorProbeSettings,
    ProbeSettings,
    RedisCacheSettings,
    RedisSettings,
    SupervisorSettings,
    TimescaleFailoverDrillSettings,
    TimescaleSettings,
    TopicBinding,
    WebSettings,
)
from exporter.errors import ConfigError
from exporter.redaction import redact_text

__all__ = [
    "CACHE_PRESETS",
    "ENVIRONMENT",
    "DeploymentSettings",
    "DimensionSettings",
    "DrillObjectives",
    "IngestSettings",
    "KafkaSettings",
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
    "otel_environment",
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
    (("KAFKA_CLIENT_ID",), "@kafka.client_id", "client id"),
    (("KAFKA_INGEST_TOPICS",), "@kafka.ingest_topics", "dimension:topic pairs"),
    (("KAFKA_INGEST_CONSUMER_GROUP",), "@kafka.consumer_group", "consumer group"),
    (("KAFKA_INGEST_AUTO_OFFSET_RESET",), "@kafka.auto_offset_reset", "earliest|latest"),
    (("KAFKA_INGEST_COMMIT_MODE",), "@kafka.commit_mode", "after_delivery|periodic"),
    (("KAFKA_MANIFEST_TOPIC",), "@kafka.manifest_topic", "topic"),
    (("KAFKA_MANIFEST_PUBLISH",), "@kafka.manifest_publish", "boolean"),
    (("KAFKA_MANIFEST_INTERVAL_SECONDS",), "@kafka.manifest_interval_seconds", "seconds"),
    (("KAFKA_CANARY_TOPIC",), "@kafka.canary_topic", "topic (opt-in canary probe)"),
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
)

# Values given as one comma-separated string in the environment.
_LIST_PATHS = frozenset(
    {
        "@redis.cache.invalidate_prefixes",
        "@kafka.bootstrap_servers",
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
    origin: dict[str, str] = {}
    file_data = _read_file(config_file) if config_file is not None else {}
    file_label = str(config_file) if config_file is not None else ""

    deployments_raw = file_data.pop("deployments", None)
    defaults: dict[str, Any] = {}
    for section in ("name", "timescale", "redis", "kafka", "mask_hosts"):
        key = "deployment" if section == "name" else section
        if key in file_data:
            defaults[section] = file_data.pop(key)
            _note_origin(origin, "@" + section, defaults[section], f"{file_label}: {key}")
    root: dict[str, Any] = dict(file_data)
    for path, item in root.items():
        _note_origin(origin, path, item, f"{file_label}: {path}")

    for names, path, _ in ENVIRONMENT:
        name = next((n for n in names if env.get(n, "").strip()), None)
        if name is None:
            continue
        value: Any = env[name].strip()
        if path in _LIST_PATHS:
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif path == "@kafka.ingest_topics":
            value = _parse_pairs(name, value, ":")
        elif path == "probes.operator":
            value = [{"name": n, "target": t} for n, t in _parse_pairs(name, value, "=").items()]
        if path.startswith("@"):
            _assign(defaults, path[1:], value)
        else:
            _assign(root, path, value)
        origin[path] = name
    for path, value in (overrides or {}).items():
        _assign(root, path, value)
        origin[path] = "--" + path.replace("_", "-")

    if deployments_raw is None:
        deployments: list[Any] = [defaults]
    elif isinstance(deployments_raw, list) and deployments_raw:
        deployments = [_merge(defaults, entry) for entry in deployments_raw]
        for index, entry in enumerate(deployments_raw):
            label = f"{file_label}: deployments[{index}]"
            _note_origin(origin, f"deployments.{index}", entry, label)
    else:
        raise ConfigError(f"{file_label}: deployments", "expected a non-empty list of deployments")
    root["deployments"] = deployments

    try:
        return IngestSettings(**root)
    except ValidationError as exc:
        raise _config_error(exc, origin) from None


def otel_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the OpenTelemetry SDK's standard ``OTEL_*`` variables, for the tracer provider.

    They keep their standard names (operators and collectors already know them), so they
    are passed through as a mapping rather than mapped into the settings tree.
    """
    env = os.environ if environ is None else environ
    return {name: value for name, value in env.items() if name.startswith("OTEL_")}


def _read_file(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read the file ({exc.strerror})"
        raise ConfigError(f"--config.file {path}", reason) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(path), f"not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a mapping at the top level")
    return data


def _parse_pairs(name: str, value: str, sep: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        key, found, target = item.partition(sep)
        if not found or not key.strip() or not target.strip():
            got = f", got {item!r}" if _echoable(item) else ""
            raise ConfigError(name, f"expected comma-separated key{sep}value pairs{got}")
        pairs[key.strip()] = target.strip()
    return pairs


def _assign(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _merge(base: Mapping[str, Any], over: Any) -> Any:
    if not isinstance(over, Mapping):
        return over
    merged: dict[str, Any] = dict(base)
    for key, value in over.items():
        current = merged.get(key)
        merged[key] = _merge(current, value) if isinstance(current, Mapping) else value
    return merged


def _note_origin(origin: dict[str, str], path: str, value: Any, label: str) -> None:
    origin[path] = label
    if isinstance(value, Mapping):
        for key, child in value.items():
            _note_origin(origin, f"{path}.{key}", child, f"{label}.{key}")


def _config_error(exc: ValidationError, origin: Mapping[str, str]) -> ConfigError:
    """Turn pydantic's first error into one line naming where the bad value came from."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not loc:
        # Cross-reference checks run on the whole tree and name their path in the message.
        path, _, message = message.partition(": ")
        loc = path.split(".")
    hidden_key = error["type"] == "extra_forbidden" and not _echoable(loc[-1])
    if hidden_key:
        # A URL pasted as a key: name the mapping that holds it, never the key itself.
        loc = loc[:-1]
    dotted = ".".join(loc)
    candidates = [dotted]
    if loc[:1] == ["deployments"] and len(loc) > 2:
        rest = ".".join(loc[2:])
        candidates += [f"deployments.{loc[1]}.{rest}", "@" + rest]
    # An exact origin wins; otherwise the nearest enclosing path names the key (a list
    # reports an index below the key that set it).
    key = next((origin[c] for c in candidates if c in origin), None)
    for candidate in candidates:
        parts = candidate.split(".")[:-1]
        while parts and key is None:
            key = origin.get(".".join(parts))
            parts.pop()
    if hidden_key:
        hidden = "unknown key (not shown: it may hold a credential)"
        return ConfigError(key or dotted or "configuration", hidden)
    if error["type"] == "extra_forbidden":
        return ConfigError(key or dotted, f"unknown key {loc[-1]!r}")
    if error["type"] == "missing":
        return ConfigError(key or dotted, "expected a value (required)")
    expected = _EXPECTED.get(error["type"]) or _explain(message)
    got = error.get("input")
    # Echo the offending value only where it cannot be a credential.
    if isinstance(got, str | int | float) and not _SECRET_LEAF.search(loc[-1]) and error["loc"]:
        shown = str(got)
        expected += f", got {shown!r}" if len(shown) <= 40 and _echoable(shown) else ""
    return ConfigError(key or dotted, expected)


def _echoable(text: str) -> bool:
    """Tell whether operator input may be quoted in an error message.

    Not when it holds an ``@`` (user-info: ``u:pw@host``, even without a scheme) or
    anything the redactor would mask (a URL's password, ``password=...``): a value put
    where a mapping or a ``host:port`` was expected is often a whole connection URL.
    """
    return "@" not in text and redact_text(text) == text


_SECRET_LEAF = re.compile(r"url|pass|secret|token|key", re.IGNORECASE)
_EXPECTED = {
    "bool_parsing": "expected a boolean (true/false, yes/no, 1/0)",
    "bool_type": "expected a boolean (true/false, yes/no, 1/0)",
    "float_parsing": "expected a number",
    "int_parsing": "expected a whole number",
}


def _explain(message: str) -> str:
    text = message.removeprefix("Input should be ").removeprefix("input should be ")
    if text != message:
        text = text.replace(", unable to interpret input", "")
        if text.startswith(("greater", "less")):
            text = "a number " + text
        return "expected " + text
    return text if text.startswith("expected") else f"expected valid input ({text})"
