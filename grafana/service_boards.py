"""The per-service dashboards: Timescale, Redis and Kafka."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from grafana.panels import board, series_panel, stat_panel

__all__ = ["kafka", "redis", "timescale"]

_RATE = "[$__rate_interval]"


def timescale() -> Dashboard:
    """Return the Timescale dashboard: freshness, hypertables, replication, jobs, connections."""
    return (
        board("ingest-timescale", "Ingest / Timescale", "TimescaleDB as the exporter sees it.")
        .with_row(Row("Dimensions"))
        .with_panel(
            series_panel(
                "Dimension freshness vs SLA",
                "Is each dimension's data fresh enough? "
                "Age of each dimension's newest row, and its configured freshness SLA.",
                "s",
                [
                    ("ingest_dimension_freshness_seconds{sel}", "{{deployment}} {{dimension}} age"),
                    (
                        "ingest_dimension_freshness_sla_seconds{sel}",
                        "{{deployment}} {{dimension}} SLA",
                    ),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Rows in the recent window",
                "Is data still arriving in each dimension table? "
                "Rows of each dimension table within its recent_window_seconds.",
                "short",
                [("ingest_dimension_rows_recent{sel}", "{{deployment}} {{dimension}}")],
                width=6,
            )
        )
        .with_panel(
            stat_panel(
                "Hypertables",
                "Is each dimension table a hypertable? "
                "1 when the dimension table is a TimescaleDB hypertable.",
                "bool_yes_no",
                [("ingest_dimension_is_hypertable{sel}", "{{deployment}} {{dimension}}")],
            )
        )
        .with_row(Row("Replication"))
        .with_panel(
            series_panel(
                "Replication lag (bytes)",
                "How much WAL is each replica behind? "
                "WAL bytes each replica has not replayed, seen from the primary.",
                "bytes",
                [("ingest_timescale_replication_lag_bytes{sel}", "{{deployment}} {{replica}}")],
                width=8,
            )
        )
        .with_panel(
            series_panel(
                "Replication lag (seconds)",
                "How far behind in time is each replica? "
                "Replay lag of each replica, seen from the primary; grows while replay is stuck.",
                "s",
                [("ingest_timescale_replication_lag_seconds{sel}", "{{deployment}} {{replica}}")],
                width=8,
            )
        )
        .with_panel(
            series_panel(
                "Replay delay on standbys",
                "Is a standby stuck replaying? "
                "On a standby: seconds since the last replayed transaction while WAL is pending.",
                "s",
                [("ingest_timescale_replay_delay_seconds{sel}", "{{deployment}}")],
                width=8,
            )
        )
        .with_panel(
            series_panel(
                "Role and replicas",
                "Which server is the primary, how many replicas stream from it, and did it fail over? "
                "1 while the server is a standby, the streaming replicas it serves, and its "
                "timeline (up by one at each promotion).",
                "short",
                [
                    ("ingest_timescale_in_recovery{sel}", "{{deployment}} standby"),
                    ("ingest_timescale_replicas{sel}", "{{deployment}} replicas"),
                    ("ingest_timescale_timeline{sel}", "{{deployment}} timeline"),
                ],
            )
        )
        .with_row(Row("Server"))
        .with_panel(
            series_panel(
                "Connections",
                "Is PostgreSQL running out of connections? "
                "Client backends in pg_stat_activity against max_connections.",
                "short",
                [
                    ("ingest_timescale_connections{sel}", "{{deployment}} used"),
                    ("ingest_timescale_max_connections{sel}", "{{deployment}} max"),
                ],
            )
        )
        .with_panel(
            stat_panel(
                "Failed background jobs",
                "Are TimescaleDB background jobs failing? TimescaleDB jobs whose last run failed.",
                "short",
                [("ingest_timescale_jobs_failed{sel}", "{{deployment}}")],
            )
        )
        .with_panel(
            stat_panel(
                "Versions",
                "Which PostgreSQL and TimescaleDB versions run? "
                "PostgreSQL server_version_num; the TimescaleDB version and edition are in the legend.",
                "none",
                [
                    ("ingest_timescale_server_version{sel}", "{{deployment}} PostgreSQL"),
                    (
                        "ingest_timescale_extension_info{sel}",
                        "{{deployment}} TimescaleDB {{version}} {{edition}}",
                    ),
                ],
            )
        )
    )


def redis() -> Dashboard:
    """Return the Redis dashboard: role, link, memory, evictions and the cache."""
    return (
        board("ingest-redis", "Ingest / Redis", "Redis and the exporter's cache namespace.")
        .with_panel(
            series_panel(
                "Role and replication link",
                "Does the Redis primary have its replicas, and is each replica linked? "
                "Replicas connected to a primary; on a replica, 1 while its link to the primary is up.",
                "short",
                [
                    ("ingest_redis_connected_replicas{sel}", "{{deployment}} replicas"),
                    ("ingest_redis_master_link_up{sel}", "{{deployment}} link up"),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Replication link down for",
                "How long has a Redis replica been cut off? "
                "Seconds a replica's link to its primary has been down (0 while up).",
                "s",
                [("ingest_redis_master_link_down_seconds{sel}", "{{deployment}}")],
            )
        )
        .with_panel(
            series_panel(
                "Memory used vs maxmemory",
                "Is Redis close to its memory limit? "
                "Memory Redis allocated and its maxmemory limit (0: unlimited).",
                "bytes",
                [
                    ("ingest_redis_memory_used_bytes{sel}", "{{deployment}} used"),
                    ("ingest_redis_memory_max_bytes{sel}", "{{deployment}} max"),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Evictions",
                "Is Redis or the cache throwing keys away? "
                "Keys evicted per second: by Redis under maxmemory, and by the cache's own key limit.",
                "ops",
                [
                    (
                        f"rate(ingest_redis_evicted_keys_total{{sel}}{_RATE})",
                        "{{deployment}} redis",
                    ),
                    (
                        f"rate(ingest_cache_evictions_total{{sel}}{_RATE})",
                        "{{deployment}} cache {{namespace}}",
                    ),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Cache keys vs max",
                "Is the cache namespace full? "
                "Live keys in the cache namespace and the policy's maximum.",
                "short",
                [
                    ("ingest_cache_keys{sel}", "{{deployment}} {{namespace}} keys"),
                    ("ingest_cache_max_keys{sel}", "{{deployment}} {{namespace}} max"),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Cache hit ratio",
                "Does the cache answer lookups? "
                "Hits over lookups (hits + misses); empty while nothing is looked up.",
                "percentunit",
                [
                    (
                        f"sum by (deployment, namespace) (rate(ingest_cache_hits_total{{sel}}{_RATE})) / "
                        f"(sum by (deployment, namespace) (rate(ingest_cache_hits_total{{sel}}{_RATE})) + "
                        f"sum by (deployment, namespace) (rate(ingest_cache_misses_total{{sel}}{_RATE})))",
                        "{{deployment}} {{namespace}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Corrupt cache values",
                "Are corrupt values turning up in the cache? "
                "Stored values that were not valid JSON (each was deleted), per second.",
                "ops",
                [
                    (
                        f"rate(ingest_cache_corrupt_values_total{{sel}}{_RATE})",
                        "{{deployment}} {{namespace}}",
                    )
                ],
            )
        )
    )


def kafka() -> Dashboard:
    """Return the Kafka dashboard: brokers, partitions, consumer lag, bridge and manifest."""
    return (
        board("ingest-kafka", "Ingest / Kafka", "Kafka, the ingest bridge and the manifest.")
        .with_row(Row("Cluster"))
        .with_panel(
            stat_panel(
                "Brokers",
                "How many Kafka brokers does the cluster have? Brokers in the cluster metadata.",
                "short",
                [("ingest_kafka_brokers{sel}", "{{deployment}}")],
            )
        )
        .with_panel(
            series_panel(
                "Topic partitions",
                "Does every ingest topic exist, with its partitions? "
                "Partitions of each ingest topic (0: the topic is missing).",
                "short",
                [("ingest_kafka_topic_partitions{sel}", "{{deployment}} {{topic}}")],
                width=6,
            )
        )
        .with_panel(
            series_panel(
                "Leaderless and under-replicated partitions",
                "Are partitions unavailable or at risk? "
                "Partitions without a leader (unavailable) and with fewer in-sync replicas than replicas.",
                "short",
                [
                    (
                        "ingest_kafka_partitions_without_leader{sel}",
                        "{{deployment}} {{topic}} leaderless",
                    ),
                    (
                        "ingest_kafka_under_replicated_partitions{sel}",
                        "{{deployment}} {{topic}} under-replicated",
                    ),
                ],
            )
        )
        .with_row(Row("Consumer lag"))
        .with_panel(
            series_panel(
                "Consumer lag (messages)",
                "How many messages is each consumer group behind? "
                "Messages between each group's committed offsets and the high watermarks: the "
                "bridge's group and the KAFKA_LAG_GROUPS ones (read, never joined).",
                "short",
                [
                    (
                        "sum by (deployment, group, topic) (ingest_kafka_consumer_lag_messages{sel})",
                        "{{deployment}} {{group}} {{topic}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Consumer lag (seconds)",
                "How old is the oldest unconsumed event of each group? "
                "Age of the oldest event each group has not consumed (0 when caught up).",
                "s",
                [("ingest_kafka_consumer_lag_seconds{sel}", "{{deployment}} {{group}} {{topic}}")],
            )
        )
        .with_panel(
            series_panel(
                "Consumer group members",
                "Is anything consuming in each monitored group? "
                "Live members of each KAFKA_LAG_GROUPS group: 0 means nothing consumes.",
                "short",
                [("ingest_kafka_consumer_group_members{sel}", "{{deployment}} {{group}}")],
            )
        )
        .with_panel(
            stat_panel(
                "Consumer group state",
                "Is each monitored group stable, empty or rebalancing? "
                "The coordinator's state of each KAFKA_LAG_GROUPS group (in the legend): Stable, "
                "Empty, rebalancing or Dead.",
                "none",
                [
                    (
                        "max by (deployment, group, state) (ingest_kafka_consumer_group_state{sel}) == 1",
                        "{{deployment}} {{group}} {{state}}",
                    )
                ],
                width=12,
            )
        )
        .with_row(Row("Bridge"))
        .with_panel(
            series_panel(
                "Bridge throughput",
                "Is the bridge consuming and committing? "
                "Records the bridge consumed and offset commits it made, per second.",
                "ops",
                [
                    (
                        f"sum by (deployment, dimension) (rate(ingest_bridge_messages_total{{sel}}{_RATE}))",
                        "{{deployment}} {{dimension}}",
                    ),
                    (f"rate(ingest_bridge_commits_total{{sel}}{_RATE})", "{{deployment}} commits"),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Bridge failures",
                "Which records does the bridge fail to deliver, and why? "
                "Records the bridge did not deliver, per second, by reason (decode, schema, delivery).",
                "ops",
                [
                    (
                        f"sum by (deployment, dimension, reason) (rate(ingest_bridge_messages_failed_total{{sel}}{_RATE}))",
                        "{{deployment}} {{dimension}} {{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Newest delivered event age",
                "When did the bridge last deliver an event? "
                "Seconds since the broker timestamp of the newest event the bridge delivered.",
                "s",
                [
                    (
                        "time() - ingest_bridge_last_event_timestamp_seconds{sel}",
                        "{{deployment}} {{dimension}}",
                    )
                ],
            )
        )
        .with_row(Row("Manifest"))
        .with_panel(
            series_panel(
                "Manifest publishing",
                "Is the connector manifest being published? "
                "Manifest documents acknowledged and publisher runs failed, per second.",
                "ops",
                [
                    (
                        f"rate(ingest_manifest_published_total{{sel}}{_RATE})",
                        "{{deployment}} published",
                    ),
                    (
                        f"rate(ingest_manifest_publish_failures_total{{sel}}{_RATE})",
                        "{{deployment}} failed",
                    ),
                ],
            )
        )
        .with_panel(
            series_panel(
                "Manifest age",
                "How old is the last published manifest? "
                "Seconds since the broker last acknowledged a manifest document.",
                "s",
                [
                    (
                        "time() - ingest_manifest_last_published_timestamp_seconds{sel}",
                        "{{deployment}}",
                    )
                ],
            )
        )
    )
