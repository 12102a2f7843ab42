"""What the configuration resolved to, and what it ignored: unknown variables, endpoints' sources.

A typo in a variable name (``REDIS_URLS``) used to leave the embedded local defaults in place
without a word. Every variable with one of the project's prefixes that is not a setting is
reported here with the closest known name; :func:`endpoint_sources` says, for each endpoint,
whether the default, the file, the environment or a flag set it. Import through
:mod:`exporter.config`, which passes the environment in.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from exporter._config_errors import Origins
from exporter._settings import DeploymentSettings, IngestSettings
from exporter.redaction import redact_bootstrap_servers, redact_url

__all__ = [
    "PREFIXES",
    "SCRIPT_VARIABLES",
    "ConfigReport",
    "EndpointSource",
    "UnknownVariable",
    "endpoint_sources",
    "redacted_endpoints",
    "unknown_variables",
]

#: Prefixes of the project's variables: any other name with one of them is likely a typo.
PREFIXES = ("INGEST_", "TIMESCALEDB_", "TIMESCALE_", "REDIS_", "KAFKA_")

#: Variables ``scripts/services.sh`` writes to ``.services/env`` for the test suite and the
#: service scripts; they share the prefixes but are not settings, so they are never reported.
SCRIPT_VARIABLES = frozenset(
    {
        "INGEST_SERVICES_DIR",
        "INGEST_REDIS_SERVER",
        "TIMESCALE_ADMIN_URL",
        "TIMESCALE_REPLICA_ADMIN_URL",
    }
)
#: ...and every name under these prefixes (PostgreSQL binaries and data, the Kafka jars).
SCRIPT_PREFIXES = ("INGEST_PG_", "INGEST_KAFKA_")

Source = Literal["default", "file", "env", "flag"]


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    """A variable with a project prefix that no setting reads."""

    name: str
    #: The known variable it most resembles, if any is close.
    closest: str | None

    def explain(self) -> str:
        """Return the one-line explanation used in warnings and errors."""
        hint = f"; did you mean {self.closest}?" if self.closest else ""
        return f"unknown variable, ignored{hint}"


@dataclass(frozen=True, slots=True)
class ConfigReport:
    """What :func:`exporter.config.explain_configuration` found."""

    unknown: list[UnknownVariable]
    endpoints: list[EndpointSource]

    def lines(self) -> list[str]:
        """Return one line per endpoint: deployment, connector, endpoint, source and origin."""
        lines = []
        for item in self.endpoints:
            origin = f" {item.origin}" if item.origin else ""
            where = f"{item.deployment} {item.connector}" if item.deployment else item.connector
            lines.append(f"  {where}: {item.endpoint} ({item.source}{origin})")
        return lines

    def defaults_in_use(self) -> dict[str, str]:
        """Return the connector endpoints left at their embedded local default (redacted)."""
        return {
            f"{r.deployment}.{r.connector}": r.endpoint
            for r in self.endpoints
            if r.source == "default" and r.deployment
        }


@dataclass(frozen=True, slots=True)
class EndpointSource:
    """One resolved endpoint: where it points (redacted) and what set it."""

    deployment: str
    connector: str
    endpoint: str
    source: Source
    #: The variable, flag or file key that set it (empty for the default).
    origin: str


def unknown_variables(environ: Mapping[str, str], known: Iterable[str]) -> list[UnknownVariable]:
    """Return every set variable with a project prefix that is neither a setting nor a script's."""
    names = sorted(set(known))
    found = []
    for name in sorted(environ):
        if not name.startswith(PREFIXES) or name in names or name in SCRIPT_VARIABLES:
            continue
        if name.startswith(SCRIPT_PREFIXES):
            continue
        closest = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        found.append(UnknownVariable(name, closest[0] if closest else None))
    return found


def redacted_endpoints(deployment: DeploymentSettings) -> dict[str, str]:
    """Return each connector's endpoint with every credential masked (hosts too if asked)."""
    mask = deployment.mask_hosts
    return {
        "timescale": redact_url(deployment.timescale.url.get_secret_value(), mask_hosts=mask),
        "redis": redact_url(deployment.redis.url.get_secret_value(), mask_hosts=mask),
        "kafka": ",".join(
            redact_bootstrap_servers(deployment.kafka.bootstrap_servers, mask_hosts=mask)
        ),
    }


_ENDPOINT_PATHS = {
    "timescale": "timescale.url",
    "redis": "redis.url",
    "kafka": "kafka.bootstrap_servers",
}


def endpoint_sources(
    settings: IngestSettings,
    origins: Origins,
    flags: Iterable[str] = (),
) -> list[EndpointSource]:
    """Return each deployment's redacted endpoints, each with the source that set it.

    ``origins`` knows the file and the variables that were read (as the loader filled it);
    ``flags`` are the origins that are command-line flags.
    """
    flagged = set(flags)
    resolved = []
    for index, deployment in enumerate(settings.deployments):
        shown = redacted_endpoints(deployment)
        for connector, path in _ENDPOINT_PATHS.items():
            where = origins(["deployments", str(index), *path.split(".")])
            source, origin = _classify(where, origins, flagged, path)
            resolved.append(
                EndpointSource(deployment.name, connector, shown[connector], source, origin)
            )
        # The drills' optional endpoints, when set.
        for field in ("replica_url", "write_url"):
            url = getattr(deployment.timescale, field)
            if url is None:
                continue
            where = origins(["deployments", str(index), "timescale", field])
            source, origin = _classify(where, origins, flagged, f"timescale.{field}")
            shown_url = redact_url(url.get_secret_value(), mask_hosts=deployment.mask_hosts)
            name = f"timescale {field.removesuffix('_url')}"
            resolved.append(EndpointSource(deployment.name, name, shown_url, source, origin))
    where = origins(["web", "listen_address"])
    source, origin = _classify(where, origins, flagged, "web.listen_address")
    resolved.append(EndpointSource("", "web", settings.web.listen_address, source, origin))
    return resolved


def _classify(where: str, origins: Origins, flagged: set[str], path: str) -> tuple[Source, str]:
    if where in flagged:
        return "flag", where
    key = where.removeprefix(f"{origins.label}: ") if origins.label else where
    # Origins names the deepest file key it found: only the value's own key set it.
    if key != where and key.endswith(path):
        return "file", key
    if where in origins.variables.values():
        return "env", where
    # Nothing set it: Origins then answers with the settings path itself.
    return "default", ""
