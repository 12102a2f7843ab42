"""The dashboards: Overview, Exporter and drills here, the per-service ones in ``service_boards``."""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from grafana.panels import board, series_panel, stat_panel
from grafana.service_boards import kafka, redis, timescale

__all__ = ["DASHBOARDS"]

_RATE = "[$__rate_interval]"


def overview() -> Dashboard:
    """Return the Overview: is every dependency of every deployment answering, and why not."""
    return (
        board("ingest-overview", "Ingest / Overview", "Deployments x connectors, at a glance.")
        .with_row(Row("Health"))
        .with_panel(
            stat_panel(
                "Connectors up",
                "Is every dependency of every deployment answering? "
                "1 when no check of the connector was down in the last probe cycle.",
                "bool_yes_no",
                [
                    (
                        "min by (deployment, connector) (ingest_connector_up{sel})",
                        "{{deployment}} {{connector}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            stat_panel(
                "Checks not ok",
                "How many checks of each connector are not ok right now? "
                "Checks per connector whose last status was degraded, down or unknown (every "
                "check is reported in every cycle, so 0 means all ok).",
                "short",
                [
                    (
                        'sum by (deployment, connector) (ingest_check_status{sel, status!="ok"})',
                        "{{deployment}} {{connector}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            stat_panel(
                "Failing checks and reasons",
                "Which checks are failing now, and why? "
                "Each check that has a failure reason now; the legend names the check and the "
                "reason (empty while all is well).",
                "none",
                [
                    (
                        'max by (deployment, connector, check, reason) (ingest_check_reason{sel, reason!="none"})',
                        "{{deployment}} {{connector}}/{{check}}: {{reason}}",
                    )
                ],
                width=24,
            )
        )
        .with_panel(
            series_panel(
                "Failures by reason",
                "Why do probes fail: timeouts, refusals, auth? "
                "Checks reporting a failure per second, by bounded reason (timeout, refused, ...).",
                "ops",
                [
                    (
                        f"sum by (deployment, reason) (rate(ingest_probe_failures_total{{sel}}{_RATE}))",
                        "{{deployment}} {{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Probe latency p95",
                "How slow are the dependencies to answer? "
                "95th percentile of each connector's slowest check per cycle.",
                "s",
                [
                    (
                        f"histogram_quantile(0.95, sum by (deployment, connector, le) (rate(ingest_probe_duration_seconds_bucket{{sel}}{_RATE})))",
                        "{{deployment}} {{connector}}",
                    )
                ],
            )
        )
        .with_panel(
            stat_panel(
                "Ready",
                "Has each deployment finished its first probe cycle? "
                "1 once the deployment finished a probe cycle (what /-/ready waits for).",
                "bool_yes_no",
                [
                    (
                        "min by (deployment) (ingest_probe_last_run_timestamp_seconds{sel} > bool 0)",
                        "{{deployment}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            series_panel(
                "Time since last probe",
                "Is the probe loop still running? "
                "Seconds since each connector was last probed; more than three intervals pages.",
                "s",
                [
                    (
                        "time() - max by (deployment, connector) (ingest_probe_last_run_timestamp_seconds{sel})",
                        "{{deployment}} {{connector}}",
                    )
                ],
            )
        )
    )


def exporter() -> Dashboard:
    """Return the Exporter dashboard: its own jobs, probe loop and scrapes."""
    return (
        board("ingest-exporter", "Ingest / Exporter", "The exporter process itself.")
        .with_panel(
            series_panel(
                "Supervised tasks up",
                "Are the exporter's background jobs running? "
                "1 while the background task runs; 0 in backoff, failed or ended.",
                "short",
                [("ingest_supervisor_task_up{isel}", "{{instance}} {{task}}")],
            )
        )
        .with_panel(
            series_panel(
                "Task restarts",
                "Is a background job crash-looping? "
                "Restarts of each supervised task in the interval.",
                "short",
                [
                    (
                        f"increase(ingest_supervisor_task_restarts_total{{isel}}{_RATE})",
                        "{{instance}} {{task}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Probe cycles",
                "Is the probe loop keeping pace? "
                "Probe cycles completed per second and the wall time of the last cycle.",
                "s",
                [
                    ("ingest_probe_cycle_duration_seconds{sel}", "{{deployment}} cycle time"),
                    (f"rate(ingest_probe_cycles_total{{sel}}{_RATE})", "{{deployment}} cycles/s"),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Scrape",
                "Is scraping the exporter cheap and quick? "
                "How long Prometheus' scrape of the exporter took and how many samples it returned.",
                "s",
                [
                    ("scrape_duration_seconds{isel}", "{{instance}} duration"),
                    ("scrape_samples_scraped{isel}", "{{instance}} samples"),
                ],
            )
        )
        .with_panel(
            stat_panel(
                "Version",
                "Which exporter version runs where? "
                "The exporter version of each instance (in the legend).",
                "none",
                [("ingest_exporter_build_info{isel}", "{{instance}} {{version}}")],
                width=12,
            )
        )
    )


def drills() -> Dashboard:
    """Return the Failover drills dashboard: the last drill's verdict and numbers per scenario."""
    legend = "{{deployment}} {{label}} {{scenario}}"
    return (
        board("ingest-drills", "Ingest / Failover drills", "The last failover drill, measured.")
        .with_panel(
            stat_panel(
                "Last drill passed",
                "Did the last failover drill pass? "
                "1 when the last drill of each deployment, label and scenario ended ok.",
                "bool_yes_no",
                [("ingest_failover_drill_success{sel}", legend)],
                width=12,
            )
        )
        .with_panel(
            stat_panel(
                "Time since the last drill",
                "Is a failover drill overdue? "
                "How long ago the last drill started; more than eight days pages.",
                "s",
                [("time() - ingest_failover_drill_last_run_timestamp_seconds{sel}", legend)],
                width=12,
            )
        )
        .with_panel(
            series_panel(
                "Detection, promotion and RTO",
                "How long did the last drill take to detect, promote and recover? "
                "The last drill's phases: fault to detection, detection to promotion, fault to "
                "the first acknowledged write.",
                "s",
                [
                    ("ingest_failover_drill_detection_seconds{sel}", f"{legend} detection"),
                    ("ingest_failover_drill_promotion_seconds{sel}", f"{legend} promotion"),
                    ("ingest_failover_drill_rto_seconds{sel}", f"{legend} RTO"),
                    ("ingest_failover_drill_duration_seconds{sel}", f"{legend} whole drill"),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Objectives",
                "What are the drills judged against? "
                "The configured drill objectives the measurements are judged against.",
                "s",
                [
                    (
                        "ingest_failover_drill_objective_seconds{sel}",
                        "{{deployment}} {{scenario}} {{objective}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Data lost (RPO)",
                "Did the last drill lose data? "
                "WAL bytes past the new timeline's branch point, and acknowledged writes missing.",
                "bytes",
                [
                    ("ingest_failover_drill_rpo_bytes{sel}", f"{legend} bytes"),
                    ("ingest_failover_drill_lost_writes{sel}", f"{legend} writes"),
                ],
            )
        )
    )


#: File name (without .json) -> builder, in the order the README lists them.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "overview": overview,
    "timescale": timescale,
    "redis": redis,
    "kafka": kafka,
    "exporter": exporter,
    "drills": drills,
}
