"""The Redis probe's judgements, on fake replies (no server)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import AuthenticationError, NoPermissionError

from exporter.config import RedisCacheSettings
from exporter.probes.base import Check, ConnectivityReport, Reason, Status
from exporter.probes.redis import (
    METRIC_SPECS,
    RedisProbe,
    cache_check,
    cache_index_key,
    memory_check,
    role_check,
)
from exporter.probes.runner import ProbeRunner
from exporter.state import ExporterState
from exporter.telemetry.metrics import IngestCollector

from .fakes.connectors import FakeRedisConnector


def _values(check: Check) -> dict[str, float]:
    return {m.name: m.value for m in check.measurements}


def test_primary_counts_its_replicas() -> None:
    """A primary is ok and publishes its connected replica count."""
    check = role_check({"role": "master", "connected_slaves": 2})
    assert check.status is Status.OK
    assert _values(check) == {"ingest_redis_connected_replicas": 2.0}


def test_replica_with_link_up_is_ok() -> None:
    """A replica whose link is up reports link_up 1 and zero seconds down."""
    check = role_check(
        {"role": "slave", "master_link_status": "up", "master_last_io_seconds_ago": 1}
    )
    assert check.status is Status.OK
    assert _values(check) == {
        "ingest_redis_master_link_up": 1.0,
        "ingest_redis_master_link_down_seconds": 0.0,
    }


def test_replica_with_link_down_is_degraded_stale() -> None:
    """A replica that lost its primary is degraded/stale with the outage's length."""
    check = role_check(
        {"role": "slave", "master_link_status": "down", "master_link_down_since_seconds": 42}
    )
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.STALE)
    assert _values(check) == {
        "ingest_redis_master_link_up": 0.0,
        "ingest_redis_master_link_down_seconds": 42.0,
    }


def test_replica_that_never_synced_has_no_outage_length() -> None:
    """A replica that never synced (-1) is stale, and its unknown outage length is omitted."""
    check = role_check(
        {"role": "slave", "master_link_status": "down", "master_link_down_since_seconds": -1}
    )
    assert (check.status, check.reason) == (Status.DEGRADED, Reason.STALE)
    assert _values(check) == {"ingest_redis_master_link_up": 0.0}
    assert "never synced" in check.detail


def test_unknown_role_is_a_protocol_surprise() -> None:
    """A role other than master/slave leaves the check unknown with reason protocol."""
    check = role_check({"role": "sentinel"})
    assert (check.status, check.reason) == (Status.UNKNOWN, Reason.PROTOCOL)


@pytest.mark.parametrize(
    ("used", "limit", "status", "reason"),
    [
        (1000, 0, Status.OK, None),
        (900, 1000, Status.OK, None),
        (901, 1000, Status.DEGRADED, Reason.CAPACITY),
    ],
)
def test_memory_degrades_over_ninety_percent_of_a_set_limit(
    used: int, limit: int, status: Status, reason: Reason | None
) -> None:
    """Memory is degraded/capacity only above 90% of a configured maxmemory."""
    check = memory_check({"used_memory": used, "maxmemory": limit}, {"evicted_keys": 7})
    assert (check.status, check.reason) == (status, reason)
    assert _values(check) == {
        "ingest_redis_memory_used_bytes": float(used),
        "ingest_redis_memory_max_bytes": float(limit),
        "ingest_redis_evicted_keys": 7.0,
    }


def test_memory_without_stats_omits_evictions() -> None:
    """A refused INFO stats only drops the eviction counter from the memory check."""
    check = memory_check({"used_memory": 5, "maxmemory": 0}, None)
    assert "ingest_redis_evicted_keys" not in _values(check)


def test_cache_over_its_key_limit_is_degraded() -> None:
    """More keys than the policy allows is degraded/capacity; at the limit it is ok."""
    assert cache_check(10, 10).status is Status.OK
    over = cache_check(11, 10)
    assert (over.status, over.reason) == (Status.DEGRADED, Reason.CAPACITY)
    assert over.detail == "11 of at most 10 keys"


def test_cache_index_key_is_the_caches_sorted_set() -> None:
    """The probe counts the sorted set the cache indexes its keys in."""
    assert cache_index_key("ingest:cache") == "ingest:cache:_index"


class FakePipeline:
    """Record pipelined commands and answer them with canned replies."""

    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies
        self.sent: list[str] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def info(self, section: str) -> None:
        """Queue INFO <section>."""
        self.sent.append(f"info {section}")

    def zcard(self, key: str) -> None:
        """Queue ZCARD <key>."""
        self.sent.append(f"zcard {key}")

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Answer the queued commands (errors as values, like redis-py)."""
        assert raise_on_error is False
        return [self.replies[command] for command in self.sent]


class FakeClient:
    """A redis.asyncio client stand-in: PING plus one pipeline."""

    def __init__(self, replies: dict[str, Any], ping_error: Exception | None = None) -> None:
        self.pipe = FakePipeline(replies)
        self.ping_error = ping_error

    async def ping(self) -> bool:
        """Answer PING, or fail as configured."""
        if self.ping_error is not None:
            raise self.ping_error
        return True

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        """Return the one pipeline."""
        assert transaction is False
        return self.pipe


REPLIES: dict[str, Any] = {
    "info replication": {"role": "master", "connected_slaves": 0},
    "info memory": {"used_memory": 100, "maxmemory": 0},
    "info stats": {"evicted_keys": 0},
    "zcard ns:_index": 3,
}


def _probe(replies: dict[str, Any], cache: RedisCacheSettings, **kwargs: Any) -> RedisProbe:
    return RedisProbe(FakeRedisConnector(FakeClient(replies, **kwargs), cache))


def _by_name(checks: Sequence[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


async def test_probe_reports_every_check_from_one_pipeline() -> None:
    """PING, role, memory and cache_keys all report, the last three from one round trip."""
    probe = _probe(
        REPLIES, RedisCacheSettings(strategy="institutional", namespace="ns", max_keys=5)
    )
    checks = _by_name(await probe())
    assert list(checks) == ["ping", "role", "memory", "cache_keys"]
    assert all(c.status is Status.OK for c in checks.values())
    assert checks["cache_keys"].detail == "3 of at most 5 keys"
    assert checks["role"].latency_seconds == checks["cache_keys"].latency_seconds


async def test_disabled_cache_is_not_counted() -> None:
    """With the disabled cache policy no ZCARD is sent and no cache_keys check appears."""
    connector = FakeRedisConnector(FakeClient(REPLIES), RedisCacheSettings(strategy="disabled"))
    checks = await RedisProbe(connector)()
    assert "cache_keys" not in _by_name(checks)
    assert not any(c.startswith("zcard") for c in connector.client.pipe.sent)


async def test_refused_info_leaves_its_check_unknown() -> None:
    """An ACL refusing INFO makes role and memory unknown/permission; the rest still report."""
    denied = NoPermissionError("User probe has no permissions to run the 'info' command")
    replies = {**REPLIES, "info replication": denied, "info memory": denied, "info stats": denied}
    checks = _by_name(
        await _probe(replies, RedisCacheSettings(strategy="institutional", namespace="ns"))()
    )
    assert (checks["role"].status, checks["role"].reason) == (Status.UNKNOWN, Reason.PERMISSION)
    assert checks["memory"].reason is Reason.PERMISSION
    assert checks["ping"].status is Status.OK
    assert checks["cache_keys"].status is Status.OK


async def test_wrong_password_is_classified_auth() -> None:
    """A WRONGPASS at connect makes ping down with reason auth, the other checks unknown/auth."""
    error = AuthenticationError("WRONGPASS invalid username-password pair or user is disabled.")
    probe = _probe(REPLIES, RedisCacheSettings(), ping_error=error)
    result, *rest = await ProbeRunner(default_timeout=1.0).run_one(probe)
    assert (result.check, result.status, result.reason) == ("ping", Status.DOWN, Reason.AUTH)
    assert [(r.check, r.status, r.reason) for r in rest] == [
        (name, Status.UNKNOWN, Reason.AUTH) for name in probe.checks[1:]
    ]


async def test_evicted_keys_are_exposed_as_a_counter() -> None:
    """The mirrored evicted_keys counter is scraped as ingest_redis_evicted_keys_total."""
    replies = {**REPLIES, "info stats": {"evicted_keys": 12}}
    probe = _probe(replies, RedisCacheSettings(strategy="institutional", namespace="ns"))
    results = tuple(await ProbeRunner(default_timeout=1.0).run_one(probe))
    state = ExporterState()
    state.record(ConnectivityReport("local", 0.0, 0.0, results))
    registry = CollectorRegistry()
    registry.register(IngestCollector(state))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["ingest_redis_evicted_keys"].type == "counter"
    [sample] = families["ingest_redis_evicted_keys"].samples
    assert (sample.name, sample.value, sample.labels) == (
        "ingest_redis_evicted_keys_total",
        12.0,
        {"deployment": "local"},
    )


def test_metric_specs_follow_the_naming_rules() -> None:
    """Every spec is ingest_redis_*, labelled by deployment only, and never ends in _total."""
    for item in METRIC_SPECS:
        assert item.name.startswith("ingest_redis_")
        assert not item.name.endswith("_total")
        assert item.labels == ("deployment",)
