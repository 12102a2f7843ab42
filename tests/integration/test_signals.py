"""Series that stay through an outage, on private Redis and Kafka (never the shared stack)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import IngestSettings
from exporter.reasons import Reason

from .conftest import running_daemon, sample, scrape, scrape_until, wait_for
from .kafka_instance import KafkaInstance
from .redis_instance import RedisServers


def _status_series(text: str) -> set[tuple[str, str, str, str]]:
    """Return the label sets of every ``ingest_check_status`` sample, values aside."""
    return {
        (s.labels["connector"], s.labels["check"], s.labels["status"], s.labels["deployment"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ingest_check_status"
    }


def _checks(text: str, connector: str) -> dict[str, tuple[str, str]]:
    """Return check -> (status at 1, reason at 1) for one connector."""
    status: dict[str, str] = {}
    reason: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("connector") != connector or s.value != 1:
                continue
            if s.name == "ingest_check_status":
                assert s.labels["check"] not in status, "two statuses at 1"
                status[s.labels["check"]] = s.labels["status"]
            elif s.name == "ingest_check_reason":
                reason[s.labels["check"]] = s.labels["reason"]
    assert status.keys() == reason.keys()
    return {check: (status[check], reason[check]) for check in status}


def _all_ok(connector: str) -> Callable[[str], bool]:
    def ready(text: str) -> bool:
        checks = _checks(text, connector)
        return bool(checks) and all(v == ("ok", "none") for v in checks.values())

    return ready


@pytest.fixture
async def private_redis(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[RedisServers]:
    """Yield private redis-server processes (stopped after the test)."""
    servers = RedisServers(service_env["INGEST_REDIS_SERVER"], tmp_path)
    yield servers
    await servers.close()


async def test_redis_stopped_keeps_every_check_series_and_withdraws_cache_values(
    settings_factory: Callable[..., IngestSettings], private_redis: RedisServers
) -> None:
    """Redis stopped: the same status series, every check down/unknown with reason refused."""
    port = await private_redis.start()
    settings = settings_factory(
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        REDIS_CACHE_STRATEGY="institutional",
        INGEST_PROBE_INTERVAL_SECONDS="2",
        INGEST_PROBE_TIMEOUT_SECONDS="1.5",
    )
    async with running_daemon(settings) as (daemon, url):
        healthy = await scrape_until(url, _all_ok("redis"))
        assert set(_checks(healthy, "redis")) == {"ping", "role", "memory", "cache_keys"}
        cache = daemon.services[0].cache
        assert cache is not None
        await wait_for(lambda: cache.last_stats is not None, timeout=30)
        text = await scrape(url)
        assert sample(text, "ingest_cache_hits_total") is not None
        task = f"cache:{settings.deployments[0].name}"
        assert sample(text, "ingest_supervisor_task_up", task=task) == 1

        await private_redis.stop(port)

        def redis_down(text: str) -> bool:
            return _checks(text, "redis").get("ping") == ("down", Reason.REFUSED.value)

        outage = await scrape_until(url, redis_down, timeout=30)
        assert _status_series(outage) == _status_series(healthy)
        checks = _checks(outage, "redis")
        others = ("role", "memory", "cache_keys")
        assert {c: v for c, v in checks.items() if c != "ping"} == dict.fromkeys(
            others, ("unknown", "refused")
        )
        assert sample(outage, "ingest_redis_memory_used_bytes") is None
        # The cache's numbers come from Redis: withdrawn, not stale, and its task is not up.
        outage = await scrape_until(
            url, lambda t: sample(t, "ingest_supervisor_task_up", task=task) == 0, timeout=30
        )
        assert sample(outage, "ingest_cache_hits_total") is None
        assert sample(outage, "ingest_cache_max_keys") is not None
        assert _status_series(outage) == _status_series(healthy)


async def test_kafka_unreachable_keeps_every_check_series(
    settings_factory: Callable[..., IngestSettings], service_env: dict[str, str], unique: str
) -> None:
    """Kafka stopped: metadata, topics and consumer_lag stay, with the connector's reason."""
    async with KafkaInstance(service_env["INGEST_KAFKA_JARS"]) as kafka:
        topic = f"test.signals.{unique}"
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        settings = settings_factory(
            KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap,
            KAFKA_INGEST_TOPICS=f"bars:{topic}",
            INGEST_DIMENSIONS="bars",
            KAFKA_INGEST_CONSUMER_GROUP=f"g-{unique}",
            INGEST_PROBE_INTERVAL_SECONDS="2",
            INGEST_PROBE_TIMEOUT_SECONDS="1.5",
        )
        async with running_daemon(settings) as (_, url):
            healthy = await scrape_until(url, _all_ok("kafka"), timeout=60)
            assert set(_checks(healthy, "kafka")) == {"metadata", "topics", "consumer_lag"}
            assert sample(healthy, "ingest_kafka_topic_partitions", topic=topic) == 1

            await kafka.kill()

            def kafka_down(text: str) -> bool:
                return _checks(text, "kafka").get("metadata", ("ok",))[0] == "down"

            outage = await scrape_until(url, kafka_down, timeout=60)
            assert _status_series(outage) == _status_series(healthy)
            checks = _checks(outage, "kafka")
            reason = checks["metadata"][1]
            assert reason in {r.value for r in Reason} - {"error"}
            assert checks["topics"] == checks["consumer_lag"] == ("unknown", reason)
            assert sample(outage, "ingest_kafka_topic_partitions", topic=topic) is None


async def test_every_counter_label_value_is_there_at_zero_in_the_first_scrape(
    settings_factory: Callable[..., IngestSettings], unique: str
) -> None:
    """The first scrape of a fresh daemon has each counter's known label values, at 0."""
    settings = settings_factory(
        INGEST_DIMENSIONS="bars",
        KAFKA_INGEST_TOPICS=f"bars:test.signals.first.{unique}",
        INGEST_PROBE_INTERVAL_SECONDS="60",
    )
    async with running_daemon(settings) as (_, url):
        text = await scrape(url)
    counters = {
        family.name: family.samples
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
    }
    failures = {
        (s.labels["connector"], s.labels["reason"]): s.value
        for s in counters["ingest_probe_failures"]
        if s.name.endswith("_total")
    }
    expected = {(c, r.value) for c in ("timescale", "redis", "kafka") for r in Reason}
    assert expected <= failures.keys()
    bridge = {
        (s.labels["dimension"], s.labels["reason"]): s.value
        for s in counters["ingest_bridge_messages_failed"]
        if s.name.endswith("_total")
    }
    assert bridge
    assert set(bridge.values()) == {0.0}
    for name in ("ingest_bridge_messages", "ingest_bridge_commits", "ingest_probe_cycles"):
        assert [s for s in counters[name] if s.name.endswith("_total")], name
    restarts = [s for s in counters["ingest_supervisor_task_restarts"] if s.name.endswith("_total")]
    assert {s.labels["task"] for s in restarts} >= {"probe-loop:local"}
    # The daemon's own process and runtime, from its own registry.
    assert sample(text, "process_resident_memory_bytes")
    assert sample(text, "python_info") == 1
