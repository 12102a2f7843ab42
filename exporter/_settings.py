"""The frozen pydantic models behind :mod:`exporter.config` (import them from there)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from redis.connection import URL_QUERY_ARGUMENT_PARSERS

from exporter._drill_settings import TimescaleFailoverDrillSettings
from exporter._frozen import _IDENTIFIER, _TABLE, Identifier, PlainName, PositiveSeconds, _Frozen
from exporter._kafka_settings import KafkaLagSettings, check_sasl, check_tls_files
from exporter._urls import POSTGRES_QUERY, driver_url
from exporter.redaction import option_secrets, url_secrets

DEFAULT_TIMESCALE_URL = "postgresql://ingest:local-dev-pw@127.0.0.1:55432/ingest"
DEFAULT_REDIS_URL = "redis://127.0.0.1:56379/0"
DEFAULT_KAFKA_BOOTSTRAP = ("127.0.0.1:59092",)
DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9817"  # an exporter listens on every interface, like its peers

_DEPLOYMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$")


def _check_url(
    value: SecretStr, schemes: tuple[str, ...], what: str, typed: Mapping[str, object]
) -> SecretStr:
    raw = value.get_secret_value()
    canonical = driver_url(raw, schemes, what, typed)
    return value if canonical == raw else SecretStr(canonical)


class TimescaleSettings(_Frozen):
    """Connection to the TimescaleDB/PostgreSQL database the ingest writes into."""

    url: SecretStr = SecretStr(DEFAULT_TIMESCALE_URL)
    application_name: PlainName = Field("ingest-exporter", max_length=63)
    pool_max_size: int = Field(2, ge=1, le=20)
    statement_timeout_seconds: PositiveSeconds = 5.0
    #: A streaming replica: the fallback path failover drills read.
    replica_url: SecretStr | None = None
    #: The write endpoint that follows the primary (a multi-host URL with
    #: ``target_session_attrs=read-write``); ``url`` when unset.
    write_url: SecretStr | None = None

    @field_validator("url", "replica_url", "write_url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        return _check_url(value, ("postgresql", "postgres"), "PostgreSQL", POSTGRES_QUERY)

    @property
    def write_endpoint(self) -> SecretStr:
        """Return the URL writes go to: ``write_url``, else ``url``."""
        return self.write_url or self.url


CachePreset = Literal["institutional", "bootstrap", "aggressive", "extended", "disabled"]

# name -> (ttl seconds, max keys). "disabled" caches nothing at all.
CACHE_PRESETS: dict[str, tuple[int, int]] = {
    "institutional": (900, 50_000),
    "bootstrap": (60, 1_000),
    "aggressive": (3_600, 200_000),
    "extended": (86_400, 100_000),
    "disabled": (0, 0),
}


class RedisCacheSettings(_Frozen):
    """Redis cache policy: a preset plus optional overrides, enforced on the server."""

    strategy: CachePreset = "disabled"
    ttl_seconds: int | None = Field(None, gt=0)
    max_keys: int | None = Field(None, gt=0)
    namespace: PlainName = Field("ingest:cache", max_length=128)
    invalidate_prefixes: tuple[PlainName, ...] = ()

    @property
    def enabled(self) -> bool:
        """Tell whether anything is cached at all."""
        return self.strategy != "disabled"

    @property
    def effective_ttl_seconds(self) -> int:
        """Return the TTL every cached key gets on the server."""
        return 0 if not self.enabled else self.ttl_seconds or CACHE_PRESETS[self.strategy][0]

    @property
    def effective_max_keys(self) -> int:
        """Return the most keys the namespace may hold."""
        return 0 if not self.enabled else self.max_keys or CACHE_PRESETS[self.strategy][1]


class RedisSettings(_Frozen):
    """Connection to Redis and its cache policy."""

    url: SecretStr = SecretStr(DEFAULT_REDIS_URL)
    max_connections: int = Field(4, ge=1, le=64)
    cache: RedisCacheSettings = RedisCacheSettings()

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        # redis-py's own converters: a value they refuse would stop the probe with a traceback.
        return _check_url(value, ("redis", "rediss", "unix"), "Redis", URL_QUERY_ARGUMENT_PARSERS)


class TopicBinding(_Frozen):
    """One ingest topic feeding one dimension."""

    dimension: Identifier
    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")


class KafkaSettings(_Frozen):
    """Connection to the Kafka cluster, lag of named groups, the bridge and the manifest."""

    bootstrap_servers: tuple[str, ...] = DEFAULT_KAFKA_BOOTSTRAP
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: PEM CA bundle that verifies the brokers (default: the system's trust store).
    ssl_cafile: FilePath | None = None
    #: PEM client certificate (chain) for brokers that require one (mutual TLS).
    ssl_certfile: FilePath | None = None
    #: PEM private key of ``ssl_certfile`` (omit when the certificate file holds it).
    ssl_keyfile: FilePath | None = None
    client_id: PlainName = "ingest-exporter"
    ingest_topics: tuple[TopicBinding, ...] = ()
    consumer_group: PlainName = "ingest-exporter"
    allow_shared_group: bool = False
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    commit_mode: Literal["after_delivery", "periodic"] = "after_delivery"
    manifest_topic: str = Field("telemetry.ingest.manifest", pattern=r"^[A-Za-z0-9._-]+$")
    manifest_publish: bool = False
    manifest_interval_seconds: PositiveSeconds = 300.0
    canary_topic: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$")
    lag: KafkaLagSettings = KafkaLagSettings()

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _servers(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("expected at least one host:port")
        for item in items:
            match = _HOST_PORT.match(str(item).strip())
            if match is None or not match.group(1) or not 0 < int(match.group(2)) < 65536:
                raise ValueError("expected host:port entries separated by commas")
        return tuple(str(item).strip() for item in items)

    @field_validator("ingest_topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [{"dimension": d, "topic": t} for d, t in value.items()]
        return value

    @model_validator(mode="after")
    def _security(self) -> Self:
        """Check the SASL settings and the TLS files as wholes (see ``_kafka_settings``)."""
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        check_sasl(protocol, mechanism, self.sasl_username, self.sasl_password)
        check_tls_files(protocol, self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        return self


class DeploymentSettings(_Frozen):
    """One named deployment: its Timescale, Redis and Kafka."""

    name: str = Field("local", pattern=_DEPLOYMENT.pattern)
    timescale: TimescaleSettings = TimescaleSettings()
    redis: RedisSettings = RedisSettings()
    kafka: KafkaSettings = KafkaSettings()
    mask_hosts: bool = False


class DimensionSettings(_Frozen):
    """A named Timescale table the ingest fills; the one vocabulary for drills, topics, probes."""

    name: str = Field(pattern=_IDENTIFIER.pattern)
    table: str = Field("", pattern=r"^$|" + _TABLE.pattern)
    time_column: str = Field("time", pattern=_IDENTIFIER.pattern)
    freshness_sla_seconds: PositiveSeconds = 3_600.0
    recent_window_seconds: PositiveSeconds = 3_600.0

    @model_validator(mode="before")
    @classmethod
    def _default_table(cls, data: Any) -> Any:
        """Name the table after the dimension unless the input names one."""
        if isinstance(data, dict) and not data.get("table"):
            return {**data, "table": data.get("name", "")}
        return data


class OperatorProbeSettings(_Frozen):
    """An operator-supplied probe: a ``module:function`` import path, sync or async."""

    name: str = Field(pattern=_IDENTIFIER.pattern)
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    connector: str = Field("operator", pattern=_IDENTIFIER.pattern)
    timeout_seconds: PositiveSeconds | None = None


#: Shortest probe interval: below it the loop only burns CPU and floods the logs.
MIN_PROBE_INTERVAL_SECONDS = 1.0


class ProbeSettings(_Frozen):
    """How often probes run and how long each may take (always less than the interval)."""

    interval_seconds: Annotated[
        float, Field(ge=MIN_PROBE_INTERVAL_SECONDS, allow_inf_nan=False)
    ] = 15.0
    timeout_seconds: PositiveSeconds = 5.0
    operator: tuple[OperatorProbeSettings, ...] = ()


class SupervisorSettings(_Frozen):
    """How background jobs (bridge, cache, manifest, ingest) are restarted after a failure."""

    max_restarts: int | None = Field(None, ge=0)
    backoff_initial_seconds: PositiveSeconds = 1.0
    backoff_max_seconds: PositiveSeconds = 60.0


class WebSettings(_Frozen):
    """The HTTP listener."""

    listen_address: str = DEFAULT_LISTEN_ADDRESS
    config_file: Path | None = None
    max_request_body_bytes: int = Field(65_536, ge=0)
    read_header_timeout_seconds: float = Field(10.0, gt=0, le=3600)

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        match = _HOST_PORT.match(value)
        if match is None or not 0 <= int(match.group(2)) < 65536:
            raise ValueError("expected HOST:PORT (e.g. 127.0.0.1:9817 or :9817)")
        return value

    @property
    def host(self) -> str:
        """Return the host part (all interfaces when empty)."""
        host = self.listen_address.rpartition(":")[0].strip("[]")
        return host or "0.0.0.0"  # noqa: S104 - ":PORT" means every interface by convention

    @property
    def port(self) -> int:
        """Return the port part."""
        return int(self.listen_address.rpartition(":")[2])


class HistorySettings(_Frozen):
    """How many probe cycles the status page keeps per deployment (in memory only)."""

    cycles: int = Field(100, ge=1, le=10_000)
    # Failed cycles are also kept apart, so a burst of healthy ones does not push them out.
    failed_cycles: int = Field(100, ge=0, le=10_000)
    log_lines_per_cycle: int = Field(100, ge=0, le=10_000)


class LogSettings(_Frozen):
    """Log level and format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class IngestSettings(_Frozen):
    """The whole validated, immutable configuration of one exporter process."""

    dimensions: tuple[DimensionSettings, ...] = ()
    deployments: tuple[DeploymentSettings, ...] = (DeploymentSettings(),)
    failover_drill: TimescaleFailoverDrillSettings = TimescaleFailoverDrillSettings()
    probes: ProbeSettings = ProbeSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()
    history: HistorySettings = HistorySettings()

    @field_validator("dimensions", mode="before")
    @classmethod
    def _dimension_names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("failover_drill")
    @classmethod
    def _drill_every_dimension(
        cls, drill: TimescaleFailoverDrillSettings, info: ValidationInfo
    ) -> TimescaleFailoverDrillSettings:
        """Give enabled drills that name no dimension every declared one."""
        # ``dimensions`` is declared first, so it is validated (or failed) by now.
        if not drill.enabled or drill.dimensions:
            return drill
        names = tuple(d.name for d in info.data.get("dimensions", ()))
        return drill.model_copy(update={"dimensions": names})

    @model_validator(mode="after")
    def _timeouts_within_the_interval(self) -> Self:
        """Check that every probe timeout is shorter than the probe interval."""
        probes = self.probes
        expected = f"expected less than the probe interval ({probes.interval_seconds:g} s)"
        if probes.timeout_seconds >= probes.interval_seconds:
            raise ValueError(f"probes.timeout_seconds: {expected}")
        for index, entry in enumerate(probes.operator):
            if (
                entry.timeout_seconds is not None
                and entry.timeout_seconds >= probes.interval_seconds
            ):
                raise ValueError(f"probes.operator.{index}.timeout_seconds: {expected}")
        return self

    @model_validator(mode="after")
    def _references(self) -> Self:
        """Check that every name refers to something declared (one vocabulary)."""
        known = [d.name for d in self.dimensions]
        if len(set(known)) != len(known):
            raise ValueError("dimensions: expected unique dimension names")
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError("deployments: expected unique deployment names")
        declared = ", ".join(known) or "none"
        for name in self.failover_drill.dimensions:
            if name not in known:
                raise ValueError(
                    f"failover_drill.dimensions: expected declared dimensions ({declared}), "
                    f"got unknown {name!r}"
                )
        if self.failover_drill.enabled and not self.failover_drill.dimensions:
            raise ValueError("failover_drill.enabled: expected declared dimensions to drill")
        for index, deployment in enumerate(self.deployments):
            for binding in deployment.kafka.ingest_topics:
                if binding.dimension not in known:
                    raise ValueError(
                        f"deployments.{index}.kafka.ingest_topics: expected declared "
                        f"dimensions ({declared}), got unknown {binding.dimension!r}"
                    )
        return self

    def secret_values(self) -> list[str]:
        """Return every configured secret, so redaction can mask it wherever it shows up.

        Whole URLs, their passwords and secret query values (raw and percent-decoded): a
        driver may print a password without the rest of its URL.
        """
        values: list[str] = []
        for deployment in self.deployments:
            timescale = deployment.timescale
            extra = [u for u in (timescale.replica_url, timescale.write_url) if u is not None]
            for url in (timescale.url, deployment.redis.url, *extra):
                secrets = url_secrets(url.get_secret_value())
                # The whole URL too when it holds a secret (a driver may echo it); a URL
                # without one stays readable in logs and errors.
                values += [url.get_secret_value(), *secrets] if secrets else []
            kafka = deployment.kafka
            if kafka.sasl_password is not None:
                values.append(kafka.sasl_password.get_secret_value())
            if kafka.sasl_username:
                values.append(kafka.sasl_username)
        # A credential given to the drill's injection command as an option (--password=x).
        values += option_secrets(self.failover_drill.inject_command)
        return [value for value in dict.fromkeys(values) if value]

    def dimension(self, name: str) -> DimensionSettings:
        """Return the declared dimension called ``name``."""
        for dimension in self.dimensions:
            if dimension.name == name:
                return dimension
        raise KeyError(name)

    def deployment(self, name: str | None = None) -> DeploymentSettings:
        """Return the named deployment, or the first one."""
        if name is None:
            return self.deployments[0]
        for deployment in self.deployments:
            if deployment.name == name:
                return deployment
        raise KeyError(name)
