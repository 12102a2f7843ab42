"""What a drill will do, decided once from the settings and the request, before anything runs."""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from exporter.config import DeploymentSettings, DimensionSettings, DrillObjectives, IngestSettings
from exporter.drills.inject import redact_argv
from exporter.errors import DrillRefused
from exporter.probes.base import ConnectivityReport
from exporter.redaction import Redactor, redact_url

__all__ = [
    "FAULT_SCENARIOS",
    "DrillPlan",
    "DrillTarget",
    "Scenario",
    "new_drill_id",
    "pin_host",
    "plan_failover_drill",
]


class Scenario(enum.StrEnum):
    """The bounded set of drill scenarios (a metric label)."""

    #: No fault: read each dimension from the replica and measure the exposure now.
    FALLBACK = "fallback"
    #: A clean handover through the operator's injection command.
    SWITCHOVER = "switchover"
    #: The primary is killed by the operator's injection command.
    KILL = "kill"
    #: Arm, then wait for an outage that someone else causes.
    OBSERVE = "observe"


#: Scenarios that run the injection command.
FAULT_SCENARIOS = frozenset({Scenario.SWITCHOVER, Scenario.KILL})


def new_drill_id(now: float | None = None) -> str:
    """Return a drill id that sorts by start time: ``20261204T153000Z-1a2b3c4d``."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC) if now is not None else dt.datetime.now(dt.UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def pin_host(url: str, host: str, port: int) -> str:
    """Return ``url`` aimed at one server: its host list replaced, ``target_session_attrs`` gone.

    The drill watches the primary it armed against, not whatever the write endpoint finds
    next: the first failed probe of *that* server is the detection time.
    """
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    address = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}@{address}:{port}" if userinfo else f"{address}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("target_session_attrs", "host")]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


class DrillTarget(Protocol):
    """What a drill runs against: a deployment's services bundle (its probes and redactor)."""

    @property
    def settings(self) -> IngestSettings:
        """Return the settings tree."""

    @property
    def redactor(self) -> Redactor:
        """Return the process's redactor."""

    def connectivity_report(self) -> Awaitable[ConnectivityReport]:
        """Run the deployment's probes now."""


@dataclass(frozen=True, slots=True)
class DrillPlan:
    """Everything one drill needs to know, resolved and validated before it starts."""

    drill_id: str
    scenario: Scenario
    label: str
    deployment: str
    initiator: str
    dimensions: tuple[DimensionSettings, ...]
    objectives: DrillObjectives
    #: Whether the replica is read and measured (always in the ``fallback`` scenario).
    measure_fallback: bool
    inject_command: tuple[str, ...]
    inject_timeout: float
    deadline: float
    probe_interval: float
    write_interval: float
    lock_ttl: float
    table: str
    write_url: SecretStr
    replica_url: SecretStr | None
    mask_hosts: bool

    @property
    def injects(self) -> bool:
        """Tell whether the drill runs the injection command."""
        return self.scenario in FAULT_SCENARIOS

    @property
    def probe_timeout(self) -> float:
        """Return the bound of one probe of a server (connect and query)."""
        return max(0.5, min(2.0, 2 * self.probe_interval))

    def settings_used(self, redactor: Redactor) -> dict[str, Any]:
        """Return the settings the drill ran with, for its record: no credential in them."""
        replica = self.replica_url.get_secret_value() if self.replica_url else None
        return {
            "objectives": self.objectives.model_dump(mode="json"),
            "measure_fallback": self.measure_fallback,
            "inject_command": list(redact_argv(self.inject_command, redactor)),
            "inject_timeout_seconds": self.inject_timeout,
            "deadline_seconds": self.deadline,
            "probe_interval_seconds": self.probe_interval,
            "write_interval_seconds": self.write_interval,
            "lock_ttl_seconds": self.lock_ttl,
            "table": self.table,
            "write_endpoint": self._endpoint(self.write_url.get_secret_value()),
            "replica_endpoint": self._endpoint(replica) if replica else None,
        }

    def _endpoint(self, url: str) -> str:
        return redact_url(url, mask_hosts=self.mask_hosts)


def plan_failover_drill(
    settings: IngestSettings,
    *,
    scenario: Scenario | str,
    deployment: str | None = None,
    dimensions: Sequence[str] = (),
    initiator: str = "api",
    drill_id: str | None = None,
) -> DrillPlan:
    """Resolve a drill request against the settings; refuse what cannot run.

    Raises:
        DrillRefused: drills are off, the scenario or a dimension is unknown, a fault
            scenario has no injection command, or ``fallback`` has no replica to read.
    """
    drill = settings.failover_drill
    if not drill.enabled:
        raise DrillRefused("failover_drill.enabled", "failover drills are disabled")
    try:
        chosen = Scenario(scenario)
    except ValueError:
        scenarios = ", ".join(s.value for s in Scenario)
        raise DrillRefused("scenario", f"expected one of {scenarios}") from None
    target = _deployment(settings, deployment)
    names = tuple(dimensions) or drill.dimensions
    unknown = [n for n in names if n not in drill.dimensions]
    if unknown:
        known = ", ".join(drill.dimensions)
        shown = unknown[0] if unknown[0].isidentifier() else "(not shown)"
        raise DrillRefused("dimension", f"expected drill dimensions ({known}), got {shown}")
    if chosen in FAULT_SCENARIOS and not drill.inject_command:
        raise DrillRefused(
            "failover_drill.inject_command",
            f"the {chosen.value} scenario needs an injection command (argv list); "
            "the exporter never stops or promotes a server itself",
        )
    timescale = target.timescale
    if chosen is Scenario.FALLBACK and timescale.replica_url is None:
        raise DrillRefused(
            "timescale.replica_url",
            "the fallback scenario reads a replica: set TIMESCALE_REPLICA_URL",
        )
    return DrillPlan(
        drill_id=drill_id or new_drill_id(),
        scenario=chosen,
        label=drill.label,
        deployment=target.name,
        initiator=initiator,
        dimensions=tuple(settings.dimension(n) for n in names),
        objectives=drill.objectives,
        measure_fallback=(chosen is Scenario.FALLBACK or drill.run_fallback)
        and timescale.replica_url is not None,
        inject_command=drill.inject_command,
        inject_timeout=drill.inject_timeout_seconds,
        deadline=drill.deadline_seconds,
        probe_interval=drill.probe_interval_seconds,
        write_interval=drill.write_interval_seconds,
        lock_ttl=drill.lock_ttl_seconds,
        table=drill.table,
        write_url=timescale.write_endpoint,
        replica_url=timescale.replica_url,
        mask_hosts=target.mask_hosts,
    )


def _deployment(settings: IngestSettings, name: str | None) -> DeploymentSettings:
    try:
        return settings.deployment(name)
    except KeyError:
        known = ", ".join(d.name for d in settings.deployments)
        raise DrillRefused("deployment", f"expected one of {known}") from None
