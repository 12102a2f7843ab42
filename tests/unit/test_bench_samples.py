from __future__ import annotations

import math

import pytest

from bench.samples import (
    Latencies,
    count_series,
    label_value,
    percentile,
    sample_values,
    sum_samples,
)

EXPOSITION = """\
# HELP ingest_probe_cycles_total Probe cycles completed since start.
# TYPE ingest_probe_cycles_total counter
ingest_probe_cycles_total{deployment="d0000"} 12.0
ingest_probe_cycles_total{deployment="d0001"} 11.0
ingest_probe_failures_total{connector="redis",deployment="d0000",reason="timeout"} 3.0
ingest_probe_failures_total{connector="redis",deployment="d0000",reason="refused"} 5.0
ingest_exporter_build_info 1.0
process_cpu_seconds_total 0.52 1733330000000
"""


def test_percentile_is_nearest_rank() -> None:
    """The p50 and p99 are values that were observed, chosen by nearest rank."""
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_ignores_input_order() -> None:
    """Samples need not be sorted: the percentile sorts a copy and leaves the input alone."""
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 0) == 1.0
    assert samples == [5.0, 1.0, 4.0, 2.0, 3.0]


def test_percentile_refuses_nonsense() -> None:
    """No samples, or a percentile outside 0-100, is an error rather than a made-up figure."""
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_latencies_accumulate_rounds_and_errors() -> None:
    """Rounds add up their samples and errors; an empty collection reports NaN, not zero."""
    total = Latencies.empty()
    assert math.isnan(total.median)
    assert math.isnan(total.p(99))
    total.extend(Latencies([0.001, 0.003], errors=1))
    total.extend(Latencies([0.002], errors=2))
    assert total.count == 3
    assert total.errors == 3
    assert total.median == 0.002
    assert total.p(99) == 0.003


def test_count_series_counts_sample_lines_only() -> None:
    """Comments and blank lines are not series; labelled and bare samples are."""
    assert count_series(EXPOSITION) == 6
    assert count_series("") == 0


def test_sum_and_select_samples_by_labels() -> None:
    """Samples are summed over every series of a name, or over those matching given labels."""
    assert sum_samples(EXPOSITION, "ingest_probe_cycles_total") == 23.0
    assert sum_samples(EXPOSITION, "ingest_probe_failures_total", reason="timeout") == 3.0
    assert sum_samples(EXPOSITION, "ingest_missing_total") == 0.0
    assert sum_samples(EXPOSITION, "process_cpu_seconds_total") == 0.52
    assert list(sample_values(EXPOSITION, "ingest_probe_cycles_total", deployment="d0001")) == [
        'deployment="d0001"'
    ]


def test_label_value_respects_label_boundaries() -> None:
    """A label's name must match whole: "deployment" is not found inside "x_deployment"."""
    labels = 'x_deployment="no",deployment="yes"'
    assert label_value(labels, "deployment") == "yes"
    assert label_value('x_deployment="no"', "deployment") is None
    assert label_value("", "deployment") is None
