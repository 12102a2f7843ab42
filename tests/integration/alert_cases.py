"""``promtool test rules`` cases for the shipped alerts: a firing, a quiet and a gap case each.

Series are written for the shipped selector (``job="ingest-exporter"``) and a 15 s scrape
interval. Labels and descriptions of firing alerts are spelled out literally; the summary and
runbook_url are static per alert and taken from the rule file.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CASES", "Case"]

_I = 'job="ingest-exporter", instance="exp:9817"'
_D = _I + ', deployment="prod"'
_INSTANCE = {"job": "ingest-exporter", "instance": "exp:9817"}
_DEPLOYMENT = {**_INSTANCE, "deployment": "prod"}


@dataclass(frozen=True)
class Case:
    """One evaluation of one alert: input series, a time, and the alerts expected then."""

    alert: str
    kind: str  # "fires", "quiet" or "gap"
    series: dict[str, str]
    eval_time: str
    #: Labels of the expected alert (without alertname); None when nothing may fire.
    labels: dict[str, str] | None = None
    description: str = ""


def _three(
    alert: str,
    metric: str,
    *,
    fires: str,
    quiet: str,
    gap: str,
    gap_fires: bool,
    at: str,
    labels: dict[str, str],
    description: str,
    also: dict[str, str] | None = None,
) -> list[Case]:
    """Return the firing, quiet and gap cases of an alert on one input series."""
    other = also or {}
    gap_labels = labels if gap_fires else None
    return [
        Case(alert, "fires", {metric: fires, **other}, at, labels, description),
        Case(alert, "quiet", {metric: quiet, **other}, at),
        Case(alert, "gap", {metric: gap, **other}, at, gap_labels, description),
    ]


_KAFKA = _D + ', connector="kafka"'
_TOPICS = _KAFKA + ', check="topics"'
_CHECK_LABELS = {**_DEPLOYMENT, "connector": "kafka", "check": "topics", "severity": "warning"}


def _check_cases() -> list[Case]:
    """Return the cases of the per-check alerts (the status state set joined to the reason)."""
    down = f'ingest_check_status{{{_TOPICS}, status="down"}}'
    degraded = f'ingest_check_status{{{_TOPICS}, status="degraded"}}'
    reason = f'ingest_check_reason{{{_TOPICS}, reason="missing"}}'
    connector = f"ingest_connector_up{{{_KAFKA}}}"
    down_labels = {**_CHECK_LABELS, "reason": "missing"}
    not_ok_labels = {**down_labels, "status": "degraded"}
    return [
        *_three(
            "IngestCheckDown",
            down,
            fires="1x40",
            quiet="0x40",
            # Two missed scrapes neither resolve the alert nor restart its `for:`.
            gap="1x10 _ _ 1x27",
            gap_fires=True,
            at="6m",
            labels=down_labels,
            description="Check topics of kafka in deployment prod is down (reason missing).",
            also={reason: "1x40"},
        ),
        Case(
            "IngestCheckNotOk",
            "fires",
            {degraded: "1x70", reason: "1x70", connector: "1x70"},
            "16m",
            not_ok_labels,
            "Check topics of kafka in deployment prod is degraded (reason missing).",
        ),
        # Checks left unknown by their connector's outage page as IngestConnectorDown only.
        Case(
            "IngestCheckNotOk",
            "quiet",
            {
                f'ingest_check_status{{{_TOPICS}, status="unknown"}}': "1x70",
                f'ingest_check_reason{{{_TOPICS}, reason="refused"}}': "1x70",
                connector: "0x70",
            },
            "16m",
        ),
        # A check back to ok for one cycle restarts the 15 minutes.
        Case(
            "IngestCheckNotOk",
            "gap",
            {degraded: "1x30 0 1x39", reason: "1x70", connector: "1x70"},
            "16m",
        ),
    ]


_DRILL = _D + ', label="q4-dr", scenario="kill"'
_DRILL_LABELS = {**_DEPLOYMENT, "label": "q4-dr", "scenario": "kill", "severity": "warning"}
_SUBJECT = "drill q4-dr (kill) of deployment prod"


def _drill_cases() -> list[Case]:
    """Return the cases of the failover-drill alerts (gauges of the last drill)."""
    rto_objective = {
        f'ingest_failover_drill_objective_seconds{{{_DRILL}, objective="rto"}}': "120x20"
    }
    detection_objective = {
        f'ingest_failover_drill_objective_seconds{{{_DRILL}, objective="detection"}}': "30x20"
    }
    return [
        # A drill that passed after failing clears the alert; a missing scrape keeps the verdict.
        *_three(
            "IngestFailoverDrillFailed",
            f"ingest_failover_drill_success{{{_DRILL}}}",
            fires="0x20",
            quiet="1x20",
            gap="0 0 _ 0x17",
            gap_fires=True,
            at="2m",
            labels=_DRILL_LABELS,
            description=f"The last {_SUBJECT} ended warn, fail or aborted.",
        ),
        *_three(
            "IngestFailoverDrillOverdue",
            f"ingest_failover_drill_last_run_timestamp_seconds{{{_DRILL}}}",
            fires="-700000x60",
            quiet="0x60",
            gap="-700000x10 _x5 -700000x45",
            gap_fires=True,
            at="11m",
            labels=_DRILL_LABELS,
            description=f"The last {_SUBJECT} started 8d 2h 37m 40s ago.",
        ),
        *_three(
            "IngestFailoverDrillRtoOverObjective",
            f"ingest_failover_drill_rto_seconds{{{_DRILL}}}",
            fires="150x20",
            quiet="90x20",
            gap="150x5 stale",
            gap_fires=False,
            at="2m",
            labels=_DRILL_LABELS,
            description=f"The last {_SUBJECT} restored writes after 2m 30s.",
            also=rto_objective,
        ),
        *_three(
            "IngestFailoverDrillDetectionOverObjective",
            f"ingest_failover_drill_detection_seconds{{{_DRILL}}}",
            fires="45x20",
            quiet="10x20",
            gap="45x5 stale",
            gap_fires=False,
            at="2m",
            labels=_DRILL_LABELS,
            description=f"The last {_SUBJECT} detected the fault after 45s.",
            also=detection_objective,
        ),
        *_three(
            "IngestFailoverDrillLostWrites",
            f"ingest_failover_drill_lost_writes{{{_DRILL}}}",
            fires="3x20",
            quiet="0x20",
            gap="3 3 _ 3x17",
            gap_fires=True,
            at="2m",
            labels=_DRILL_LABELS,
            description=f"The last {_SUBJECT} lost 3 acknowledged writes.",
        ),
    ]


CASES: list[Case] = [
    # One failed scrape among good ones pages nobody.
    *_three(
        "IngestExporterDown",
        f"up{{{_I}}}",
        fires="0x20",
        quiet="1x20",
        gap="1x5 0 _ 1x13",
        gap_fires=False,
        at="4m",
        labels={**_INSTANCE, "severity": "critical"},
        description="exp:9817 of job ingest-exporter has failed every scrape for several "
        "minutes; nothing it monitors is visible.",
    ),
    Case(
        "IngestExporterAbsent",
        "fires",
        {'up{job="other", instance="x:1"}': "1x30"},
        "6m",
        {"job": "ingest-exporter", "severity": "critical"},
        "Prometheus has no `up` series for ingest-exporter: the scrape configuration or "
        "service discovery lost the exporter.",
    ),
    Case("IngestExporterAbsent", "quiet", {f"up{{{_I}}}": "1x30"}, "6m"),
    # Missing samples shorter than the lookback do not make the target absent.
    Case("IngestExporterAbsent", "gap", {f"up{{{_I}}}": "1 1 _x4 1x24"}, "6m"),
    # A gap inside an outage does not restart `for:` (the last sample is still 0).
    *_three(
        "IngestConnectorDown",
        f'ingest_connector_up{{{_D}, connector="redis"}}',
        fires="0x20",
        quiet="1x20",
        gap="0 0 _ _ 0x16",
        gap_fires=True,
        at="2m",
        labels={**_DEPLOYMENT, "connector": "redis", "severity": "critical"},
        description="Connector redis of deployment prod (instance exp:9817) has a check down.",
    ),
    *_check_cases(),
    # Timestamps that keep pace with time are fresh; a 60 s gap is under three intervals + for.
    *_three(
        "IngestProbeStale",
        f'ingest_probe_last_run_timestamp_seconds{{{_D}, connector="timescale"}}',
        fires="0x40",
        quiet="0+15x40",
        gap="0+15x10 _x3 210+15x26",
        gap_fires=False,
        at="5m",
        labels={**_DEPLOYMENT, "connector": "timescale", "severity": "warning"},
        description="Connector timescale of deployment prod was last probed 5m 0s ago "
        "(more than three intervals).",
    ),
    # A freshness series that goes stale (table unreadable) does not keep the page.
    *_three(
        "IngestDimensionStale",
        f'ingest_dimension_freshness_seconds{{{_D}, dimension="trades"}}',
        fires="600x40",
        quiet="60x40",
        gap="600x10 stale",
        gap_fires=False,
        at="6m",
        labels={**_DEPLOYMENT, "dimension": "trades", "severity": "warning"},
        description="The newest row of dimension trades in deployment prod is 10m 0s old, "
        "past its SLA.",
        also={f'ingest_dimension_freshness_sla_seconds{{{_D}, dimension="trades"}}': "300x40"},
    ),
    *_three(
        "IngestTimescaleReplicationLagHigh",
        f'ingest_timescale_replication_lag_bytes{{{_D}, replica="standby1"}}',
        fires="1073741824x40",
        quiet="0x40",
        gap="1073741824x10 _x5 1073741824x25",
        gap_fires=True,
        at="6m",
        labels={**_DEPLOYMENT, "replica": "standby1", "severity": "warning"},
        description="Replica standby1 of deployment prod has 1GiB of WAL left to replay.",
    ),
    # A primary that never had a replica is not paged; a gap is not a lost replica.
    *_three(
        "IngestTimescaleReplicaNotStreaming",
        f"ingest_timescale_replicas{{{_D}}}",
        fires="1x10 0x30",
        quiet="0x40",
        gap="1x10 _x30",
        gap_fires=False,
        at="6m",
        labels={**_DEPLOYMENT, "severity": "critical"},
        description="The primary of deployment prod had a streaming replica within the last "
        "hour and has none now.",
    ),
    # A promotion moves the timeline gauge up: a change, never mistaken for a counter reset.
    *_three(
        "IngestTimescaleFailover",
        f"ingest_timescale_timeline{{{_D}}}",
        fires="1x10 2x30",
        quiet="1x40",
        gap="1x10 _x5 1x25",
        gap_fires=False,
        at="4m",
        labels={**_DEPLOYMENT, "severity": "info"},
        description="The server of deployment prod was promoted to a new timeline in the last "
        "10 minutes; this alert resolves by itself.",
    ),
    *_three(
        "IngestRedisReplicaLinkDown",
        f"ingest_redis_master_link_up{{{_D}}}",
        fires="0x40",
        quiet="1x40",
        gap="1x5 stale 1x34",
        gap_fires=False,
        at="3m",
        labels={**_DEPLOYMENT, "severity": "warning"},
        description="The Redis replica of deployment prod reports master_link_status down.",
    ),
    # maxmemory 0 means unlimited: no ratio, no page.
    Case(
        "IngestRedisMemoryNearMax",
        "fires",
        {
            f"ingest_redis_memory_used_bytes{{{_D}}}": "950x60",
            f"ingest_redis_memory_max_bytes{{{_D}}}": "1000x60",
        },
        "11m",
        {**_DEPLOYMENT, "severity": "warning"},
        "Redis of deployment prod uses 95% of maxmemory.",
    ),
    Case(
        "IngestRedisMemoryNearMax",
        "quiet",
        {
            f"ingest_redis_memory_used_bytes{{{_D}}}": "950x60",
            f"ingest_redis_memory_max_bytes{{{_D}}}": "0x60",
        },
        "11m",
    ),
    Case(
        "IngestRedisMemoryNearMax",
        "gap",
        {
            f"ingest_redis_memory_used_bytes{{{_D}}}": "950x10 _x5 950x45",
            f"ingest_redis_memory_max_bytes{{{_D}}}": "1000x60",
        },
        "11m",
        {**_DEPLOYMENT, "severity": "warning"},
        "Redis of deployment prod uses 95% of maxmemory.",
    ),
    # A stale marker restarts `for:`: 8 minutes of lag after it are not yet 10.
    *_three(
        "IngestKafkaConsumerLagHigh",
        f'ingest_kafka_consumer_lag_seconds{{{_D}, group="writer", topic="trades"}}',
        fires="900x60",
        quiet="10x60",
        gap="900x10 stale 900x49",
        gap_fires=False,
        at="11m",
        labels={**_DEPLOYMENT, "group": "writer", "topic": "trades", "severity": "warning"},
        description="The oldest event of topic trades that group writer has not consumed "
        "(deployment prod) is 15m 0s old.",
    ),
    *_three(
        "IngestKafkaPartitionsWithoutLeader",
        f'ingest_kafka_partitions_without_leader{{{_D}, topic="trades"}}',
        fires="2x20",
        quiet="0x20",
        gap="2 2 _ 2x17",
        gap_fires=True,
        at="3m",
        labels={**_DEPLOYMENT, "topic": "trades", "severity": "critical"},
        description="Topic trades of deployment prod has 2 partitions without a leader "
        "(unavailable).",
    ),
    # A counter that stops being scraped gives no rate, so no page.
    *_three(
        "IngestBridgeFailing",
        f'ingest_bridge_messages_failed_total{{{_D}, dimension="trades", reason="decode"}}',
        fires="0+10x60",
        quiet="5x60",
        gap="0+10x5 _x55",
        gap_fires=False,
        at="11m",
        labels={**_DEPLOYMENT, "dimension": "trades", "reason": "decode", "severity": "warning"},
        description="The bridge of deployment prod failed records of trades (reason decode) "
        "in each of the last 5 minutes.",
    ),
    *_three(
        "IngestSupervisedTaskDown",
        f'ingest_supervisor_task_up{{{_I}, task="cache:prod"}}',
        fires="0x30",
        quiet="1x30",
        gap="1x10 _x2 0 1x17",
        gap_fires=False,
        at="6m",
        labels={**_INSTANCE, "task": "cache:prod", "severity": "warning"},
        description="Task cache:prod on exp:9817 is in backoff, failed or ended.",
    ),
    # A counter reset (daemon restart) is not a burst of restarts.
    *_three(
        "IngestSupervisedTaskFlapping",
        f'ingest_supervisor_task_restarts_total{{{_I}, task="cache:prod"}}',
        fires="0+1x40",
        quiet="3x40",
        gap="5x10 _x5 0x25",
        gap_fires=False,
        at="5m",
        labels={**_INSTANCE, "task": "cache:prod", "severity": "warning"},
        description="Task cache:prod on exp:9817 restarted more than 3 times in 15 minutes.",
    ),
    *_three(
        "IngestManifestNotPublished",
        f"ingest_manifest_last_published_timestamp_seconds{{{_D}}}",
        fires="0x100",
        quiet="0+15x100",
        gap="0+15x40 _x10 750+15x49",
        gap_fires=False,
        at="21m",
        labels={**_DEPLOYMENT, "severity": "warning"},
        description="Deployment prod last published its manifest 21m 0s ago.",
    ),
    *_drill_cases(),
    # The Watchdog fires with and without any input: there is no quiet case by design.
    Case(
        "Watchdog",
        "fires",
        {f"up{{{_I}}}": "1x10"},
        "1m",
        {"severity": "info"},
        "This alert fires all the time (value 1); a heartbeat receiver pages when it stops "
        "arriving.",
    ),
    Case(
        "Watchdog",
        "gap",
        {f"up{{{_I}}}": "1 _x9"},
        "1m",
        {"severity": "info"},
        "This alert fires all the time (value 1); a heartbeat receiver pages when it stops "
        "arriving.",
    ),
]
