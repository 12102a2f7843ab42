"""Declarations of published metrics, and the one step that turns a declaration into a family.

A neutral leaf: probes, jobs and the telemetry all declare and build their families here
without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)

__all__ = ["REFRESHED", "MetricKind", "MetricSpec", "family", "spec"]

#: Appended to the HELP of values that come from the probe loop.
REFRESHED = "Refreshed by the probe loop; scrapes read the cached snapshot."

#: The family types a spec may declare.
MetricKind = Literal["gauge", "counter", "histogram", "info"]

_FAMILIES: dict[str, Callable[..., Any]] = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "histogram": HistogramMetricFamily,
    "info": InfoMetricFamily,
}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A published metric family: name (without ``_total``/``_info``), type, labels, help."""

    name: str
    type: MetricKind
    labels: tuple[str, ...]
    help: str

    @property
    def exposed_name(self) -> str:
        """Return the sample name as scraped (``_total`` for counters, ``_info`` for info)."""
        suffix = {"counter": "_total", "info": "_info"}.get(self.type, "")
        return self.name + suffix


def spec(name: str, kind: MetricKind, labels: str, text: str) -> MetricSpec:
    """Build a spec from a space-separated label list."""
    if kind not in get_args(MetricKind):  # a caller without type checking
        raise ValueError(f"unknown metric type {kind!r}")
    return MetricSpec(name, kind, tuple(labels.split()), text)


def family(declared: MetricSpec) -> Any:
    """Return an empty prometheus family of the spec's type, name, help and labels.

    Typed ``Any`` because what ``add_metric`` takes depends on the type: label values and a
    number (gauge, counter), label values and a dict of further labels (info, usually
    empty), label values, buckets and a sum (histogram).
    """
    kind = _FAMILIES[declared.type]
    return kind(declared.name, declared.help, labels=list(declared.labels))
