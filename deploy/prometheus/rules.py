"""The alert and recording rules, as data; every expression uses the configurable selector."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Alert", "Recording", "RuleParams", "alerts", "recordings"]

DOWN = 'status="down"'
#: Degraded (answers, but wrong) or unknown (could not be judged, e.g. missing grants).
NOT_OK = 'status=~"degraded|unknown"'
#: The labels every alert is aggregated by (plus the alert's own subject label, if any).
BY = "job, instance, deployment"


@dataclass(frozen=True)
class RuleParams:
    """What differs between installations (and between the shipped rules and the e2e test)."""

    #: PromQL label matchers selecting the exporter's series, e.g. ``job="ingest-exporter"``.
    selector: str = 'job="ingest-exporter"'
    #: Base of every ``runbook_url`` (the anchor is the alert's name in lower case).
    runbook_base: str = "docs/runbooks.md"
    #: Multiplies every ``for:`` / ``keep_firing_for:`` (the e2e test renders short ones).
    time_scale: float = 1.0
    #: The exporter's probe interval (``INGEST_PROBE_INTERVAL_SECONDS``).
    probe_interval_seconds: float = 15.0
    #: The manifest republish period (``KAFKA_MANIFEST_INTERVAL_SECONDS``).
    manifest_interval_seconds: float = 300.0
    replication_lag_bytes: int = 256 * 1024 * 1024
    consumer_lag_seconds: int = 300
    redis_memory_ratio: float = 0.9
    #: A drill older than this is overdue (eight days: a weekly drill plus a day's slack).
    drill_max_age_seconds: int = 8 * 86400

    def m(self, extra: str = "") -> str:
        """Return a matcher block: the selector plus ``extra`` matchers."""
        return "{" + ", ".join(part for part in (self.selector, extra) if part) + "}"

    def scaled(self, seconds: float) -> int:
        """Return ``seconds`` scaled by ``time_scale``, in whole seconds (at least 1)."""
        return max(1, round(seconds * self.time_scale))

    def duration(self, seconds: float) -> str:
        """Return ``seconds`` scaled by ``time_scale`` as a Prometheus duration."""
        scaled = self.scaled(seconds)
        return f"{scaled // 60}m" if scaled % 60 == 0 else f"{scaled}s"


@dataclass(frozen=True)
class Alert:
    """One alerting rule in the monitoring-mixin shape."""

    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_seconds: float
    keep_firing_seconds: float = 0.0


@dataclass(frozen=True)
class Recording:
    """One recording rule (``level:metric:operations``)."""

    record: str
    expr: str


def _status(p: RuleParams, status: str, extra: str = "") -> str:
    """Return the checks whose ``ingest_check_status`` state matching ``status`` is 1."""
    by = ", ".join(part for part in (BY, "connector, check", extra) if part)
    return f"(max by ({by}) (ingest_check_status{p.m(status)}) == 1)"


def _reason(p: RuleParams) -> str:
    """Return each check's current reason (``none`` when it has none) as a ``reason`` label."""
    return f"max by ({BY}, connector, check, reason) (ingest_check_reason{p.m()} == 1)"


def _drill_alerts(p: RuleParams) -> list[Alert]:
    """Return the failover-drill alerts (the drill gauges hold the last drill's numbers)."""
    by = f"{BY}, label, scenario"

    def over(measured: str, objective: str) -> str:
        objectives = p.m(f'objective="{objective}"')
        return (
            f"max by ({by}) ({measured}{p.m()}) > on ({by}) "
            f"max by ({by}) (ingest_failover_drill_objective_seconds{objectives})"
        )

    subject = (
        "drill {{ $labels.label }} ({{ $labels.scenario }}) of deployment {{ $labels.deployment }}"
    )
    return [
        Alert(
            "IngestFailoverDrillFailed",
            f"max by ({by}) (ingest_failover_drill_success{p.m()}) == 0",
            "warning",
            "The last failover drill did not pass.",
            f"The last {subject} ended warn, fail or aborted.",
            for_seconds=60,
        ),
        Alert(
            "IngestFailoverDrillOverdue",
            f"time() - max by ({by}) (ingest_failover_drill_last_run_timestamp_seconds{p.m()}) "
            f"> {p.drill_max_age_seconds}",
            "warning",
            "No failover drill ran recently.",
            f"The last {subject} started {{{{ $value | humanizeDuration }}}} ago.",
            for_seconds=600,
        ),
        Alert(
            "IngestFailoverDrillRtoOverObjective",
            over("ingest_failover_drill_rto_seconds", "rto"),
            "warning",
            "The last failover drill took longer than the RTO objective.",
            f"The last {subject} restored writes after {{{{ $value | humanizeDuration }}}}.",
            for_seconds=60,
        ),
        Alert(
            "IngestFailoverDrillDetectionOverObjective",
            over("ingest_failover_drill_detection_seconds", "detection"),
            "warning",
            "The last failover drill detected the fault later than its objective.",
            f"The last {subject} detected the fault after {{{{ $value | humanizeDuration }}}}.",
            for_seconds=60,
        ),
        Alert(
            "IngestFailoverDrillLostWrites",
            f"max by ({by}) (ingest_failover_drill_lost_writes{p.m()}) > 0",
            "warning",
            "The last failover drill lost acknowledged writes (RPO over zero).",
            f"The last {subject} lost {{{{ $value }}}} acknowledged writes.",
            for_seconds=60,
        ),
    ]


def alerts(p: RuleParams) -> list[Alert]:
    """Return every alert, with ``p``'s selector in every expression."""
    stale_after = 3 * p.probe_interval_seconds
    manifest_after = 3 * p.manifest_interval_seconds
    return [
        Alert(
            "IngestExporterDown",
            f"up{p.m()} == 0",
            "critical",
            "Prometheus cannot scrape ingest-exporter.",
            "{{ $labels.instance }} of job {{ $labels.job }} has failed every scrape "
            "for several minutes; nothing it monitors is visible.",
            for_seconds=180,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestExporterAbsent",
            f"absent(up{p.m()})",
            "critical",
            "No ingest-exporter target is known to Prometheus.",
            "Prometheus has no `up` series for {{ $labels.job }}: the scrape configuration "
            "or service discovery lost the exporter.",
            for_seconds=300,
        ),
        Alert(
            "IngestConnectorDown",
            f"max by ({BY}, connector) (ingest_connector_up{p.m()}) == 0",
            "critical",
            "An ingest dependency does not answer the exporter's probes.",
            "Connector {{ $labels.connector }} of deployment {{ $labels.deployment }} "
            "(instance {{ $labels.instance }}) has a check down.",
            for_seconds=60,
            keep_firing_seconds=30,
        ),
        Alert(
            "IngestCheckDown",
            f"{_status(p, DOWN)} * on ({BY}, connector, check) group_left (reason) {_reason(p)}",
            "warning",
            "An ingest health check has been down for several minutes.",
            "Check {{ $labels.check }} of {{ $labels.connector }} in deployment "
            "{{ $labels.deployment }} is down (reason {{ $labels.reason }}).",
            for_seconds=300,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestCheckNotOk",
            # Checks its connector's outage left unknown are IngestConnectorDown's, not this.
            f"{_status(p, NOT_OK, 'status')} "
            f"* on ({BY}, connector, check) group_left (reason) {_reason(p)} "
            f"unless on ({BY}, connector) max by ({BY}, connector) "
            f"(ingest_connector_up{p.m()}) == 0",
            "warning",
            "An ingest health check has been degraded or unknown for a long time.",
            "Check {{ $labels.check }} of {{ $labels.connector }} in deployment "
            "{{ $labels.deployment }} is {{ $labels.status }} (reason {{ $labels.reason }}).",
            for_seconds=900,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestProbeStale",
            f"time() - max by ({BY}, connector) "
            f"(ingest_probe_last_run_timestamp_seconds{p.m()}) > {stale_after:g}",
            "warning",
            "The exporter's probe loop has stopped running.",
            "Connector {{ $labels.connector }} of deployment {{ $labels.deployment }} was "
            "last probed {{ $value | humanizeDuration }} ago (more than three intervals).",
            for_seconds=120,
        ),
        Alert(
            "IngestDimensionStale",
            f"max by ({BY}, dimension) (ingest_dimension_freshness_seconds{p.m()}) "
            f"> on ({BY}, dimension) "
            f"max by ({BY}, dimension) (ingest_dimension_freshness_sla_seconds{p.m()})",
            "warning",
            "An ingested dimension is older than its freshness SLA.",
            "The newest row of dimension {{ $labels.dimension }} in deployment "
            "{{ $labels.deployment }} is {{ $value | humanizeDuration }} old, past its SLA.",
            for_seconds=300,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestTimescaleReplicationLagHigh",
            f"max by ({BY}, replica) (ingest_timescale_replication_lag_bytes{p.m()}) "
            f"> {p.replication_lag_bytes}",
            "warning",
            "A Timescale replica lags far behind its primary.",
            "Replica {{ $labels.replica }} of deployment {{ $labels.deployment }} has "
            "{{ $value | humanize1024 }}B of WAL left to replay.",
            for_seconds=300,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestTimescaleReplicaNotStreaming",
            f"max by ({BY}) (ingest_timescale_replicas{p.m()}) == 0 "
            f"and on ({BY}) max by ({BY}) "
            f"(max_over_time(ingest_timescale_replicas{p.m()}[1h])) > 0",
            "critical",
            "A Timescale primary lost its streaming replica.",
            "The primary of deployment {{ $labels.deployment }} had a streaming replica "
            "within the last hour and has none now.",
            for_seconds=120,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestTimescaleFailover",
            f"max by ({BY}) (changes(ingest_timescale_timeline{p.m()}[10m])) > 0",
            "info",
            "A Timescale server moved to a new timeline (a failover or switchover happened).",
            "The server of deployment {{ $labels.deployment }} was promoted to a new timeline in "
            "the last 10 minutes; this alert resolves by itself.",
            for_seconds=0,
        ),
        Alert(
            "IngestRedisReplicaLinkDown",
            f"max by ({BY}) (ingest_redis_master_link_up{p.m()}) == 0",
            "warning",
            "A Redis replica lost its link to the primary.",
            "The Redis replica of deployment {{ $labels.deployment }} reports "
            "master_link_status down.",
            for_seconds=120,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestRedisMemoryNearMax",
            f"max by ({BY}) (ingest_redis_memory_used_bytes{p.m()}) / on ({BY}) "
            f"(max by ({BY}) (ingest_redis_memory_max_bytes{p.m()}) > 0) "
            f"> {p.redis_memory_ratio:g}",
            "warning",
            "Redis memory is close to its maxmemory limit.",
            "Redis of deployment {{ $labels.deployment }} uses "
            "{{ $value | humanizePercentage }} of maxmemory.",
            for_seconds=600,
            keep_firing_seconds=120,
        ),
        Alert(
            "IngestKafkaConsumerLagHigh",
            f"max by ({BY}, group, topic) (ingest_kafka_consumer_lag_seconds{p.m()}) "
            f"> {p.consumer_lag_seconds}",
            "warning",
            "A consumer group of the ingest pipeline lags behind its topic.",
            "The oldest event of topic {{ $labels.topic }} that group {{ $labels.group }} has "
            "not consumed (deployment {{ $labels.deployment }}) is "
            "{{ $value | humanizeDuration }} old.",
            for_seconds=600,
            keep_firing_seconds=120,
        ),
        Alert(
            "IngestKafkaPartitionsWithoutLeader",
            f"max by ({BY}, topic) (ingest_kafka_partitions_without_leader{p.m()}) > 0",
            "critical",
            "Partitions of an ingest topic have no leader.",
            "Topic {{ $labels.topic }} of deployment {{ $labels.deployment }} has "
            "{{ $value }} partitions without a leader (unavailable).",
            for_seconds=120,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestBridgeFailing",
            f"sum by ({BY}, dimension, reason) "
            f"(rate(ingest_bridge_messages_failed_total{p.m()}[5m])) > 0",
            "warning",
            "The Kafka ingest bridge fails to deliver records.",
            "The bridge of deployment {{ $labels.deployment }} failed records of "
            "{{ $labels.dimension }} (reason {{ $labels.reason }}) in each of the last 5 minutes.",
            for_seconds=300,
            keep_firing_seconds=120,
        ),
        Alert(
            "IngestSupervisedTaskDown",
            f"max by (job, instance, task) (ingest_supervisor_task_up{p.m()}) == 0",
            "warning",
            "A supervised background job of the exporter is not running.",
            "Task {{ $labels.task }} on {{ $labels.instance }} is in backoff, failed or ended.",
            for_seconds=300,
            keep_firing_seconds=60,
        ),
        Alert(
            "IngestSupervisedTaskFlapping",
            f"sum by (job, instance, task) "
            f"(increase(ingest_supervisor_task_restarts_total{p.m()}[15m])) > 3",
            "warning",
            "A supervised background job of the exporter keeps restarting.",
            "Task {{ $labels.task }} on {{ $labels.instance }} restarted more than 3 times "
            "in 15 minutes.",
            for_seconds=0,
            keep_firing_seconds=300,
        ),
        Alert(
            "IngestManifestNotPublished",
            f"time() - max by ({BY}) "
            f"(ingest_manifest_last_published_timestamp_seconds{p.m()}) > {manifest_after:g}",
            "warning",
            "The connector manifest has not been published for three periods.",
            "Deployment {{ $labels.deployment }} last published its manifest "
            "{{ $value | humanizeDuration }} ago.",
            for_seconds=300,
        ),
        *_drill_alerts(p),
        Alert(
            "Watchdog",
            "vector(1)",
            "info",
            "An alert that always fires, to prove the alerting pipeline works.",
            "This alert fires all the time (value {{ $value }}); a heartbeat receiver pages when "
            "it stops arriving.",
            for_seconds=0,
        ),
    ]


def recordings(p: RuleParams) -> list[Recording]:
    """Return the recording rules (aggregations the dashboards and runbooks share)."""
    return [
        Recording(
            "job_instance_deployment:ingest_connector_up:min",
            f"min by ({BY}) (ingest_connector_up{p.m()})",
        ),
        Recording(
            "job_instance_deployment_reason:ingest_probe_failures:rate5m",
            f"sum by ({BY}, reason) (rate(ingest_probe_failures_total{p.m()}[5m]))",
        ),
        Recording(
            "job_instance_deployment_group:ingest_kafka_consumer_lag_messages:sum",
            f"sum by ({BY}, group) (ingest_kafka_consumer_lag_messages{p.m()})",
        ),
        Recording(
            "job_instance_deployment:ingest_bridge_messages:rate5m",
            f"sum by ({BY}) (rate(ingest_bridge_messages_total{p.m()}[5m]))",
        ),
    ]
