"""Render the status pages (``/``, ``/probes``, ``/probes/{id}``) as HTML from their views.

The views come from :mod:`exporter.telemetry.status_view`; everything shown was redacted
where it was recorded (check details by the probe runner, task errors by the supervisor, log
lines by the cycle capture, endpoints and the manifest by construction) and is escaped here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from exporter.telemetry._html import (
    badge,
    cell,
    duration,
    esc,
    moment,
    page,
    sparkline,
    table,
    when,
)
from exporter.telemetry.drill_pages import render_drills_section

__all__ = ["render_cycle", "render_probes", "render_status"]

View = Mapping[str, Any]

# A status seen at the exporter's first probe may be older than that probe.
_FIRST_PROBE = {True: ' <span class="age" title="or earlier">· first probe</span>', False: ""}
_TASK_KIND = {"running": "ok", "backoff": "degraded", "failed": "down", "pending": "unknown"}
# Shown in their own columns of a log line; the other keys are listed after the event.
_LOG_COLUMNS = ("timestamp", "level", "event")


def _result(ok: bool | None) -> str:
    if ok is None:
        return badge("unknown")
    return badge("ok") if ok else badge("failed")


def _status_cells(row: View, now: float) -> str:
    """Return the status, reason, latency and since cells of a connector or check row."""
    return (
        cell(badge(row["status"]))
        + cell(esc(row["reason"] or "-"), "reason", "reason")
        + cell(duration(row["latency_seconds"]), "num", "latency")
        + cell(when(row["since"], now) + _FIRST_PROBE[row["since_first_probe"]], "since", "since")
    )


def _connector_rows(deployment: str, connector: View, now: float) -> Iterable[str]:
    name = connector["name"]
    endpoint = connector.get("endpoint")
    where = f'<div class="endpoint">{esc(endpoint)}</div>' if endpoint else ""
    yield (
        f'<tr class="connector" data-deployment="{esc(deployment)}" '
        f'data-connector="{esc(name)}" data-status="{esc(connector["status"])}">'
        f"{cell(f'<strong>{esc(name)}</strong>{where}')}{_status_cells(connector, now)}"
        f"{cell(sparkline(connector['latency_history']))}</tr>"
    )
    for check in connector["checks"]:
        yield (
            f'<tr class="check" data-connector="{esc(name)}" data-check="{esc(check["name"])}" '
            f'data-status="{esc(check["status"])}">{cell(esc(check["name"]))}'
            f"{_status_cells(check, now)}{cell(esc(check['detail']), 'detail')}</tr>"
        )


def _cycles(cycles: Sequence[View], now: float, *, with_age: bool = False) -> str:
    if not cycles:
        return '<p class="age">No probe cycle finished yet.</p>'
    rows = (
        f'<tr class="cycle" data-cycle="{c["id"]}" data-result="{"ok" if c["ok"] else "failed"}">'
        + cell(f'<a href="/probes/{c["id"]}">#{c["id"]}</a>')
        + cell(when(c["started_at"], now) if with_age else moment(c["started_at"]))
        + cell(duration(c["duration_seconds"]), "num", "took")
        + cell(_result(c["ok"]))
        + cell(str(c["failed_checks"]), "num", "failed checks")
        + cell(f"<code>{esc(c['trace_id'] or '-')}</code>", "hide-narrow")
        + "</tr>"
        for c in cycles
    )
    head = ("Cycle", "Started (UTC)", "Duration", "Result", "Failed checks", "Trace id")
    return table(head, rows, "cycles")


def _deployment(deployment: View, now: float) -> str:
    name = deployment["name"]
    last = deployment["last_cycle"]
    if last is None:
        summary = "Waiting for the first probe cycle."
    else:
        summary = (
            f'Last cycle <a href="/probes/{last["id"]}">#{last["id"]}</a> started '
            f"{when(last['started_at'], now)}, took {duration(last['duration_seconds'])}."
        )
    rows = [row for c in deployment["connectors"] for row in _connector_rows(name, c, now)]
    head = ("Connector / check", "Status", "Reason", "Latency", "Since", "Recent latency · detail")
    return (
        f'<section class="deployment" id="deployment-{esc(name)}" data-deployment="{esc(name)}">'
        f"<h2>{esc(name)} {_result(deployment['ok'])}</h2>"
        f'<p class="meta">{summary}</p>{table(head, rows, "connectors")}'
        f"<h3>Recent probe cycles</h3>{_cycles(deployment['recent_cycles'], now)}"
        f'<p class="meta"><a href="/probes#deployment-{esc(name)}">every stored cycle</a></p>'
        "</section>"
    )


def _tasks(tasks: Sequence[View], now: float) -> str:
    if not tasks:
        return '<h2>Supervised tasks</h2><p class="age">No supervised task.</p>'
    rows = (
        f'<tr class="task" data-task="{esc(t["name"])}" data-state="{esc(t["state"])}">'
        + cell(esc(t["name"]))
        + cell(badge(t["state"], _TASK_KIND.get(t["state"], "unknown")))
        + cell("yes" if t["ready"] else "no", label="ready")
        + cell(str(t["restarts"]), "num", "restarts")
        + cell(when(t["started_at"], now), label="started")
        + cell(esc(_error(t)), "detail")
        + "</tr>"
        for t in tasks
    )
    head = ("Task", "State", "Ready", "Restarts", "Started", "Last error (redacted)")
    return "<h2>Supervised tasks</h2>" + table(head, rows, "tasks")


def _error(task: View) -> str:
    kind, message = task["last_error_type"], task["last_error_message"]
    if not kind:
        return "-"
    return f"{kind}: {message}" if message else str(kind)


def _config_warnings(warnings: Sequence[View]) -> str:
    """Return the start's configuration warnings (nothing when there were none)."""
    if not warnings:
        return ""
    items = "".join(
        f'<li class="config-warning" data-kind="{esc(w["kind"])}">{badge("warning", "degraded")} '
        f"<code>{esc(w['subject'])}</code>: {esc(w['text'])}</li>"
        for w in warnings
    )
    return f'<h2>Configuration warnings</h2><ul class="links">{items}</ul>'


def render_status(view: View, *, refresh: int) -> str:
    """Return the HTML of ``/`` from :meth:`StatusView.status` (``refresh=0``: paused)."""
    now = view["generated_at"]
    ready = (
        f"<p>Readiness: {badge('ready', 'ok')}</p>"
        if view["ready"]
        else f"<p>Readiness: {badge('not ready', 'down')} the first probe cycle of every "
        "deployment has not finished yet.</p>"
    )
    failing = [
        f"{d['name']}/{c['name']}"
        for d in view["deployments"]
        for c in d["connectors"]
        if c["status"] not in ("ok", "unknown")
    ]
    title = f"{', '.join(failing)} not ok" if failing else "status"
    manifest = json.dumps(view["manifests"], indent=2)
    links = "".join(
        f'<li><a href="{esc(link["href"])}">{esc(link["href"])}</a> {esc(link["text"])}</li>'
        for link in view["links"]
    )
    body = (
        ready
        + _config_warnings(view["config_warnings"])
        + "".join(_deployment(d, now) for d in view["deployments"])
        + _tasks(view["tasks"], now)
        + "<h2>Failover drills</h2>"
        + render_drills_section(view["drills"], now, more=True)
        + "<h2>Manifest</h2><details><summary>Connectors as configured (redacted)</summary>"
        f"<pre>{esc(manifest)}</pre></details>"
        f'<h2>Endpoints</h2><ul class="links">{links}</ul>'
    )
    return page(
        f"{title} · ingest-exporter",
        body,
        version=view["exporter"]["version"],
        generated_at=now,
        refresh=refresh,
        path="/",
    )


def render_probes(view: View, *, refresh: int, version: str) -> str:
    """Return the HTML of ``/probes`` from :meth:`StatusView.probes`."""
    now = view["generated_at"]
    body = "".join(
        f'<section class="deployment" id="deployment-{esc(d["name"])}" '
        f'data-deployment="{esc(d["name"])}"><h2>{esc(d["name"])}</h2>'
        f"{_cycles(d['cycles'], now, with_age=True)}</section>"
        for d in view["deployments"]
    )
    return page(
        "probe cycles · ingest-exporter",
        body or '<p class="age">No deployment configured.</p>',
        version=version,
        generated_at=now,
        refresh=refresh,
        path="/probes",
    )


def _log_rows(lines: Sequence[View]) -> Iterable[str]:
    for line in lines:
        rest = " ".join(
            f"{k}={v}" for k, v in line.items() if k not in _LOG_COLUMNS and v is not None
        )
        level = str(line.get("level", ""))
        # The date is in the page's header; the time of day is what tells lines apart.
        stamp = str(line.get("timestamp", "")).partition("T")[2].rstrip("Z") or "-"
        yield (
            f'<tr class="log-line" data-level="{esc(level)}">'
            + cell(f'<code class="nowrap">{esc(stamp)}</code>')
            + cell(esc(level))
            + cell(f"<strong>{esc(line.get('event', ''))}</strong>")
            + cell(esc(rest), "detail")
            + "</tr>"
        )


def render_cycle(view: View, *, version: str) -> str:
    """Return the HTML of ``/probes/{id}`` from :meth:`StatusView.cycle`."""
    now = view["generated_at"]
    cycle = view["cycle"]
    checks = (
        f'<tr class="result" data-connector="{esc(connector)}" data-check="{esc(c["check"])}" '
        f'data-status="{esc(c["status"])}">'
        + cell(f"{esc(connector)} · {esc(c['check'])}")
        + cell(badge(c["status"]))
        + cell(esc(c["reason"] or "-"), "reason", "reason")
        + cell(duration(c["latency_seconds"]), "num", "latency")
        + cell(esc(c["detail"]), "detail")
        + "</tr>"
        for connector, group in cycle["connectors"].items()
        for c in group["checks"]
    )
    lines = cycle["log_lines"]
    dropped = cycle["log_lines_dropped"]
    log = (
        table(("Time (UTC)", "Level", "Event", "Fields"), _log_rows(lines), "log")
        if lines
        else '<p class="age">This cycle logged nothing.</p>'
    )
    if dropped:
        log += f'<p class="meta">{dropped} more line(s) not kept (history.log_lines_per_cycle).</p>'
    trace = esc(cycle["trace_id"] or "not traced")
    body = (
        f'<section class="cycle-detail" data-cycle="{cycle["id"]}" '
        f'data-deployment="{esc(cycle["deployment"])}">'
        f"<h2>Probe cycle #{cycle['id']} · {esc(cycle['deployment'])} {_result(cycle['ok'])}</h2>"
        f"<dl><dt>Started</dt><dd>{when(cycle['started_at'], now)}</dd>"
        f"<dt>Duration</dt><dd>{duration(cycle['duration_seconds'])}</dd>"
        f'<dt>Trace id</dt><dd><code class="trace-id">{trace}</code></dd></dl>'
        "<h3>Check results</h3>"
        + table(("Check", "Status", "Reason", "Latency", "Detail"), checks, "checks")
        + f"<h3>Log lines</h3>{log}"
        f'<h3>Metrics this cycle produced</h3><pre class="metrics">{esc(view["metrics"])}</pre>'
        '<p class="meta"><a href="/probes">all probe cycles</a></p></section>'
    )
    return page(
        f"cycle #{cycle['id']} · ingest-exporter",
        body,
        version=version,
        generated_at=now,
        path=f"/probes/{cycle['id']}",
    )
