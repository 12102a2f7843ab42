"""Lag of the consumer groups operators name, read the way kafka_exporter and Burrow read it.

Read-only: the group's committed offsets come from its coordinator through the admin API
(``ListConsumerGroups`` for patterns, ``DescribeGroups`` for state and members,
``OffsetFetch`` for the offsets), end offsets and record timestamps through the probe's
group-less consumer. Nothing here joins a group or commits, so the pipeline's own consumers
keep their partitions and their messages; a group with no live member is read the same way.

One check per configured entry, named ``group_lag:<entry>`` (``group_lag:orders``,
``group_lag:/ingest-.*/``), so the set of checks is fixed by the configuration even while a
pattern matches nothing. Its status is the worst of its groups: the age of the oldest
unconsumed record (see :mod:`exporter.probes._kafka_lag`) against the entry's ``warn``/``down``
seconds; a named group the cluster does not know, or one without a committed offset on a
readable partition, is ``unknown``/``missing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.structs import TopicPartition

from exporter._kafka_settings import KafkaLagSettings, LagGroup
from exporter.probes._kafka_lag import LagReader, PartitionLag, judge_age, lag_measurements
from exporter.probes.base import Check, Measurement, Status
from exporter.reasons import Reason, classify

__all__ = ["GROUP_STATES", "GroupLag", "GroupSnapshot", "check_name", "led_partitions"]

#: The group states Kafka reports (``kafka-consumer-groups --describe --state``), plus one
#: for anything newer; ``ingest_kafka_consumer_group_state`` has one series for each.
GROUP_STATES = ("Stable", "Empty", "PreparingRebalance", "CompletingRebalance", "Dead", "Unknown")

# At most this many groups are spelled out in a check's detail (a pattern may match many).
_DETAIL_GROUPS = 5


def check_name(entry: LagGroup) -> str:
    """Return the check that reports ``entry``: ``group_lag:`` and the entry as written."""
    return f"group_lag:{entry.label}"


def led_partitions(described: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Return, per readable topic of a describe-topics reply, its partitions with a leader."""
    return {
        str(entry["topic"]): sorted(
            int(p["partition"]) for p in entry["partitions"] if int(p["leader"]) >= 0
        )
        for entry in described
        if not entry["error_code"]
    }


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """What the coordinator says about one group: state, members, committed offsets."""

    name: str
    state: str = "Unknown"
    members: int = 0
    committed: Mapping[TopicPartition, int] = field(default_factory=dict)
    #: Set when the broker refused to describe this group (the others are still read).
    reason: Reason | None = None
    detail: str = ""


class GroupLag:
    """Find the configured groups, then judge each entry's lag; remembers ages per group."""

    def __init__(self, settings: KafkaLagSettings, *, answered: Collection[Reason]) -> None:
        self.settings = settings
        #: The check names this reader reports, one per configured entry, in order.
        self.check_names = tuple(check_name(entry) for entry in settings.groups)
        self._answered = frozenset(answered)
        self._readers: dict[str, LagReader] = {}

    async def discover(self, admin: AIOKafkaAdminClient) -> dict[str, list[GroupSnapshot]]:
        """Return each entry's groups (by check name) with their coordinator's view.

        Raises:
            Exception: the cluster could not be asked (the caller turns it into checks). A
                broker that answers "no" for one group only marks that group.
        """
        entries = self.settings.groups
        wanted = [entry.name for entry in entries if entry.name is not None]
        if any(entry.match is not None for entry in entries):
            listed = sorted({str(reply[0]) for reply in await admin.list_consumer_groups()})
            wanted += [g for g in listed if any(e.selects(g) for e in entries if e.match)]
        names = list(dict.fromkeys(wanted))
        snapshots = await asyncio.gather(*(self._snapshot(admin, name) for name in names))
        by_name = dict(zip(names, snapshots, strict=True))
        return {
            check_name(entry): [by_name[name] for name in names if entry.selects(name)]
            for entry in entries
        }

    async def _snapshot(self, admin: AIOKafkaAdminClient, group: str) -> GroupSnapshot:
        try:
            described = await _describe(admin, group)
            offsets = await admin.list_consumer_group_offsets(group)
        except Exception as exc:
            reason = classify(exc)
            if reason not in self._answered:
                raise
            return GroupSnapshot(group, reason=reason, detail=f"{type(exc).__name__}")
        state = str(described["state"])
        return GroupSnapshot(
            group,
            state if state in GROUP_STATES else "Unknown",
            len(described["members"]),
            {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0},
        )

    @staticmethod
    def partitions(
        found: Mapping[str, Sequence[GroupSnapshot]], led: Mapping[str, Sequence[int]]
    ) -> set[TopicPartition]:
        """Return the committed partitions of every found group that can be read now."""
        return {
            tp
            for groups in found.values()
            for group in groups
            for tp in group.committed
            if tp.partition in led.get(tp.topic, ())
        }

    async def checks(
        self,
        consumer: AIOKafkaConsumer,
        found: Mapping[str, Sequence[GroupSnapshot]],
        led: Mapping[str, Sequence[int]],
        deadline: float,
    ) -> list[Check]:
        """Return one check per configured entry; ``deadline`` is on the event loop's clock."""
        readable = sorted(self.partitions(found, led))
        end = await consumer.end_offsets(readable) if readable else {}
        present = {group.name for groups in found.values() for group in groups}
        self._readers = {name: r for name, r in self._readers.items() if name in present}
        checks = []
        for entry in self.settings.groups:
            name = check_name(entry)
            judged = [
                await self._judge(consumer, group, end, entry, deadline) for group in found[name]
            ]
            checks.append(_entry_check(name, entry, judged))
        return checks

    async def _judge(
        self,
        consumer: AIOKafkaConsumer,
        group: GroupSnapshot,
        end: Mapping[TopicPartition, int],
        entry: LagGroup,
        deadline: float,
    ) -> tuple[Status, Reason | None, str, list[Measurement]]:
        label = (("group", group.name),)
        measurements = [
            Measurement("ingest_kafka_consumer_group_members", float(group.members), label),
            *(
                Measurement(
                    "ingest_kafka_consumer_group_state",
                    1.0 if state == group.state else 0.0,
                    (*label, ("state", state)),
                )
                for state in GROUP_STATES
            ),
        ]
        if group.reason is not None:
            return Status.UNKNOWN, group.reason, f"{group.name}: {group.detail}", []
        where = f"{group.name} ({group.state}, {group.members} member(s))"
        lags = [
            PartitionLag(tp, offset, end[tp], committed=True)
            for tp, offset in sorted(group.committed.items())
            if tp in end
        ]
        if not lags:
            missing = "not found" if group.state == "Dead" else "no committed offset to read"
            return Status.UNKNOWN, Reason.MISSING, f"{where}: {missing}", measurements
        reader = self._readers.setdefault(group.name, LagReader())
        ages = await reader.ages(consumer, lags, deadline)
        topics = sorted({lag.partition.topic for lag in lags})
        gauges, oldest, unknown = lag_measurements(group.name, topics, lags, ages)
        total = sum(lag.messages for lag in lags)
        detail = f"{where}: {total} message(s) behind on {len(lags)} partition(s)"
        if total:
            detail += f", oldest unconsumed {oldest:.1f}s old"
        if unknown:
            detail += f", age unknown on {unknown} partition(s)"
        status, reason = judge_age(oldest, self.settings.thresholds(entry))
        return status, reason, detail, measurements + gauges


async def _describe(admin: AIOKafkaAdminClient, group: str) -> dict[str, Any]:
    """Return the coordinator's description of ``group``; raise its error code, if any."""
    # One group per request: aiokafka 0.14 misreads a reply describing several (measured
    # on Kafka 4.1: a buffer underrun, then the connection is closed).
    replies = await admin.describe_consumer_groups([group])
    described: dict[str, Any] = replies[0].to_object()["groups"][0]
    if described["error_code"]:
        raise for_code(int(described["error_code"]))()
    return described


def _entry_check(
    name: str,
    entry: LagGroup,
    judged: Sequence[tuple[Status, Reason | None, str, list[Measurement]]],
) -> Check:
    if not judged:
        what = "group not found" if entry.name is not None else "no group matches"
        return Check(name, Status.UNKNOWN, Reason.MISSING, what)
    order = list(Status)
    worst = max(judged, key=lambda item: order.index(item[0]))
    # The worst groups first: they explain the status.
    ranked = sorted(judged, key=lambda item: -order.index(item[0]))
    details = [item[2] for item in ranked[:_DETAIL_GROUPS]]
    if len(ranked) > _DETAIL_GROUPS:
        details.append(f"{len(ranked) - _DETAIL_GROUPS} more group(s)")
    measurements = tuple(m for item in judged for m in item[3])
    return Check(name, worst[0], worst[1], "; ".join(details), measurements)
