"""The shipped Prometheus rules follow the monitoring-mixin conventions and read real metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from deploy.prometheus.generate import render_alerts, render_rules
from deploy.prometheus.rules import RuleParams, alerts, recordings

from .monitoring_assets import REPO, RULES_DIR, declared_names, selectors, shipped_rules

ALERTS = shipped_rules("alerts.yml")
RECORDINGS = shipped_rules("rules.yml")
RUNBOOKS = REPO / "docs" / "runbooks.md"
SHIPPED_SELECTOR = 'job="ingest-exporter"'
#: Alerts whose own expression needs several samples (a window), so `for:` may be 0.
WINDOWED = ("changes(", "increase(", "rate(")


def _slug(heading: str) -> str:
    """Return the anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def _sections(path: Path) -> dict[str, str]:
    """Return each level-2 section of a Markdown file by its anchor."""
    parts = re.split(r"^## (.+)$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {_slug(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def _seconds(duration: str) -> int:
    """Return a Prometheus duration such as ``90s`` or ``5m`` in seconds."""
    number, unit = int(duration[:-1]), duration[-1]
    return number * {"s": 1, "m": 60, "h": 3600}[unit]


def test_committed_rule_files_are_the_generators_output() -> None:
    """alerts.yml and rules.yml equal what `make dashboards` writes with the defaults."""
    params = RuleParams()
    assert (RULES_DIR / "alerts.yml").read_text(encoding="utf-8") == render_alerts(params)
    assert (RULES_DIR / "rules.yml").read_text(encoding="utf-8") == render_rules(params)


@pytest.mark.parametrize("rule", ALERTS, ids=lambda r: r["alert"])
def test_alert_names_labels_and_annotations_follow_the_mixin_conventions(
    rule: dict[str, Any],
) -> None:
    """CamelCase `Ingest` name, a known severity, a static summary and a templated description."""
    name = str(rule["alert"])
    assert re.fullmatch(r"(Ingest[A-Z][A-Za-z]+|Watchdog)", name)
    assert rule["labels"] == {"severity": rule["labels"]["severity"]}
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    summary = annotations["summary"]
    assert summary.endswith(".")
    assert "{{" not in summary
    assert "{{" in annotations["description"]


@pytest.mark.parametrize("rule", ALERTS, ids=lambda r: r["alert"])
def test_one_missed_scrape_pages_nobody(rule: dict[str, str]) -> None:
    """An instant-vector alert waits a minute or more; windowed ones and the Watchdog need not."""
    if rule["alert"] == "Watchdog":
        return
    if any(function in rule["expr"] for function in WINDOWED):
        return
    assert _seconds(rule["for"]) >= 60, rule["alert"]


def test_every_expression_uses_the_configured_selector() -> None:
    """Rendered with another selector, every series of every rule carries it and no other job."""
    custom = RuleParams(selector='job="custom", env="prod"')
    expressions = [a.expr for a in alerts(custom) if a.name != "Watchdog"]
    expressions += [r.expr for r in recordings(custom)]
    for expr in expressions:
        found = selectors(expr)
        assert found, expr
        for s in found:
            assert s.matchers.startswith('{job="custom", env="prod"'), (expr, s.name)
        assert "ingest-exporter" not in expr


def test_aggregations_keep_job_and_instance() -> None:
    """Every `by (...)` of a rule keeps job and instance (and deployment where it exists)."""
    for rule in [*ALERTS, *RECORDINGS]:
        for labels in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
            kept = {label.strip() for label in labels.split(",")}
            assert {"job", "instance"} <= kept, rule


def test_recording_rule_names_follow_level_metric_operations() -> None:
    """Recording rules are named ``level:metric:operations`` with the labels they keep."""
    for rule in RECORDINGS:
        level, metric, operations = rule["record"].split(":")
        assert level.startswith("job_instance_deployment")
        assert metric.startswith("ingest_")
        assert operations


def test_every_metric_a_rule_reads_is_declared_by_the_daemon() -> None:
    """No rule reads a name the daemon's metrics catalog does not declare."""
    declared = declared_names()
    for rule in [*ALERTS, *RECORDINGS]:
        for s in selectors(rule["expr"]):
            assert s.name in declared, (rule.get("alert") or rule.get("record"), s.name)


def test_every_runbook_url_points_at_a_complete_runbook_section() -> None:
    """Each alert's runbook_url anchor exists, with Meaning, Impact, Diagnosis and Mitigation."""
    sections = _sections(RUNBOOKS)
    for rule in ALERTS:
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md"
        assert anchor in sections, url
        body = sections[anchor]
        for part in ("Meaning", "Impact", "Diagnosis", "Mitigation"):
            assert f"### {part}" in body, (anchor, part)
        if rule["alert"] != "Watchdog":
            assert "```promql" in body, anchor
            assert "ingest-exporter probe" in body or "/api/v1/connectivity" in body, anchor
