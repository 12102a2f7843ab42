"""Turn raw observations (latencies, exposition text) into the figures the bench reports."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Latencies",
    "count_series",
    "label_value",
    "percentile",
    "sample_values",
    "sum_samples",
]


def percentile(samples: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) of ``samples`` by the nearest-rank method."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0-100")
    ordered = sorted(samples)
    # Nearest rank: the p99 of 100 samples is the 99th smallest, never an interpolated value
    # that no request actually took.
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Latencies:
    """Request latencies (seconds) gathered over interleaved rounds, with the errors seen."""

    seconds: list[float]
    errors: int = 0

    @classmethod
    def empty(cls) -> Latencies:
        """Return an empty collection."""
        return cls([])

    def extend(self, other: Latencies) -> None:
        """Add another round's samples and errors."""
        self.seconds.extend(other.seconds)
        self.errors += other.errors

    @property
    def count(self) -> int:
        """Return the number of successful requests."""
        return len(self.seconds)

    def p(self, q: float) -> float:
        """Return the ``q``-th percentile in seconds (NaN when nothing succeeded)."""
        return percentile(self.seconds, q) if self.seconds else math.nan

    @property
    def median(self) -> float:
        """Return the median in seconds (NaN when nothing succeeded)."""
        return statistics.median(self.seconds) if self.seconds else math.nan


def _samples(text: str) -> Iterable[tuple[str, str, str]]:
    """Yield ``(name, labels, value)`` of every sample line of a text exposition."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            name, labels, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
        else:
            name, _, rest = line.partition(" ")
            labels = ""
        value = rest.split()
        if value:
            yield name, labels, value[0]


def count_series(text: str) -> int:
    """Return how many samples (series) a text exposition holds."""
    return sum(1 for _ in _samples(text))


def label_value(labels: str, key: str) -> str | None:
    """Return the value of label ``key`` in a ``k="v",...`` label string (no escapes needed)."""
    marker = f'{key}="'
    # A label named e.g. "deployment" must not match inside "x_deployment": check the boundary.
    start = 0
    while (found := labels.find(marker, start)) >= 0:
        if found == 0 or labels[found - 1] in ", ":
            begin = found + len(marker)
            return labels[begin : labels.find('"', begin)]
        start = found + 1
    return None


def sample_values(text: str, name: str, **labels: str) -> dict[str, float]:
    """Return ``{labels: value}`` of every sample of ``name`` whose labels include ``labels``."""
    found: dict[str, float] = {}
    for sample, raw, value in _samples(text):
        if sample != name:
            continue
        if all(label_value(raw, k) == v for k, v in labels.items()):
            found[raw] = float(value)
    return found


def sum_samples(text: str, name: str, **labels: str) -> float:
    """Return the sum of every sample of ``name`` whose labels include ``labels``."""
    return math.fsum(sample_values(text, name, **labels).values())
