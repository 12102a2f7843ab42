"""Declarations of published metrics, kept apart so any module can declare its own."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REFRESHED", "MetricSpec", "spec"]

#: Appended to the HELP of values that come from the probe loop.
REFRESHED = "Refreshed by the probe loop; scrapes read the cached snapshot."


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A published metric family: name (without ``_total``/``_info``), type, labels, help."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str

    @property
    def exposed_name(self) -> str:
        """Return the sample name as scraped (``_total`` for counters, ``_info`` for info)."""
        suffix = {"counter": "_total", "info": "_info"}.get(self.type, "")
        return self.name + suffix


def spec(name: str, kind: str, labels: str, text: str) -> MetricSpec:
    """Build a spec from a space-separated label list."""
    if kind not in ("gauge", "counter", "histogram", "info"):
        raise ValueError(f"unknown metric type {kind!r}")
    return MetricSpec(name, kind, tuple(labels.split()), text)
