"""Built-in Kafka checks: metadata, ingest topics, named groups' and the bridge's lag, a canary.

One run, all bounded by one deadline (90% of the probe's timeout, so every check reports
before the runner gives up on the probe as a whole):

- ``metadata``: brokers and controller through the connector's admin client. Failing here
  raises, and the runner reports one ``down`` result with a classified reason.
- ``topics`` (when ingest topics are configured): each is present, its partitions have a
  leader and a full ISR. A missing topic is ``degraded``/``missing``; a partition without
  a leader ``degraded``/``missing`` (its leader is gone); an under-replicated one
  ``degraded``/``stale`` (followers behind). Topics come from the all-topics metadata the
  broker sends anyway: naming them in the request would let a broker with
  ``auto.create.topics.enable`` create the very topic reported missing.
- ``consumer_lag`` (same condition): the bridge's group, see :mod:`exporter.probes._kafka_lag`.
- ``group_lag:<entry>`` (one per configured lag group or pattern): read-only lag of the
  groups operators name, see :mod:`exporter.probes._kafka_groups`.
- ``canary`` (only with a canary topic): produce a unique message to partition 0 and read
  it back, timing the round trip; a missing canary topic is ``degraded``/``missing``.

A check that cannot be determined (the broker refused or timed out on its request) is
``unknown`` with the classified reason; a canary that fails is ``down``: it is the data
path itself. Clients are reused across runs and discarded after failures, so a thousand
runs hold the same connections as one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka.errors import for_code
from aiokafka.structs import TopicPartition

from exporter._kafka_settings import KafkaLagSettings
from exporter.connectors.kafka import KafkaConnector
from exporter.errors import ProbeError
from exporter.metricspec import REFRESHED, MetricSpec, spec
from exporter.probes._kafka_clients import CANARY_PARTITION, ProbeClients, canary_round_trip
from exporter.probes._kafka_groups import GROUP_STATES, GroupLag, GroupSnapshot, led_partitions
from exporter.probes._kafka_lag import LagReader
from exporter.probes.base import Check, Measurement, Status
from exporter.reasons import Reason, classify

__all__ = ["DEADLINE_SHARE", "METRIC_SPECS", "KafkaProbe", "topics_check"]

#: Share of the probe's timeout its checks may use, leaving the rest for reporting.
DEADLINE_SHARE = 0.9

#: Gauges this probe publishes (through its measurements).
METRIC_SPECS: tuple[MetricSpec, ...] = (
    spec(
        "ingest_kafka_brokers", "gauge", "deployment", f"Brokers in cluster metadata. {REFRESHED}"
    ),
    spec(
        "ingest_kafka_topic_partitions",
        "gauge",
        "deployment topic",
        f"Partitions of each configured ingest topic, 0 when the topic is missing. {REFRESHED}",
    ),
    spec(
        "ingest_kafka_partitions_without_leader",
        "gauge",
        "deployment topic",
        f"Partitions of each ingest topic that have no leader (unavailable). {REFRESHED}",
    ),
    spec(
        "ingest_kafka_under_replicated_partitions",
        "gauge",
        "deployment topic",
        f"Partitions of each ingest topic whose in-sync replicas are fewer than their "
        f"replicas. {REFRESHED}",
    ),
    spec(
        "ingest_kafka_consumer_lag_messages",
        "gauge",
        "deployment group topic partition",
        f"Messages between a group's committed offset and the high watermark (the bridge's group "
        f"and the named lag groups; read-only). {REFRESHED}",
    ),
    spec(
        "ingest_kafka_consumer_lag_seconds",
        "gauge",
        "deployment group topic",
        f"Age of the oldest message a group has not consumed (max over the topic's partitions; "
        f"0 when caught up). {REFRESHED}",
    ),
    spec(
        "ingest_kafka_consumer_group_members",
        "gauge",
        "deployment group",
        f"Live members of a named lag group, from its coordinator. {REFRESHED}",
    ),
    spec(
        "ingest_kafka_consumer_group_state",
        "gauge",
        "deployment group state",
        f"1 for a named lag group's current state ({', '.join(GROUP_STATES)}), else 0. {REFRESHED}",
    ),
    spec(
        "ingest_kafka_canary_latency_seconds",
        "gauge",
        "deployment",
        f"Produce-to-consume round trip of the last canary message. {REFRESHED}",
    ),
)

# Errors that mean "the broker answered no": the clients are fine, keep them.
_ANSWERED = frozenset({Reason.AUTH, Reason.PERMISSION, Reason.MISSING})


def topics_check(
    described: Sequence[Mapping[str, Any]], topics: Sequence[str]
) -> tuple[Check, dict[str, list[int]]]:
    """Judge ``topics`` against described metadata; also return their led partitions."""
    by_name = {str(entry["topic"]): entry for entry in described}
    measurements: list[Measurement] = []
    problems: list[tuple[Reason, str]] = []
    led: dict[str, list[int]] = {}
    leaderless = under = unreadable = 0
    for topic in topics:
        label = (("topic", topic),)
        entry = by_name.get(topic)
        # 3 is UNKNOWN_TOPIC_OR_PARTITION; an absent entry means the same.
        code = 3 if entry is None else int(entry["error_code"])
        if code == 3:
            problems.append((Reason.MISSING, f"topic {topic} missing"))
            measurements.append(Measurement("ingest_kafka_topic_partitions", 0.0, label))
            continue
        if entry is None or code:
            unreadable += 1
            reason = classify(for_code(code)())
            problems.append((reason, f"topic {topic} unreadable: {reason.value}"))
            continue
        partitions = entry["partitions"]
        no_leader = sum(1 for p in partitions if int(p["leader"]) < 0)
        lagging = sum(1 for p in partitions if len(p["isr"]) < len(p["replicas"]))
        leaderless += no_leader
        under += lagging
        led[topic] = sorted(int(p["partition"]) for p in partitions if int(p["leader"]) >= 0)
        measurements += [
            Measurement("ingest_kafka_topic_partitions", float(len(partitions)), label),
            Measurement("ingest_kafka_partitions_without_leader", float(no_leader), label),
            Measurement("ingest_kafka_under_replicated_partitions", float(lagging), label),
        ]
    if leaderless:
        problems.append((Reason.MISSING, f"{leaderless} partition(s) without a leader"))
    if under:
        problems.append((Reason.STALE, f"{under} under-replicated partition(s)"))
    if not problems:
        count = sum(len(p) for p in led.values())
        detail = f"{len(topics)} topic(s), {count} partition(s), all led and in sync"
        return Check("topics", detail=detail, measurements=tuple(measurements)), led
    # Nothing readable at all means nothing is known, not that something is wrong.
    status = Status.UNKNOWN if unreadable == len(topics) else Status.DEGRADED
    detail = "; ".join(text for _, text in problems)
    return Check("topics", status, problems[0][0], detail, tuple(measurements)), led


class KafkaProbe:
    """Check the cluster, the ingest topics, groups' lag and (opt-in) a canary.

    Keyword arguments default to the connector's settings: ``topics`` to the ingest topics,
    ``group`` to the bridge's consumer group, ``canary_topic`` to the configured canary
    (``None`` there: no canary), ``auto_offset_reset`` to the bridge's policy, ``lag`` to
    the named lag groups and their thresholds.
    """

    connector: str = "kafka"
    name: str = "metadata"

    def __init__(
        self,
        kafka: KafkaConnector,
        *,
        timeout: float | None = None,
        topics: Sequence[str] | None = None,
        group: str | None = None,
        canary_topic: str | None = None,
        auto_offset_reset: str | None = None,
        lag: KafkaLagSettings | None = None,
    ) -> None:
        settings = kafka.settings
        self._kafka = kafka
        self.timeout = timeout
        configured = [b.topic for b in settings.ingest_topics] if topics is None else topics
        #: The ingest topics checked and measured (deduplicated, in configured order).
        self.topics: tuple[str, ...] = tuple(dict.fromkeys(configured))
        #: The consumer group whose lag is measured (the ingest bridge's).
        self.group = group or settings.consumer_group
        #: The canary topic, or None when the canary is off.
        self.canary_topic = canary_topic or settings.canary_topic
        self._reset_policy = auto_offset_reset or settings.auto_offset_reset
        self._clients = ProbeClients(kafka)
        self._lag = LagReader()
        lag = settings.lag if lag is None else lag
        self._lag_thresholds = lag.thresholds()
        self._groups = GroupLag(lag, answered=_ANSWERED)
        self._lock = asyncio.Lock()

    @property
    def checks(self) -> tuple[str, ...]:
        """Return the checks every run reports (the runner fills in those it cannot run)."""
        names = ["metadata"]
        names += ["topics", "consumer_lag"] if self.topics else []
        names += self._groups.check_names
        names += ["canary"] if self.canary_topic else []
        return tuple(names)

    async def aclose(self) -> None:
        """Close the probe's own consumer and producer (the admin client is the connector's)."""
        await self._clients.close()

    async def __call__(self) -> list[Check]:
        """Run the checks; runs never overlap (they share one consumer)."""
        # The deadline counts from the call, like the runner's timeout: a run that waited
        # for the lock (the loop's run and a /probe request at once) has only what is left.
        budget = self.timeout or self._kafka.timeout
        deadline = asyncio.get_running_loop().time() + budget * DEADLINE_SHARE
        async with self._lock:
            checks = [await self._metadata(deadline)]
            if self.topics or self.canary_topic or self._groups.check_names:
                checks += await self._topic_checks(deadline)
            return checks

    async def _metadata(self, deadline: float) -> Check:
        """Describe the cluster; raise (classified by the runner) when it cannot be reached."""
        t0 = time.perf_counter()
        try:
            admin = await self._admin()
            cluster = await admin.describe_cluster()
        except Exception as exc:
            await self._drop_clients()
            raise await self._diagnose(exc, deadline) from exc
        except BaseException:
            self._drop_clients_in_background()
            raise
        brokers = cluster.get("brokers", [])
        return Check(
            "metadata",
            latency_seconds=time.perf_counter() - t0,
            detail=f"{len(brokers)} broker(s), controller {cluster.get('controller_id')}",
            measurements=(Measurement("ingest_kafka_brokers", float(len(brokers))),),
        )

    async def _topic_checks(self, deadline: float) -> list[Check]:
        """Describe all topics once, then judge topics, lag and canary from it."""
        described: list[Mapping[str, Any]] = []

        async def describe() -> list[Check]:
            admin = await self._admin()
            described.extend(await admin.describe_topics())
            return []

        failed = await self._step("topics", deadline, Status.UNKNOWN, describe)
        if failed:
            # Without topic metadata nothing else can be judged: each check says why.
            return _replicate(failed[0], self.checks[1:])
        checks: list[Check] = []
        led: dict[str, list[int]] = {}
        if self.topics:
            topics, led = topics_check(described, self.topics)
            checks.append(topics)
        found: dict[str, list[GroupSnapshot]] = {}
        group_checks: list[Check] = []
        if self._groups.check_names:

            async def discover() -> list[Check]:
                found.update(await self._groups.discover(await self._admin()))
                return []

            if failed := await self._step("group_lag", deadline, Status.UNKNOWN, discover):
                group_checks = _replicate(failed[0], self._groups.check_names)
                found.clear()
        canary = self.canary_topic
        has_canary = canary is not None and any(
            entry["topic"] == canary and not entry["error_code"] for entry in described
        )
        readable = [TopicPartition(topic, p) for topic, ids in led.items() for p in ids]
        if canary is not None and has_canary:
            readable.append(TopicPartition(canary, CANARY_PARTITION))
        everywhere = led_partitions(described)
        self._clients.expect({*readable, *self._groups.partitions(found, everywhere)})
        if self.topics:
            read_lag = functools.partial(self._read_lag, led, deadline)
            checks += await self._step("consumer_lag", deadline, Status.UNKNOWN, read_lag)
        if found:
            judge = functools.partial(self._group_lag, found, everywhere, deadline)
            group_checks = await self._step("group_lag", deadline, Status.UNKNOWN, judge)
            if group_checks and group_checks[0].name == "group_lag":  # failed as a whole
                group_checks = _replicate(group_checks[0], self._groups.check_names)
        checks += group_checks
        if canary is not None and not has_canary:
            checks.append(Check("canary", Status.DEGRADED, Reason.MISSING, f"{canary} missing"))
        elif canary is not None:
            round_trip = functools.partial(self._canary, canary)
            checks += await self._step("canary", deadline, Status.DOWN, round_trip)
        return checks

    async def _read_lag(self, led: Mapping[str, Sequence[int]], deadline: float) -> list[Check]:
        present = {topic: ids for topic, ids in led.items() if ids}
        if not present:
            return [Check("consumer_lag", Status.UNKNOWN, Reason.MISSING, "no ingest topic found")]
        check = await self._lag.read(
            await self._admin(),
            await self._clients.consumer(),
            group=self.group,
            partitions=present,
            reset=self._reset_policy,
            deadline=deadline,
            thresholds=self._lag_thresholds,
        )
        return [check]

    async def _group_lag(
        self,
        found: Mapping[str, Sequence[GroupSnapshot]],
        led: Mapping[str, Sequence[int]],
        deadline: float,
    ) -> list[Check]:
        consumer = await self._clients.consumer()
        return await self._groups.checks(consumer, found, led, deadline)

    async def _canary(self, topic: str) -> list[Check]:
        return [await canary_round_trip(self._clients, topic)]

    async def _step(
        self,
        name: str,
        deadline: float,
        status: Status,
        work: Callable[[], Awaitable[list[Check]]],
    ) -> list[Check]:
        """Run one check under the deadline; a failure becomes a check, never an exception."""
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                return await work()
        except Exception as exc:  # noqa: BLE001 - a failed check is data
            reason = Reason.TIMEOUT if isinstance(exc, TimeoutError) else classify(exc)
            if reason not in _ANSWERED:
                await self._drop_clients()
            if reason is Reason.TIMEOUT:
                detail = "no answer before the probe's deadline"
            else:
                detail = f"{type(exc).__name__}: {exc}"
            return [Check(name, status, reason, detail, latency_seconds=time.perf_counter() - t0)]
        except BaseException:
            # Cancelled mid-request: the clients may hold a half-read reply. Drop them,
            # without waiting: the runner's timeout has already passed.
            self._drop_clients_in_background()
            raise

    async def _admin(self) -> Any:
        # Shielded for the reason ProbeClients._start gives (a cancelled bootstrap leaks its
        # connection): one cut off by the probe's timeout finishes in the background, and
        # the reset that the cancelled run queued behind it then closes it.
        bootstrap = asyncio.ensure_future(self._kafka.admin())
        try:
            return await asyncio.shield(bootstrap)
        except asyncio.CancelledError:
            # Nobody else awaits it now: held, bounded and its failure logged from here on.
            bound = self._kafka.timeout * (1 + len(self._kafka.settings.bootstrap_servers))
            self._clients.in_background(bootstrap, event="kafka_admin_bootstrap", timeout=bound)
            raise

    async def _drop_clients(self) -> None:
        # wait() never cancels what it waits for: closing finishes even when the runner's
        # timeout cancels this run.
        await asyncio.wait(self._drop_clients_in_background())

    def _drop_clients_in_background(self) -> list[asyncio.Task[Any]]:
        reset = self._clients.in_background(self._kafka.reset(), event="kafka_admin_reset")
        return [reset, *self._clients.discard()]

    async def _diagnose(self, exc: Exception, deadline: float) -> Exception:
        """Say why the cluster is unreachable: aiokafka reports most causes as one error."""
        if classify(exc) not in (Reason.ERROR, Reason.PROTOCOL):
            return exc
        try:
            async with asyncio.timeout_at(deadline):
                cause = await self._kafka.diagnose()
        except TimeoutError:
            return ProbeError(Reason.TIMEOUT, "no answer from the bootstrap broker in time")
        reason = Reason.ERROR if cause is None else classify(cause)
        if reason is Reason.ERROR:
            return exc
        # Only the type: the cause's text may name hosts and users (the runner redacts too).
        return ProbeError(reason, f"bootstrap broker: {type(cause).__name__}")


def _replicate(failed: Check, names: Sequence[str]) -> list[Check]:
    """Report one failed step as each of the checks it prevented."""
    return [dataclasses.replace(failed, name=name) for name in names]
