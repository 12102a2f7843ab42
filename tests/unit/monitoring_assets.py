"""Shared readers for the dashboard and rule tests: the committed JSON and YAML, and PromQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.telemetry.catalog import all_specs

__all__ = [
    "DASHBOARD_DIR",
    "REPO",
    "RULES_DIR",
    "Selector",
    "dashboards",
    "declared_names",
    "metric_names",
    "panels",
    "selectors",
    "shipped_rules",
]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
RULES_DIR = REPO / "deploy" / "prometheus"

#: Series Prometheus itself adds to every target (not declared by the daemon).
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_KEYWORDS = frozenset(
    {
        "by",
        "on",
        "and",
        "or",
        "unless",
        "bool",
        "without",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
    }
)
_NAME = re.compile(r"(?<![$\w:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel of ``dashboard`` that is not a row (rows nested included)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboards() -> dict[str, dict[str, Any]]:
    """Return each committed dashboard's JSON by file name."""
    return {p.stem: json.loads(p.read_text("utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def _blank(match: re.Match[str]) -> str:
    """Return the match with everything but its first and last character as spaces."""
    text = match.group()
    return text[0] + " " * (len(text) - 2) + text[-1]


def _mask(expr: str) -> str:
    """Blank strings, matcher blocks, ranges and label lists, keeping every position."""
    masked = re.sub(r'"[^"]*"', _blank, expr)
    masked = re.sub(r"\{[^}]*\}", _blank, masked)
    masked = re.sub(r"\[[^\]]*\]", _blank, masked)
    return re.sub(
        r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)",
        lambda m: " " * len(m.group()),
        masked,
    )


@dataclass(frozen=True)
class Selector:
    """One vector selector of an expression, with its surroundings."""

    name: str
    matchers: str
    before: str
    after: str


def selectors(expr: str) -> list[Selector]:
    """Return every vector selector of a PromQL expression (functions and keywords skipped)."""
    masked = _mask(expr)
    found = []
    for match in _NAME.finditer(masked):
        name, end = match.group(), match.end()
        rest = masked[end:].lstrip()
        if name in _KEYWORDS or rest.startswith("("):
            continue
        matchers = ""
        if rest.startswith("{"):
            start = masked.index("{", end)
            end = masked.index("}", start) + 1
            matchers = expr[start:end]
        found.append(Selector(name, matchers, expr[: match.start()], expr[end:]))
    return found


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression reads."""
    return {s.name for s in selectors(expr)}


def shipped_rules(name: str) -> list[dict[str, Any]]:
    """Return the rules of ``deploy/prometheus/<name>``."""
    document = yaml.safe_load((RULES_DIR / name).read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def declared_names() -> set[str]:
    """Return every series name the daemon can expose (histogram parts included)."""
    names = set(PROMETHEUS_SERIES)
    for spec in all_specs():
        names.add(spec.exposed_name)
        if spec.type == "histogram":
            names.update(spec.exposed_name + s for s in ("_bucket", "_count", "_sum"))
    names.update(rule["record"] for rule in shipped_rules("rules.yml"))
    return names
