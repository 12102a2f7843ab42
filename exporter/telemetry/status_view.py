"""What the status pages show, as JSON-ready data built from memory only.

The HTML pages and their JSON twins (``Accept: application/json`` or ``/api/v1/*``) are both
rendered from these views, so they cannot disagree. Nothing here awaits or touches a service:
the snapshot, the probe history, the supervisor's task list and the manifests are all in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from exporter import __version__
from exporter.config import ConfigReport
from exporter.history import ProbeCycle, StatusSince
from exporter.probes.base import ConnectivityReport, ProbeResult
from exporter.state import ConnectorInfo, ExporterState
from exporter.telemetry.drill_pages import DrillSource, drills_view
from exporter.telemetry.metrics import EXPOSED_NAMES

__all__ = [
    "RECENT_DRILLS_ON_INDEX",
    "RECENT_ON_INDEX",
    "StatusView",
    "config_warnings",
    "task_view",
]

#: Cycles per deployment listed on ``/`` (``/probes`` lists every stored one).
RECENT_ON_INDEX = 10
#: Drills listed on ``/`` (``/drills`` lists every kept one).
RECENT_DRILLS_ON_INDEX = 5

#: The endpoints the pages link to, with what each one is.
_LINKS: tuple[tuple[str, str], ...] = (
    ("/probes", "recent probe cycles"),
    ("/drills", "failover drills and their reports"),
    ("/metrics", "Prometheus metrics"),
    ("/-/healthy", "liveness"),
    ("/-/ready", "readiness (first probe cycle done)"),
    ("/api/v1/status", "this page as JSON"),
    ("/api/v1/probes", "recent probe cycles as JSON"),
    ("/api/v1/manifest", "connector manifest (redacted)"),
    ("/api/v1/connectivity", "last connectivity report"),
    ("/api/v1/failover", "failover-drill settings"),
    ("/api/v1/drills", "failover drills: running and last 50 (POST starts one)"),
)


def task_view(task: Any) -> dict[str, Any]:
    """Return the JSON row of a supervised task (a ``TaskInfo``; its error is redacted)."""
    return {
        "name": task.name,
        "state": task.state.value,
        "ready": task.ready,
        "restarts": task.restarts,
        "started_at": task.started_at,
        "next_restart_at": task.next_restart_at,
        "last_error_type": task.last_error_type,
        "last_error_message": task.last_error_message,
    }


def config_warnings(
    report: ConfigReport, world_readable: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Return what the CLI warned about at start, as rows for ``/`` (endpoints redacted).

    Args:
        report: The report on the settings (unknown variables, each endpoint's source).
        world_readable: The ``*_FILE`` variables whose file every user may read.
    """
    rows: list[dict[str, Any]] = [
        {"kind": "unknown_variable", "subject": u.name, "text": u.explain(), "closest": u.closest}
        for u in report.unknown
    ]
    rows += (
        {
            "kind": "default_endpoint",
            "subject": where,
            "text": f"{endpoint} is the embedded local-development default",
            "closest": None,
        }
        for where, endpoint in report.defaults_in_use().items()
    )
    rows += (
        {
            "kind": "secret_file_world_readable",
            "subject": name,
            "text": "names a file every user of the machine may read",
            "closest": None,
        }
        for name in world_readable
    )
    return rows


def _since(seen: StatusSince | None) -> dict[str, Any]:
    """Return ``since`` and ``since_first_probe`` (the status may be older than the exporter)."""
    if seen is None:
        return {"since": None, "since_first_probe": False}
    return {"since": seen.since, "since_first_probe": seen.initial}


def _check(result: ProbeResult, since: StatusSince | None) -> dict[str, Any]:
    return {
        "name": result.check,
        "status": result.status.value,
        "reason": result.reason.value if result.reason else None,
        "latency_seconds": round(result.latency_seconds, 6),
        "detail": result.detail,
        "checked_at": result.checked_at,
        **_since(since),
    }


class StatusView:
    """Build the views of ``/``, ``/probes`` and ``/probes/{id}`` from the in-memory state."""

    def __init__(
        self,
        state: ExporterState,
        *,
        manifests: Callable[[], Sequence[Mapping[str, Any]]] = tuple,
        tasks: Callable[[], Iterable[Any]] = tuple,
        targets: Iterable[str] = (),
        refresh_seconds: float = 15.0,
        clock: Callable[[], float] = time.time,
        drills: DrillSource | None = None,
        warnings: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.state = state
        #: The configuration warnings of the start (:func:`config_warnings`); fixed for the run.
        self.warnings = [dict(w) for w in warnings]
        self.manifests = manifests
        self.tasks = tasks
        self.drills = drills
        self.targets = tuple(targets)
        self.refresh_seconds = refresh_seconds
        self.clock = clock

    def deployments(self) -> list[str]:
        """Return the configured deployments, then any others that reported, in that order."""
        names = [c.deployment for c in self.state.connectors]
        names += sorted(self.state.reports)
        names += self.state.history.deployments
        return list(dict.fromkeys(names))

    def links(self) -> list[dict[str, str]]:
        """Return the endpoint links, with one on-demand ``/probe`` per deployment."""
        probes = ((f"/probe?target={n}", f"probe {n} now") for n in self.targets)
        return [{"href": href, "text": text} for href, text in (*_LINKS, *probes)]

    def status(self) -> dict[str, Any]:
        """Return the view of ``/``: every deployment's connectors, checks and recent cycles."""
        state = self.state
        return {
            "exporter": {"version": __version__, "started_at": state.started_at},
            "generated_at": self.clock(),
            "ready": state.ready,
            "config_warnings": self.warnings,
            "refresh_seconds": self.refresh_seconds,
            "deployments": [self._deployment(name) for name in self.deployments()],
            "tasks": [task_view(task) for task in self.tasks()],
            "drills": drills_view(self.drills, limit=RECENT_DRILLS_ON_INDEX),
            "manifests": list(self.manifests()),
            "links": self.links(),
        }

    def _deployment(self, name: str) -> dict[str, Any]:
        report = self.state.reports.get(name)
        recent = self.state.history.recent(name, RECENT_ON_INDEX)
        groups = report.by_connector() if report is not None else {}
        infos = {c.connector: c for c in self.state.connectors if c.deployment == name}
        names = list(dict.fromkeys([*infos, *groups]))
        return {
            "name": name,
            "ok": None if report is None else report.ok,
            "last_cycle": recent[0].summary() if recent else None,
            "connectors": [
                self._connector(name, c, infos.get(c), groups.get(c, ()), report) for c in names
            ],
            "recent_cycles": [cycle.summary() for cycle in recent],
        }

    def _connector(
        self,
        deployment: str,
        name: str,
        info: ConnectorInfo | None,
        results: Sequence[ProbeResult],
        report: ConnectivityReport | None,
    ) -> dict[str, Any]:
        history = self.state.history
        # "since" is only meaningful once the connector was probed at all.
        seen = history.since(deployment, name) if results else None
        return {
            "name": name,
            "kind": info.kind if info is not None else name,
            "endpoint": info.endpoint if info is not None else None,
            "status": seen.status.value if seen is not None else "unknown",
            "up": report is not None and report.connector_up(name),
            "reason": seen.reason.value if seen is not None and seen.reason else None,
            "latency_seconds": round(max(r.latency_seconds for r in results), 6)
            if results
            else None,
            "checked_at": max(r.checked_at for r in results) if results else None,
            **_since(seen),
            "checks": [_check(r, history.since(deployment, name, r.check)) for r in results],
            "latency_history": [
                {"cycle": p.cycle, "latency_seconds": round(p.latency_seconds, 6), "up": p.up}
                for p in history.latencies(deployment, name)
            ],
        }

    def probes(self) -> dict[str, Any]:
        """Return the view of ``/probes``: every stored cycle per deployment, newest first."""
        history = self.state.history
        return {
            "generated_at": self.clock(),
            "refresh_seconds": self.refresh_seconds,
            "deployments": [
                {"name": name, "cycles": [c.summary() for c in history.cycles(name)]}
                for name in self.deployments()
            ],
        }

    def cycle(self, cycle_id: int, metrics: Callable[[ProbeCycle], str]) -> dict[str, Any] | None:
        """Return the view of ``/probes/{id}``, or ``None`` when the cycle is not stored (now).

        Args:
            cycle_id: The cycle's id.
            metrics: Renders the series the cycle produced (text exposition format).
        """
        cycle = self.state.history.get(cycle_id)
        if cycle is None:
            return None
        return {
            "generated_at": self.clock(),
            # Sample names as a scrape shows them, like /api/v1/connectivity.
            "cycle": cycle.as_dict(EXPOSED_NAMES),
            "metrics": metrics(cycle),
        }
