"""End to end: the daemon, Prometheus with the shipped rules, Alertmanager and a webhook.

A steady healthy run in which only the Watchdog fires and every dashboard query returns series;
then a Redis outage that must page ``IngestConnectorDown`` within ``for:`` + two scrape
intervals + the probe interval + 5 s, and resolve once Redis is back. The measured times are
printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.prometheus.rules import alerts
from tests.waiting import wait_for

from .e2e_stack import (
    JOB,
    PROBE_INTERVAL,
    RULES,
    SCRAPE_INTERVAL,
    Stack,
    ingest_stack,
    produce,
    run_drill,
)
from .prometheus_instance import PrometheusInstance

REPO = Path(__file__).resolve().parents[2]
#: The steady run lasts this long (the issue asks for at least two minutes).
STEADY_SECONDS = float(os.environ.get("INGEST_E2E_STEADY_SECONDS", "120"))
#: Grafana's $__rate_interval for a 1 s scrape interval: four scrape intervals.
RATE_INTERVAL = f"{4 * SCRAPE_INTERVAL:g}s"
_BOUND = {a.name: a for a in alerts(RULES)}
#: Panels whose series appear with the first failure; the outage phase checks them. (Failure
#: counters start at 0, so "Failures by reason" has series from the first scrape.)
FAULT_ONLY = frozenset({"overview: Failing checks and reasons A"})
#: The drill panels fill after a drill: the test runs a `fallback` drill after the steady run.
DRILL_PANELS = "drills: "
#: What a `fallback` drill does not measure (it injects no fault): no phase times, no loss.
NOT_IN_FALLBACK = frozenset(
    {
        "drills: Detection, promotion and RTO A",
        "drills: Detection, promotion and RTO B",
        "drills: Detection, promotion and RTO C",
        "drills: Data lost (RPO) B",
    }
)


def _all(expr: str) -> str:
    """Return a dashboard expression as Grafana sends it with every variable at "All"."""
    expr = re.sub(r"\$(job|instance|deployment)\b", ".+", expr)
    return expr.replace("$__rate_interval", RATE_INTERVAL)


def _dashboard_queries() -> list[tuple[str, str]]:
    """Return ``(where, expr)`` for every panel and variable query, variables set to "All"."""
    found = []
    for path in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for variable in board["templating"]["list"]:
            # label_values(selector, label) lists the label's values: count them instead.
            if match := re.fullmatch(r"label_values\((.+), (\w+)\)", variable.get("query", "")):
                expr = f"count by ({match[2]}) ({_all(match[1])})"
                found.append((f"{path.stem}: variable {variable['name']}", expr))
        panels = [*board["panels"], *(p for r in board["panels"] for p in r.get("panels", []))]
        found.extend(
            (f"{path.stem}: {panel['title']} {target['refId']}", _all(target["expr"]))
            for panel in panels
            for target in panel.get("targets", [])
        )
    return found


async def _empty(prometheus: PrometheusInstance, queries: list[tuple[str, str]]) -> list[str]:
    """Return the queries (by place) that return no series right now."""
    return [where for where, expr in queries if not await prometheus.query(expr)]


async def _active_alerts(prometheus: PrometheusInstance) -> set[str]:
    """Return the names of the alerts Prometheus holds as firing."""
    series = await prometheus.query('ALERTS{alertstate="firing"}')
    return {s["metric"]["alertname"] for s in series}


async def _steady(stack: Stack, seconds: float) -> set[str]:
    """Watch a healthy run for ``seconds``; return every alert seen firing."""
    seen: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        seen |= await _active_alerts(stack.prometheus)
        # Sampling a period, not waiting for a condition: every 2 s catches a 5 s `for:`.
        await asyncio.sleep(2)
    return seen | stack.receiver.names("firing")


async def _shows(prometheus: PrometheusInstance, expr: str, **labels: str) -> None:
    """Wait until ``expr`` has a positive series with ``labels``."""
    wanted = labels

    def match(series: list[dict[str, Any]]) -> bool:
        return any(wanted.items() <= s["metric"].items() for s in series)

    async def positive() -> list[dict[str, Any]]:
        return await prometheus.query(f"({expr}) > 0")

    await prometheus.wait_until(positive, match, timeout=30, what=f"{expr} showing {wanted}")


async def _wait_notification(stack: Stack, status: str, timeout: float, **labels: str) -> float:
    """Wait for a webhook notification; return its arrival time (monotonic)."""
    found = await wait_for(lambda: stack.receiver.first(status, **labels), timeout=timeout)
    assert found is not None  # wait_for returns only a truthy value
    return found.received


@pytest.mark.timeout(STEADY_SECONDS + 300)
async def test_redis_outage_pages_and_resolves_and_a_healthy_run_pages_nobody(
    tmp_path: Path,
    service_env: dict[str, str],
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the Watchdog fires while healthy; a Redis outage pages in bound, then resolves."""
    queries = _dashboard_queries()
    async with ingest_stack(tmp_path, service_env, unique) as stack:
        prom = stack.prometheus
        healthy = [
            (where, expr)
            for where, expr in queries
            if where not in FAULT_ONLY
            and (not where.startswith(DRILL_PANELS) or "Objectives" in where)
        ]
        await prom.wait_until(
            lambda: _empty(prom, healthy),
            lambda empty: not empty,
            timeout=60,
            what="every dashboard query but the fault-only ones returning series",
        )
        await _wait_notification(stack, "firing", 30, alertname="Watchdog")

        fired = await _steady(stack, STEADY_SECONDS)
        assert fired == {"Watchdog"}, f"a healthy run paged: {sorted(fired)}"

        # A fallback drill (reads the replica, injects nothing) fills the drill panels.
        code, output = await run_drill(stack.config, "fallback")
        assert code in (0, 1), output  # 1: a warn verdict is still a recorded drill
        drilled = [
            (where, expr)
            for where, expr in queries
            if where.startswith(DRILL_PANELS) and where not in NOT_IN_FALLBACK
        ]
        await prom.wait_until(
            lambda: _empty(prom, drilled),
            lambda empty: not empty,
            timeout=30,
            what="the drill panels a fallback drill fills",
        )

        # The outage: stop the deployment's private Redis.
        await stack.redis.stop(stack.redis_port)
        stopped = time.monotonic()
        rule = _BOUND["IngestConnectorDown"]
        bound = RULES.scaled(rule.for_seconds) + 2 * SCRAPE_INTERVAL + PROBE_INTERVAL + 5
        subject = {"alertname": "IngestConnectorDown", "deployment": "e2e", "connector": "redis"}
        arrived = await _wait_notification(stack, "firing", bound, **subject)
        paged = stack.receiver.first("firing", **subject)
        assert paged is not None
        assert paged.receiver == "ingest-pager"
        assert paged.labels == {
            **subject,
            "job": JOB,
            "instance": paged.labels["instance"],
            "severity": "critical",
        }
        assert paged.labels["instance"].startswith("127.0.0.1:")
        assert paged.annotations["runbook_url"] == "docs/runbooks.md#ingestconnectordown"
        assert paged.annotations["summary"] == rule.summary
        assert "Connector redis of deployment e2e" in paged.annotations["description"]
        # The failure panels show this outage's causes.
        by_place = dict(queries)
        failures = by_place["overview: Failures by reason A"]
        await _shows(prom, failures, deployment="e2e", reason="refused")
        failing = by_place["overview: Failing checks and reasons A"]
        await _shows(prom, failing, deployment="e2e", connector="redis", reason="refused")
        # A malformed record for the bridge (a rate over 4 s shows it only briefly, so now).
        # Each deployment's bridge has its own group: both decode it and fail.
        await produce(stack.bootstrap, stack.topic, b"not json")
        await _shows(prom, by_place["kafka: Bridge failures A"], reason="decode")

        # The check behind it, down with its reason, once the check alert's `for:` has passed.
        check_rule = _BOUND["IngestCheckDown"]
        check_bound = (
            RULES.scaled(check_rule.for_seconds) + 2 * SCRAPE_INTERVAL + PROBE_INTERVAL + 5
        )
        check = {**subject, "alertname": "IngestCheckDown", "check": "ping", "reason": "refused"}
        await _wait_notification(stack, "firing", check_bound, **check)
        ticket = stack.receiver.first("firing", **check)
        assert ticket is not None
        assert ticket.receiver == "ingest-tickets"
        assert ticket.annotations["description"] == (
            "Check ping of redis in deployment e2e is down (reason refused)."
        )

        # Recovery: the same port again; the alert resolves.
        await stack.redis.start(port=stack.redis_port)
        restarted = time.monotonic()
        keep = RULES.scaled(rule.keep_firing_seconds)
        resolved = await _wait_notification(
            stack, "resolved", keep + 2 * SCRAPE_INTERVAL + PROBE_INTERVAL + 10, **subject
        )
        # Shown even without -s: the issue asks `make test` to print these times.
        with capsys.disabled():
            print(
                f"\nalerts end to end: steady run {STEADY_SECONDS:.0f}s paged only the Watchdog; "
                f"outage-to-webhook {arrived - stopped:.1f}s (bound {bound:.0f}s); "
                f"recovery-to-resolved {resolved - restarted:.1f}s (keep_firing_for {keep:.0f}s)"
            )


def test_the_dashboards_have_queries_to_run() -> None:
    """The end-to-end test runs every dashboard query (more than 40 of them)."""
    assert len(_dashboard_queries()) >= 40
