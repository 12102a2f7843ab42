"""The probe report: the table cuts details unless wide, JSON names match the scraped samples."""

from __future__ import annotations

from exporter.probes.base import ConnectivityReport, Measurement, ProbeResult, Status
from exporter.probes.report import DETAIL_WIDTH, render_table
from exporter.telemetry.metrics import EXPOSED_NAMES

_DETAIL = "replica, link to primary down for 120s: serving stale data since the last full sync"


def _report() -> ConnectivityReport:
    evicted = Measurement("ingest_redis_evicted_keys", 12.0)
    used = Measurement("ingest_redis_memory_used_bytes", 1024.0)
    result = ProbeResult(
        "redis", "memory", Status.DEGRADED, None, 0.001, _DETAIL, 0.0, (evicted, used)
    )
    return ConnectivityReport("eu", 0.0, 0.01, (result,))


def test_the_table_cuts_long_details_and_says_so() -> None:
    """A detail longer than the column ends in an ellipsis at the column's width."""
    table = render_table([_report()])
    row = table.splitlines()[1]
    assert _DETAIL not in row
    assert row.endswith("…")
    assert row.split("  ")[-1] == _DETAIL[: DETAIL_WIDTH - 1] + "…"


def test_the_wide_table_shows_every_detail_in_full() -> None:
    """``wide`` keeps the whole detail."""
    assert render_table([_report()], wide=True).splitlines()[1].endswith(_DETAIL)


def test_json_report_names_measurements_as_the_scrape_does() -> None:
    """A mirrored counter is named with ``_total``, a gauge as it is, in the JSON view."""
    checks = _report().as_dict(EXPOSED_NAMES)["connectors"]["redis"]["checks"]
    names = [m["name"] for m in checks[0]["measurements"]]
    assert names == ["ingest_redis_evicted_keys_total", "ingest_redis_memory_used_bytes"]
